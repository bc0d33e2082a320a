//! The generic endpoint end to end: `CrmEvent`s in JSON signed with `X-Crm-Sync-Signature`, the
//! owner's name and email taken from the event itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::connectors;

use connectors::{
    crm_events, crm_sync_signature, now_millis, post, setup, start_pipeline, wait_for_activity,
};
use crm_sync_e2e::topic_message_count;
use crm_sync_proto::v1::CrmKind;
use crm_sync_store::credentials::IntegrationSecrets;
use serde_json::json;

const SECRET: &str = "generic-signing-secret-e2e";

fn secrets() -> IntegrationSecrets {
    IntegrationSecrets {
        webhook_secret: Some(SECRET.into()),
        ..IntegrationSecrets::default()
    }
}

fn workflow() -> serde_json::Value {
    json!({
        "name": "Paid invoices", "object_type": "invoice", "triggers": ["created"],
        "conditions": {"all": [{"field": "status", "op": "eq", "value": "paid"}]},
        "user_field": "owner", "value_field": "total", "activity_type": "invoice_paid"
    })
}

fn invoice(delivery: &str, record: &str) -> serde_json::Value {
    json!({
        "eventId": delivery, "objectType": "invoice", "recordId": record, "changeType": "CHANGE_TYPE_CREATED",
        "occurredAt": "2026-11-20T15:04:05Z",
        "fields": {"status": {"text": "paid"}, "total": {"number": "99.50"}},
        "owner": {"crmUserId": "u-1", "name": "Ada Lovelace", "email": "ada@example.com"}
    })
}

async fn send(url: &str, body: &str, unix: i64) -> connectors::Answer {
    let signature = crm_sync_signature(SECRET, unix, body);
    post(
        url,
        &[
            ("content-type", "application/json"),
            ("x-crm-sync-signature", &signature),
        ],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_event_becomes_an_activity_of_the_user_it_names() {
    let s = setup(
        "connectors-generic",
        "generic",
        "erp-1",
        secrets(),
        None,
        workflow(),
    )
    .await;
    let p = start_pipeline(&s.env, &[]).await;
    let url = p
        .ingest
        .url(&format!("/v1/integrations/{}/events", s.integration_id));
    // A sender may name the request rather than each event: two invoices sharing a delivery id
    // are still two events.
    let body = json!([
        invoice("erp-delivery-1", "INV-7"),
        invoice("erp-delivery-1", "INV-8")
    ])
    .to_string();
    let answer = send(&url, &body, now_millis() / 1000).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let activity = wait_for_activity(&s.env, s.integration_id, "INV-7", "recorded").await;
    assert_eq!(activity.value, "99.50");
    assert_eq!(activity.display_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(activity.email.as_deref(), Some("ada@example.com"));
    wait_for_activity(&s.env, s.integration_id, "INV-8", "recorded").await;
    let events = crm_events(&s.env).await;
    assert_ne!(events[0].event_id, events[1].event_id);
    let event = &events[0];
    assert_eq!(event.crm, CrmKind::Generic as i32);
    assert_eq!(event.source_delivery_id, "erp-delivery-1");
    assert_eq!(event.crm_account_id, "erp-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_stale_or_partly_invalid_requests_publish_nothing() {
    let s = setup(
        "connectors-generic-refused",
        "generic",
        "erp-1",
        secrets(),
        None,
        workflow(),
    )
    .await;
    let ingest = s
        .env
        .start_service("ingest", "ingest", &connectors::SERVICE_ENV)
        .await;
    let url = ingest.url(&format!("/v1/integrations/{}/events", s.integration_id));
    let now = now_millis() / 1000;
    let body = json!(invoice("d-1", "INV-1")).to_string();

    let answer = post(&url, &[("content-type", "application/json")], body.clone()).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );
    let forged = crm_sync_signature("not-the-secret", now, &body);
    let answer = post(
        &url,
        &[
            ("content-type", "application/json"),
            ("x-crm-sync-signature", &forged),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );
    let answer = send(&url, &body, now - 600).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (401, "unauthorized")
    );

    // Published whole or not at all: the second event names another integration.
    let mut other = invoice("d-3", "INV-3");
    other["integrationId"] = json!(uuid::Uuid::new_v4().to_string());
    let batch = json!([invoice("d-2", "INV-2"), other]).to_string();
    let answer = send(&url, &batch, now).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (400, "malformed_message")
    );
    assert!(
        answer.message().starts_with("event 2: integrationId"),
        "{}",
        answer.body
    );
    let mut foreign = invoice("d-4", "INV-4");
    foreign["crmAccountId"] = json!("erp-2");
    let answer = send(&url, &foreign.to_string(), now).await;
    assert_eq!(
        (answer.status, answer.error().as_str()),
        (403, "foreign_account")
    );
    assert_eq!(topic_message_count(&s.env.topics.events), 0);

    let answer = send(&url, &body, now).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(topic_message_count(&s.env.topics.events), 1);
}
