//! HubSpot webhook batches end to end: signature v3, the owner remembered from
//! `hubspot_owner_id` changes, the account named through the owners API, deletions retracting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::connectors;

use std::collections::BTreeSet;

use connectors::{
    FakeCrm, count, crm_events, hubspot_signature, now_millis, post, setup, start_pipeline,
    wait_for_activity,
};
use crm_sync_e2e::topic_message_count;
use crm_sync_proto::v1::ChangeType;
use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets};
use serde_json::json;

const PORTAL: &str = "62515";
const SECRET: &str = "hs-client-secret-e2e";
const OWNER: &str = "41629779";

fn secrets(api_base: &str) -> IntegrationSecrets {
    IntegrationSecrets {
        webhook_secret: Some(SECRET.into()),
        api: Some(ApiCredentials {
            base_url: Some(api_base.into()),
            access_token: Some("pat-na1-e2e".into()),
            oauth: None,
        }),
        ..IntegrationSecrets::default()
    }
}

fn won_deals_workflow() -> serde_json::Value {
    json!({
        "name": "Won deals", "object_type": "deal", "triggers": ["updated"],
        "conditions": {"all": [{"field": "dealstage", "op": "eq", "value": "closedwon"}]},
        "user_field": "hubspot_owner_id", "activity_type": "deal_won"
    })
}

/// A batch as HubSpot sends it, signed for `url` now.
fn signed(url: &str, body: &str) -> (String, String) {
    let timestamp = now_millis().to_string();
    let signature = hubspot_signature(SECRET, url, body, &timestamp);
    (timestamp, signature)
}

async fn send(url: &str, body: &str) -> connectors::Answer {
    let (timestamp, signature) = signed(url, body);
    post(
        url,
        &[
            ("content-type", "application/json"),
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &signature),
            ("x-hubspot-signature-version", "v3"),
        ],
        body,
    )
    .await
}

