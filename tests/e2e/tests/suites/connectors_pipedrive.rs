//! Pipedrive webhooks v2 end to end: HTTP Basic per integration, a won deal becoming the
//! owner's activity, the account named through the users API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::connectors;

use base64::Engine as _;
use connectors::user_events::{
    account_on_a_team, crm_active, expect_deactivated_by_the_crm, on_leaderboard,
    start_pipeline_directory_idle,
};
use connectors::{FakeCrm, count, crm_events, post, setup, start_pipeline, wait_for_activity};
use crm_sync_e2e::topic_message_count;
use crm_sync_proto::v1::ChangeType;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_store::credentials::{ApiCredentials, BasicAuth, IntegrationSecrets};
use serde_json::json;

const COMPANY: &str = "12882925";
const OWNER: &str = "18487521";
const PASSWORD: &str = "pd-hook-password-e2e";

fn secrets(api_base: &str) -> IntegrationSecrets {
    IntegrationSecrets {
        webhook_basic_auth: Some(BasicAuth {
            username: "crm-sync".into(),
            password: PASSWORD.into(),
        }),
        api: Some(ApiCredentials {
            base_url: Some(api_base.into()),
            access_token: Some("pd-api-e2e".into()),
            oauth: None,
        }),
        ..IntegrationSecrets::default()
    }
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// A deal change as Pipedrive's webhooks v2 send it.
fn deal_change(event_id: &str, deal: u64, status: &str, company: &str) -> String {
    json!({
        "meta": {
            "action": "change", "entity": "deal", "entity_id": deal.to_string(), "id": event_id,
            "version": "2.0", "company_id": company, "user_id": OWNER, "correlation_id": "c0ffee",
            "webhook_id": "99", "webhook_owner_id": OWNER, "attempt": 1, "host": "acme.pipedrive.com",
            "timestamp": "2026-11-20T15:04:05.000Z", "type": "general", "is_bulk_edit": false,
            "change_source": "app", "permitted_user_ids": [OWNER]
        },
        "data": {
            "id": deal, "title": "Acme - 200 licenses", "value": 1250.5, "currency": "EUR", "status": status,
            "stage_id": 4, "pipeline_id": 1, "owner_id": OWNER.parse::<u64>().unwrap(), "person_id": 3, "org_id": 2,
            "add_time": "2026-11-01T09:00:00Z", "update_time": "2026-11-20T15:04:05Z",
            "won_time": "2026-11-20T15:04:05Z", "label_ids": [],
            "custom_fields": {"d4de1c1518b4531717c676029a45911c340390a6": {"type": "monetary", "value": 300, "currency": "EUR"}}
        },
        "previous": {"status": "open"}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_won_deal_becomes_the_owners_activity_named_through_the_users_api() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Pat Pipeline", "pat@example.com");
    let s = setup(
        "connectors-pipedrive",
        "pipedrive",
        COMPANY,
        secrets(&crm.base_url),
        None,
        won_deals(),
    )
    .await;
    let p = start_pipeline(&s.env, &[]).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/pipedrive/webhooks",
        s.integration_id
    ));
    let auth = basic("crm-sync", PASSWORD);
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];

    let answer = post(
        &url,
        &headers,
        deal_change("ec1b24d1-3bd8-4ef2-b4ec-5f0ad0b4bcd8", 1, "won", COMPANY),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let activity = wait_for_activity(&s.env, s.integration_id, "1", "recorded").await;
    assert_eq!(activity.value, "1250.5");
    assert_eq!(activity.crm_user_id, OWNER);
    assert_eq!(activity.display_name.as_deref(), Some("Pat Pipeline"));
    assert_eq!(activity.email.as_deref(), Some("pat@example.com"));

    let event = &crm_events(&s.env).await[0];
    assert_eq!(event.change_type, ChangeType::Updated as i32);
    assert_eq!(
        event.previous_fields["status"].kind,
        Some(Kind::Text("open".into()))
    );
    assert_eq!(
        event.fields["d4de1c1518b4531717c676029a45911c340390a6_currency"].kind,
        Some(Kind::Text("EUR".into()))
    );
    assert_eq!(
        event.source_delivery_id,
        "ec1b24d1-3bd8-4ef2-b4ec-5f0ad0b4bcd8"
    );

    // A merge: the merged-away deal is deleted (its meta names where it went).
    let merged = json!({
        "meta": {"action": "delete", "entity": "deal", "entity_id": "2", "id": "merge-1", "version": "2.0",
                 "company_id": COMPANY, "merged_to_id": "1", "timestamp": "2026-11-21T10:00:00Z"},
        "data": null, "previous": {"id": 2, "title": "Duplicate", "owner_id": 18487521}
    })
    .to_string();
    let answer = post(&url, &headers, merged).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let events = crm_events(&s.env).await;
    let delete = events.iter().find(|e| e.record_id == "2").unwrap();
    assert_eq!(delete.change_type, ChangeType::Deleted as i32);
    assert_eq!(delete.source_change_type, "merge");
    assert_eq!(delete.owner.as_ref().unwrap().crm_user_id, OWNER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_other_companies_and_v1_payloads_are_refused() {
    let s = setup(
        "connectors-pipedrive-refused",
        "pipedrive",
        COMPANY,
        secrets("http://127.0.0.1:9"),
        None,
        json!({"name": "Won deals", "object_type": "deal", "triggers": ["updated"], "user_field": "owner_id", "activity_type": "deal_won"}),
    )
    .await;
    let ingest = s
        .env
        .start_service("ingest", "ingest", &connectors::SERVICE_ENV)
        .await;
    let url = ingest.url(&format!(
        "/v1/integrations/{}/pipedrive/webhooks",
        s.integration_id
    ));
    let json_type = ("content-type", "application/json");
    let body = deal_change("e1", 1, "won", COMPANY);

    let answer = post(&url, &[json_type], body.clone()).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );
    assert!(answer.headers["www-authenticate"].starts_with("Basic realm="));
    let wrong = basic("crm-sync", "not-the-password");
    let answer = post(&url, &[json_type, ("authorization", &wrong)], body.clone()).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );

    let auth = basic("crm-sync", PASSWORD);
    let with = [json_type, ("authorization", auth.as_str())];
    let answer = post(&url, &with, deal_change("e2", 1, "won", "777")).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (403, "foreign_account")
    );
    // Leaving meta.company_id out does not skip the account check.
    let mut anonymous: serde_json::Value =
        serde_json::from_str(&deal_change("e3", 1, "won", COMPANY)).unwrap();
    anonymous["meta"]
        .as_object_mut()
        .unwrap()
        .remove("company_id");
    let answer = post(&url, &with, anonymous.to_string()).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );
    assert!(
        answer.message().contains("meta.company_id"),
        "{}",
        answer.body
    );
    let v1 = r#"{"v": 1, "matches_filters": {"current": []}, "meta": {"v": 1, "action": "updated", "object": "deal", "id": 1, "company_id": 12882925}, "current": {"id": 1}, "previous": {}, "event": "updated.deal", "retry": 0}"#;
    let answer = post(&url, &with, v1).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );
    assert!(answer.message().contains("version 2.0"), "{}", answer.body);
    assert_eq!(topic_message_count(&s.env.topics.events), 0);

    let log_file = ingest.log_file.clone();
    ingest.kill().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(!log.contains(PASSWORD) && !log.contains("not-the-password"));
}

