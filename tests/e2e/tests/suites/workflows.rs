//! The workflow engine end to end, on real Kafka and PostgreSQL with the services as processes:
//! a win records an activity, moving the stage back or deleting the record retracts it, winning
//! again re-activates it; two workflows on one object make two activities; "changed to" uses the
//! previous values the CRM sends; a workflow deactivated (or activated) while events flow takes
//! effect in every evaluator replica within one second; an evaluator killed with SIGKILL
//! mid-stream leaves no duplicate and no missing outcome.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod live;
mod matching;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_sync_e2e::app::{App, AppOptions, owns_partitions, spawn_app};
use crm_sync_e2e::salesforce::{Notification, outbound_message};
use crm_sync_e2e::{
    Service, Tenant, TestEnv, eventually, metric, post_outbound_message, producer, read_topic,
    send_events,
};
use crm_sync_proto::v1::{
    ActivityChanged, ActivityState, ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue,
    OutcomeKind, WorkflowOutcome, field_value,
};
use crm_sync_proto::{Message, Timestamp};
use crm_sync_store::{tenants, views};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(60);

/// A Salesforce Opportunity notification modified at `modified` (so later steps are newer).
fn opportunity<'a>(
    notification: &'a str,
    record: &'a str,
    stage: &'a str,
    amount: &'a str,
    modified: &'a str,
) -> Notification<'a> {
    Notification {
        id: notification,
        object: "Opportunity",
        fields: vec![
            ("Id", record),
            ("Amount", amount),
            ("CloseDate", "2026-11-20"),
            ("CreatedDate", "2026-11-01T09:00:00.000Z"),
            ("LastModifiedDate", modified),
            ("Name", "Acme - 200 licenses"),
            ("OwnerId", "005OWNER0000001"),
            ("StageName", stage),
        ],
    }
}

async fn post(ingest: &Service, tenant: &Tenant, n: Notification<'_>) {
    let xml = outbound_message(&tenant.organization_id, &[n]);
    let (status, body) = post_outbound_message(ingest, tenant, xml).await;
    assert_eq!(status, 200, "ingest refused the message: {body}");
}

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(field_value::Kind::Text(s.to_owned())),
    }
}

/// A `CrmEvent` as a connector that sends previous values (or deletes) would write it.
fn event(
    tenant: &Tenant,
    record: &str,
    change: ChangeType,
    fields: &[(&str, &str)],
    previous: &[(&str, &str)],
    at_secs: i64,
) -> CrmEvent {
    let owner = fields
        .iter()
        .find(|(k, _)| *k == "OwnerId")
        .map(|(_, v)| CrmUser {
            crm_user_id: v.to_string(),
            ..Default::default()
        });
    let mut e = CrmEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        integration_id: tenant.integration_id.to_string(),
        object_type: "Opportunity".into(),
        record_id: record.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
        previous_fields: previous
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
        owner,
        occurred_at: Some(Timestamp {
            seconds: at_secs,
            nanos: 0,
        }),
        received_at: Some(Timestamp {
            seconds: at_secs,
            nanos: 0,
        }),
        crm_account_id: tenant.organization_id.clone(),
        ..Default::default()
    };
    e.set_change_type(change);
    e.set_crm(CrmKind::Generic);
    e
}

async fn outcomes(env: &TestEnv) -> Vec<WorkflowOutcome> {
    read_topic(&env.topics.matches)
        .await
        .iter()
        .map(|r| WorkflowOutcome::decode(r.payload.as_slice()).unwrap())
        .collect()
}

async fn changes(env: &TestEnv) -> Vec<ActivityChanged> {
    read_topic(&env.topics.activities)
        .await
        .iter()
        .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
        .collect()
}

async fn activity_state(env: &TestEnv, tenant: &Tenant, record: &str, state: &str) {
    eventually(&format!("activity of {record} {state}"), WAIT, || async {
        views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .iter()
            .any(|a| a.record_id == record && a.state == state)
            .then_some(())
    })
    .await;
}

/// The pipeline, its consumers owning partitions.
/// Adds an active workflow (`spec`, as the API takes it) to the tenant's integration; its id.
async fn add_workflow(env: &TestEnv, tenant: &Tenant, spec: serde_json::Value) -> uuid::Uuid {
    crm_sync_e2e::upsert_workflow(
        &env.pool,
        tenant.company_id,
        tenant.integration_id,
        None,
        spec,
        true,
    )
    .await
}

async fn pipeline(env: &TestEnv) -> App<'_> {
    let options = AppOptions {
        wait_for_partitions: true,
        ..AppOptions::default()
    };
    spawn_app(env, options).await
}