fn event(
    id: u64,
    kind: &str,
    object: u64,
    attempt: u32,
    extra: serde_json::Value,
) -> serde_json::Value {
    let mut e = json!({
        "eventId": id, "subscriptionId": 2456, "portalId": 62515, "appId": 1160452,
        "occurredAt": 1_795_187_045_000_u64 + id, "subscriptionType": kind,
        "attemptNumber": attempt, "objectId": object, "changeSource": "CRM_UI"
    });
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_batch_becomes_the_owners_activity_named_through_the_owners_api_and_a_deletion_retracts_it()
 {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Mary Major", "mary.major@example.com");
    let s = setup(
        "connectors-hubspot",
        "hubspot",
        PORTAL,
        secrets(&crm.base_url),
        None,
        won_deals_workflow(),
    )
    .await;
    let p = start_pipeline(&s.env, &[]).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/hubspot/webhooks",
        s.integration_id
    ));

    // HubSpot names the owner only when `hubspot_owner_id` changes; the stage change that wins
    // the deal says nothing about it.
    let batch = |attempt| {
        json!([
            event(101, "deal.creation", 501, attempt, json!({})),
            event(
                102,
                "deal.propertyChange",
                501,
                attempt,
                json!({"propertyName": "hubspot_owner_id", "propertyValue": OWNER})
            ),
            event(
                103,
                "deal.propertyChange",
                501,
                attempt,
                json!({"propertyName": "dealstage", "propertyValue": "closedwon"})
            ),
        ])
        .to_string()
    };
    let answer = send(&url, &batch(0)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["accepted"], 3);
    assert!(answer.headers.contains_key("x-request-id"));

    let activity = wait_for_activity(&s.env, s.integration_id, "501", "recorded").await;
    assert_eq!(activity.crm_user_id, OWNER);
    assert_eq!(activity.display_name.as_deref(), Some("Mary Major"));
    assert_eq!(activity.email.as_deref(), Some("mary.major@example.com"));
    assert_eq!(activity.user_status.as_deref(), Some("pending"));

    // HubSpot retries a batch it got no 2xx for: the same events carry the same ids.
    let answer = send(&url, &batch(1)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let events = crm_events(&s.env).await;
    assert_eq!(events.len(), 6);
    let ids: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "redelivered events keep their ids");
    let stage = events
        .iter()
        .find(|e| e.fields.contains_key("dealstage"))
        .unwrap();
    assert_eq!(stage.object_type, "deal");
    assert_eq!(stage.crm_account_id, PORTAL);
    assert_eq!(stage.change_type, ChangeType::Updated as i32);
    assert_eq!(
        stage.owner, None,
        "HubSpot does not say; the pipeline remembers it"
    );

    // A deletion names no owner either: the activity of the remembered owner is retracted.
    let deletion = json!([event(104, "deal.deletion", 501, 0, json!({}))]).to_string();
    let answer = send(&url, &deletion).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let retracted = wait_for_activity(&s.env, s.integration_id, "501", "retracted").await;
    assert_eq!(retracted.crm_user_id, OWNER);
    assert_eq!(count(&s.env, "SELECT count(*) FROM users").await, 1);

    let log = std::fs::read_to_string(&p.ingest.log_file).unwrap();
    assert!(
        !log.contains(SECRET) && !log.contains("pat-na1-e2e"),
        "secrets are never logged"
    );
    assert!(
        log.contains("\"request_id\""),
        "log lines carry the request id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_stale_foreign_or_malformed_batches_are_refused_and_publish_nothing() {
    let s = setup(
        "connectors-hubspot-refused",
        "hubspot",
        PORTAL,
        secrets("http://127.0.0.1:9"),
        None,
        won_deals_workflow(),
    )
    .await;
    let ingest = s
        .env
        .start_service(
            "ingest",
            "ingest",
            &[
                connectors::SERVICE_ENV[0],
                ("CRM_SYNC__INGEST__MAX_BODY_BYTES", "4096"),
            ],
        )
        .await;
    let url = ingest.url(&format!(
        "/v1/integrations/{}/hubspot/webhooks",
        s.integration_id
    ));
    let body = json!([event(
        1,
        "deal.propertyChange",
        7,
        0,
        json!({"propertyName": "dealstage", "propertyValue": "closedwon"})
    )])
    .to_string();
    let (timestamp, signature) = signed(&url, &body);
    let json_type = ("content-type", "application/json");

    let answer = post(
        &url,
        &[json_type, ("x-hubspot-request-timestamp", &timestamp)],
        body.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );

    let wrong = hubspot_signature("another-secret", &url, &body, &timestamp);
    let answer = post(
        &url,
        &[
            json_type,
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &wrong),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );

    let altered = body.replace("closedwon", "closedlost");
    let answer = post(
        &url,
        &[
            json_type,
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &signature),
        ],
        altered,
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );

    // Signed correctly, but six minutes ago: a replay.
    let old = (now_millis() - 6 * 60 * 1000).to_string();
    let old_signature = hubspot_signature(SECRET, &url, &body, &old);
    let answer = post(
        &url,
        &[
            json_type,
            ("x-hubspot-request-timestamp", &old),
            ("x-hubspot-signature-v3", &old_signature),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );

    let foreign = body.replace("62515", "99999");
    let answer = send(&url, &foreign).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (403, "foreign_account")
    );

    // One bad event refuses the whole batch: nothing of it is published.
    let half_bad = json!([
        event(2, "deal.propertyChange", 7, 0, json!({"propertyName": "dealstage", "propertyValue": "closedwon"})),
        {"eventId": 3, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1, "subscriptionType": "deal.propertyChange", "propertyName": "dealstage"}
    ])
    .to_string();
    let answer = send(&url, &half_bad).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );
    assert_eq!(
        answer.message(),
        "event 2: objectId is missing or not an id"
    );

    let answer = send(&url, "[{\"eventId\": ").await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );

    let (timestamp, signature) = signed(&url, &body);
    let answer = post(
        &url,
        &[
            ("content-type", "text/plain"),
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &signature),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (415, "unsupported_media_type")
    );

    let large = json!([event(
        5,
        "deal.propertyChange",
        7,
        0,
        json!({"propertyName": "description", "propertyValue": "x".repeat(5000)})
    )])
    .to_string();
    let answer = send(&url, &large).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (413, "payload_too_large")
    );

    let other = ingest.url(&format!(
        "/v1/integrations/{}/hubspot/webhooks",
        uuid::Uuid::new_v4()
    ));
    let answer = send(&other, &body).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (404, "unknown_integration")
    );

    assert_eq!(topic_message_count(&s.env.topics.events), 0);
    let answer = send(&url, &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(topic_message_count(&s.env.topics.events), 1);

    let log_file = ingest.log_file.clone();
    ingest.kill().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(!log.contains(SECRET), "the client secret is never logged");
    assert!(log.contains("stale_timestamp") && log.contains("foreign_account"));
}

/// A merge expands to one event per merged id: a request may not expand past the limit of
/// events per request, nor carry values that cannot be stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_of_thousands_of_ids_or_unstorable_values_are_refused_naming_the_limit() {
    let s = setup(
        "connectors-hubspot-fanout",
        "hubspot",
        PORTAL,
        secrets("http://127.0.0.1:9"),
        None,
        won_deals_workflow(),
    )
    .await;
    let ingest = s
        .env
        .start_service("ingest", "ingest", &[connectors::SERVICE_ENV[0]])
        .await;
    let url = ingest.url(&format!(
        "/v1/integrations/{}/hubspot/webhooks",
        s.integration_id
    ));
    let merged: Vec<u64> = (1000..3000).collect();
    let merge = json!([event(
        9,
        "deal.merge",
        504,
        0,
        json!({"primaryObjectId": 504, "mergedObjectIds": merged, "newObjectId": 507})
    )])
    .to_string();
    let answer = send(&url, &merge).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (413, "too_many_events"),
        "{}",
        answer.body
    );
    assert!(
        answer.message().contains("ingest.max_events_per_request")
            && answer.message().contains("1000"),
        "{}",
        answer.body
    );

    let nul = json!([event(
        10,
        "deal.propertyChange",
        7,
        0,
        json!({"propertyName": "hubspot_owner_id", "propertyValue": "416\u{0}29779"})
    )])
    .to_string();
    let answer = send(&url, &nul).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "invalid_value"),
        "{}",
        answer.body
    );
    assert_eq!(topic_message_count(&s.env.topics.events), 0);

    let fine = json!([event(
        11,
        "deal.merge",
        504,
        0,
        json!({"primaryObjectId": 504, "mergedObjectIds": [505, 506], "newObjectId": 507})
    )])
    .to_string();
    let answer = send(&url, &fine).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}
