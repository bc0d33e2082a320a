//! Salesforce Change Data Capture events relayed to ingest, end to end: creates become
//! activities of users named through `sobjects/User` (OAuth 2.0 client credentials), deletes
//! (which name no owner) retract the remembered owner's activity; a `User` change event saying
//! the user is no longer active deactivates their account.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::connectors;

use std::collections::BTreeSet;
use std::time::Duration;

use connectors::user_events::{
    account_on_a_team, expect_deactivated_by_the_crm, on_leaderboard, start_pipeline_directory_idle,
};
use connectors::{
    FakeCrm, count, crm_events, post, setup, start_pipeline, users_announced, wait_for_activity,
};
use crm_sync_e2e::{eventually, topic_message_count};
use crm_sync_proto::v1::ChangeType;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets, OAuthCredentials};
use serde_json::json;

const ORG: &str = "00D5g000004ABCDEAA";
const TOKEN: &str = "cdc-relay-token-e2e";
const OWNER: &str = "0055g00000AbCdEAAZ";

fn secrets(api_base: &str) -> IntegrationSecrets {
    IntegrationSecrets {
        api: Some(ApiCredentials {
            base_url: Some(api_base.into()),
            access_token: None,
            oauth: Some(OAuthCredentials {
                client_id: "3MVG9-e2e".into(),
                client_secret: "sf-consumer-secret-e2e".into(),
                refresh_token: None,
                token_url: None,
                scope: None,
                tenant_id: None,
            }),
        }),
        ..IntegrationSecrets::default()
    }
}

fn workflow() -> serde_json::Value {
    json!({
        "name": "Won opportunities", "object_type": "Opportunity", "triggers": ["created", "updated"],
        "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
        "user_field": "OwnerId", "value_field": "Amount", "date_field": "CloseDate",
        "activity_type": "deal_won"
    })
}