/// A `user` change as Pipedrive's webhooks v2 send it when an admin deactivates a user.
fn user_change(event_id: &str, user: &str, active_flag: serde_json::Value) -> String {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    json!({
        "meta": {
            "action": "change", "entity": "user", "entity_id": user, "id": event_id, "version": "2.0",
            "company_id": COMPANY, "user_id": "1", "correlation_id": "c0ffee", "webhook_id": "100",
            "webhook_owner_id": "1", "attempt": 1, "host": "acme.pipedrive.com", "timestamp": now,
            "type": "general", "is_bulk_edit": false, "change_source": "app", "permitted_user_ids": ["1"]
        },
        "data": {
            "id": user.parse::<u64>().unwrap(), "name": "Pat Pipeline", "email": "pat@example.com",
            "active_flag": active_flag, "is_admin": 0, "role_id": 1, "modified": now
        },
        "previous": {"active_flag": true}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_webhook_saying_the_user_is_inactive_deactivates_their_account_at_once() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Pat Pipeline", "pat@example.com");
    let s = setup(
        "connectors-pipedrive-user",
        "pipedrive",
        COMPANY,
        secrets(&crm.base_url),
        None,
        won_deals(),
    )
    .await;
    let p = start_pipeline_directory_idle(&s.env).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/pipedrive/webhooks",
        s.integration_id
    ));
    let auth = basic("crm-sync", PASSWORD);
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let won = deal_change("6f1b24d1-3bd8-4ef2-b4ec-5f0ad0b4bcd8", 1, "won", COMPANY);
    assert_eq!(post(&url, &headers, won).await.status, 200);
    let user_id = account_on_a_team(&s.env, s.company_id, s.integration_id, OWNER).await;
    assert_eq!(on_leaderboard(&s.env, s.company_id).await, [user_id]);

    // `active_flag` that is no boolean: refused, naming the field, nothing published.
    let events = topic_message_count(&s.env.topics.events);
    let answer = post(&url, &headers, user_change("u-0", OWNER, json!("yes"))).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "invalid_value")
    );
    assert!(answer.message().contains("active_flag"), "{}", answer.body);
    assert_eq!(topic_message_count(&s.env.topics.events), events);

    // A user nobody's account belongs to: passed on, no identity made for them.
    let identities = count(&s.env, "SELECT count(*) FROM crm_identities").await;
    let answer = post(&url, &headers, user_change("u-1", "99999", json!(false))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        count(&s.env, "SELECT count(*) FROM crm_identities").await,
        identities
    );
    assert_eq!(crm_active(&s.env, s.integration_id, "99999").await, None);

    let answer = post(&url, &headers, user_change("u-2", OWNER, json!(false))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    expect_deactivated_by_the_crm(&s.env, s.company_id, s.integration_id, OWNER).await;
    assert!(
        crm_events(&s.env)
            .await
            .iter()
            .any(|e| e.object_type == "user" && e.record_id == OWNER)
    );
}

/// The workflow every test of this suite runs: won deals count their value.
fn won_deals() -> serde_json::Value {
    json!({
        "name": "Won deals", "object_type": "deal", "triggers": ["created", "updated"],
        "conditions": {"all": [{"field": "status", "op": "eq", "value": "won"}]},
        "user_field": "owner_id", "value_field": "value", "date_field": "won_time",
        "activity_type": "deal_won"
    })
}