/// A change event as the Streaming API (CometD) delivers it.
fn cometd(
    change: &str,
    transaction: &str,
    records: &[&str],
    fields: serde_json::Value,
) -> serde_json::Value {
    let mut payload = json!({
        "ChangeEventHeader": {
            "entityName": "Opportunity", "recordIds": records, "changeType": change,
            "changeOrigin": "com/salesforce/api/rest/62.0;client=e2e",
            "transactionKey": transaction, "sequenceNumber": 1,
            "commitTimestamp": 1_795_187_045_000_u64, "commitNumber": 10_716_283_339_728_u64,
            "commitUser": OWNER
        }
    });
    for (k, v) in fields.as_object().unwrap() {
        payload[k] = v.clone();
    }
    json!({"data": {"schema": "IeRuaY6cbI_HsV8Rv1Mc5g", "payload": payload, "event": {"replayId": 42}}, "channel": "/data/OpportunityChangeEvent"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_opportunity_becomes_an_activity_of_a_named_user_and_its_deletion_retracts_it() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Jane Doe", "jane.doe@example.com");
    let s = setup(
        "connectors-sf-cdc",
        "salesforce",
        ORG,
        secrets(&crm.base_url),
        Some(TOKEN),
        workflow(),
    )
    .await;
    let p = start_pipeline(&s.env, &[]).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/change-events?token={TOKEN}",
        s.integration_id
    ));
    let json_type = ("content-type", "application/json");

    let created = cometd(
        "CREATE",
        "0002343d-9d90-e395-ed20-cf416ba652ad",
        &["0065g00000XyZ12AAB"],
        json!({"Name": "Acme - 200 licenses", "StageName": "Closed Won", "Amount": 1250.5,
               "CloseDate": "2026-11-20", "OwnerId": OWNER, "CreatedDate": "2026-11-20T15:04:05Z"}),
    )
    .to_string();
    let answer = post(&url, &[json_type], created.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["accepted"], 1);

    let activity =
        wait_for_activity(&s.env, s.integration_id, "0065g00000XyZ12AAB", "recorded").await;
    assert_eq!(activity.value, "1250.5");
    assert_eq!(activity.crm_user_id, OWNER);
    assert_eq!(activity.display_name.as_deref(), Some("Jane Doe"));
    assert_eq!(activity.email.as_deref(), Some("jane.doe@example.com"));
    assert_eq!(crm.tokens(), 1, "one OAuth token for the lookup");
    // Announced after the commit: waited for.
    let announced = eventually("the account announced", Duration::from_secs(20), || async {
        let users = users_announced(&s.env).await;
        (!users.is_empty()).then_some(users)
    })
    .await;
    assert_eq!(announced.len(), 1);
    assert_eq!(announced[0].display_name, "Jane Doe");
    assert_eq!(announced[0].email, "jane.doe@example.com");

    // The relay replays from a stored replay id: the same change, the same event id.
    let answer = post(&url, &[json_type], created).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    // Deletes carry no fields, so no owner: the remembered one's activity is retracted.
    let deleted = cometd(
        "DELETE",
        "0002343d-9d90-e395-ed20-cf416ba652ae",
        &["0065g00000XyZ12AAB"],
        json!({}),
    )
    .to_string();
    let answer = post(&url, &[json_type], deleted).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let retracted =
        wait_for_activity(&s.env, s.integration_id, "0065g00000XyZ12AAB", "retracted").await;
    assert_eq!(retracted.crm_user_id, OWNER);

    let events = crm_events(&s.env).await;
    assert_eq!(events.len(), 3);
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 2, "the replayed create kept its id");
    let delete = events
        .iter()
        .find(|e| e.change_type == ChangeType::Deleted as i32)
        .unwrap();
    assert!(delete.fields.is_empty());
    assert_eq!(delete.owner, None);
    assert_eq!(crm.lookups(), 1, "the user was looked up once");
    assert_eq!(count(&s.env, "SELECT count(*) FROM users").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_several_records_bearer_auth_and_refusals() {
    let s = setup(
        "connectors-sf-cdc-batch",
        "salesforce",
        ORG,
        IntegrationSecrets::default(),
        Some(TOKEN),
        workflow(),
    )
    .await;
    let ingest = s
        .env
        .start_service("ingest", "ingest", &connectors::SERVICE_ENV)
        .await;
    let url = ingest.url(&format!(
        "/v1/integrations/{}/salesforce/change-events",
        s.integration_id
    ));
    let json_type = ("content-type", "application/json");
    let bearer = format!("Bearer {TOKEN}");

    // One update applied to two records in one transaction, and a gap event; the Pub/Sub API
    // form (the decoded payload, unchanged fields null, nulled ones named).
    let batch = json!([
        {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006A00000000001AAA", "006A00000000002AAA"],
          "changeType": "UPDATE", "transactionKey": "t-1", "sequenceNumber": 3, "commitTimestamp": 1_795_187_045_000_u64,
          "commitUser": OWNER, "nulledFields": ["NextStep"], "changedFields": ["StageName", "NextStep"]},
         "StageName": "Closed Won", "NextStep": null, "Amount": null},
        {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["006A00000000003AAA"], "changeType": "GAP_UPDATE",
          "transactionKey": "t-2", "sequenceNumber": 1, "commitTimestamp": 1_795_187_046_000_u64}},
        {"ChangeEventHeader": {"entityName": "Task", "recordIds": [], "changeType": "GAP_OVERFLOW",
          "transactionKey": "t-3", "sequenceNumber": 1, "commitTimestamp": 1_795_187_047_000_u64}}
    ])
    .to_string();
    let answer = post(&url, &[json_type, ("authorization", &bearer)], batch).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["accepted"], 3);
    let events = crm_events(&s.env).await;
    let mut records: Vec<(&str, i32, &str)> = events
        .iter()
        .map(|e| {
            (
                e.record_id.as_str(),
                e.change_type,
                e.source_change_type.as_str(),
            )
        })
        .collect();
    records.sort();
    assert_eq!(
        records,
        [
            ("006A00000000001AAA", ChangeType::Updated as i32, "UPDATE"),
            ("006A00000000002AAA", ChangeType::Updated as i32, "UPDATE"),
            (
                "006A00000000003AAA",
                ChangeType::Updated as i32,
                "GAP_UPDATE"
            ),
        ]
    );
    let update = events
        .iter()
        .find(|e| e.record_id == "006A00000000001AAA")
        .unwrap();
    assert_eq!(
        update.fields["StageName"].kind,
        Some(Kind::Text("Closed Won".into()))
    );
    assert_eq!(update.fields["NextStep"].kind, Some(Kind::NullValue(true)));
    assert!(
        !update.fields.contains_key("Amount"),
        "unchanged, so not sent"
    );

    let one = cometd(
        "CREATE",
        "t-9",
        &["006A00000000009AAA"],
        json!({"StageName": "Prospecting"}),
    )
    .to_string();
    let answer = post(&url, &[json_type], one.clone()).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );
    let answer = post(
        &url,
        &[json_type, ("authorization", "Bearer wrong")],
        one.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );
    let answer = post(
        &format!("{url}?token={TOKEN}"),
        &[json_type],
        r#"{"data": {"payload": {"Name": "x"}}}"#,
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );
    assert_eq!(answer.message(), "change event 1: has no ChangeEventHeader");
    let answer = post(
        &format!("{url}?token={TOKEN}"),
        &[("content-type", "text/xml")],
        one,
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (415, "unsupported_media_type")
    );
    assert_eq!(topic_message_count(&s.env.topics.events), 3);

    let log_file = ingest.log_file.clone();
    ingest.kill().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(!log.contains(TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_change_event_saying_the_user_is_inactive_deactivates_their_account_at_once() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Jane Doe", "jane.doe@example.com");
    let s = setup(
        "connectors-sf-cdc-user",
        "salesforce",
        ORG,
        secrets(&crm.base_url),
        Some(TOKEN),
        workflow(),
    )
    .await;
    let p = start_pipeline_directory_idle(&s.env).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/salesforce/change-events?token={TOKEN}",
        s.integration_id
    ));
    let json_type = ("content-type", "application/json");
    let created = cometd(
        "CREATE",
        "1002343d-9d90-e395-ed20-cf416ba652ad",
        &["0065g00000UsR9AAAB"],
        json!({"Name": "Acme", "StageName": "Closed Won", "Amount": 700, "CloseDate": "2026-11-20",
               "OwnerId": OWNER, "CreatedDate": "2026-11-20T15:04:05Z"}),
    )
    .to_string();
    assert_eq!(post(&url, &[json_type], created).await.status, 200);
    let user_id = account_on_a_team(&s.env, s.company_id, s.integration_id, OWNER).await;
    assert_eq!(on_leaderboard(&s.env, s.company_id).await, [user_id]);

    // The Pub/Sub form of a UserChangeEvent: an admin deactivated the user just now.
    let deactivated = json!({
        "ChangeEventHeader": {
            "entityName": "User", "recordIds": [OWNER], "changeType": "UPDATE",
            "changeOrigin": "com/salesforce/api/soap/62.0;client=SfdcInternalAPI/",
            "transactionKey": "2002343d-9d90-e395-ed20-cf416ba652ad", "sequenceNumber": 1,
            "commitTimestamp": chrono::Utc::now().timestamp_millis(), "commitNumber": 10_716_283_339_729_u64,
            "commitUser": "0055g00000AdMiNAAZ", "changedFields": ["IsActive", "LastModifiedDate"]
        },
        "IsActive": false, "LastModifiedDate": chrono::Utc::now().to_rfc3339()
    })
    .to_string();
    let answer = post(&url, &[json_type], deactivated).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    expect_deactivated_by_the_crm(&s.env, s.company_id, s.integration_id, OWNER).await;
    assert!(
        crm_events(&s.env)
            .await
            .iter()
            .any(|e| e.object_type == "User" && e.record_id == OWNER)
    );
}
