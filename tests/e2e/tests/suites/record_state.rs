//! Workflows judge whole records, not deltas: the evaluator keeps each record's state (a
//! compacted changelog) and judges the merged record. HubSpot property changes sent one at a
//! time add up to a won deal with its amount; Outbound Messages (no previous values) get
//! `changed_to`; updates of records that never matched write no outcome; an older event does not
//! move a record back; the state survives a SIGKILL with its local disk gone; fields a workflow
//! needs that a record never showed are asked for on the hydration topic, once per interval.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod batching;
mod changelog;
mod deletes;
mod durability;
mod forgetting;
mod gaps;
mod limits;
mod merging;
mod snapshots;
mod unreadable;

use crate::connectors;

use std::time::Duration;

use connectors::{FakeCrm, hubspot_signature, now_millis, post, setup, wait_for_activity};
use crm_sync_e2e::salesforce::{Notification, outbound_message};
use crm_sync_e2e::{
    Service, Tenant, TestEnv, eventually, metric, post_outbound_message, producer, read_topic,
    send_events, topic_message_count,
};
use crm_sync_proto::v1::{
    ChangeType, CrmEvent, CrmKind, FieldValue, HydrationRequest, RecordState, WorkflowOutcome,
    field_value,
};
use crm_sync_proto::{Message, Timestamp};
use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

// ---- HubSpot, through ingest -------------------------------------------------------------------

const PORTAL: &str = "62515";
const SECRET: &str = "hs-client-secret-state";
const OWNER: &str = "41629779";

async fn hubspot(url: &str, events: serde_json::Value) {
    let body = events.to_string();
    let timestamp = now_millis().to_string();
    let signature = hubspot_signature(SECRET, url, &body, &timestamp);
    let answer = post(
        url,
        &[
            ("content-type", "application/json"),
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &signature),
            ("x-hubspot-signature-version", "v3"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

fn property_change(id: u64, deal: u64, property: &str, value: &str) -> serde_json::Value {
    json!([{
        "eventId": id, "subscriptionId": 2456, "portalId": 62515, "appId": 1160452,
        "occurredAt": 1_795_187_045_000_u64 + id, "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0, "objectId": deal, "changeSource": "CRM_UI",
        "propertyName": property, "propertyValue": value
    }])
}

// ---- Salesforce Outbound Messages, through ingest ----------------------------------------------

fn opportunity<'a>(id: &'a str, stage: &'a str, modified: &'a str) -> Notification<'a> {
    Notification {
        id,
        object: "Opportunity",
        fields: vec![
            ("Id", "006STATE00000001AA"),
            ("Amount", "700"),
            ("CloseDate", "2026-11-20"),
            ("LastModifiedDate", modified),
            ("OwnerId", "005OWNER0000001AAA"),
            ("StageName", stage),
        ],
    }
}

async fn outbound(ingest: &Service, tenant: &Tenant, n: Notification<'_>) {
    let xml = outbound_message(&tenant.organization_id, &[n]);
    let (status, body) = post_outbound_message(ingest, tenant, xml).await;
    assert_eq!(status, 200, "{body}");
}

async fn outcomes(env: &TestEnv) -> Vec<WorkflowOutcome> {
    read_topic(&env.topics.matches)
        .await
        .iter()
        .map(|r| WorkflowOutcome::decode(r.payload.as_slice()).unwrap())
        .collect()
}

/// Waits until the evaluator has committed `n` events (each counted once, after its commit).
async fn evaluated(evaluator: &Service, n: f64) {
    eventually(&format!("{n} events evaluated"), WAIT, || async {
        (metric(evaluator, "crm_sync_evaluator_events_total", &[]).await >= n).then_some(())
    })
    .await;
}

// ---- Events written straight to the events topic ----------------------------------------------

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(field_value::Kind::Text(s.to_owned())),
    }
}

fn delta(
    tenant: &Tenant,
    crm: CrmKind,
    record: &str,
    fields: &[(&str, &str)],
    at_secs: i64,
) -> CrmEvent {
    let mut e = CrmEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        integration_id: tenant.integration_id.to_string(),
        object_type: "Opportunity".into(),
        record_id: record.into(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), text(v)))
            .collect(),
        occurred_at: Some(Timestamp {
            seconds: at_secs,
            nanos: 0,
        }),
        ..Default::default()
    };
    e.set_change_type(ChangeType::Updated);
    e.set_crm(crm);
    e
}

/// Writes Salesforce-shaped deltas of the tenant's records onto the events topic.
struct Feed<'a> {
    kafka: FutureProducer,
    env: &'a TestEnv,
    tenant: &'a Tenant,
}

impl Feed<'_> {
    fn new<'a>(env: &'a TestEnv, tenant: &'a Tenant) -> Feed<'a> {
        Feed {
            kafka: producer(env),
            env,
            tenant,
        }
    }

    async fn delta(&self, crm: CrmKind, record: &str, fields: &[(&str, &str)], at: i64) {
        let event = delta(self.tenant, crm, record, fields, at);
        send_events(&self.kafka, &self.env.topics.events, &[event]).await;
    }

    async fn all(&self, events: &[CrmEvent]) {
        send_events(&self.kafka, &self.env.topics.events, events).await;
    }
}

async fn recorded_value(env: &TestEnv, tenant: &Tenant, record: &str) -> Option<String> {
    connectors::activity(env, tenant.integration_id, record)
        .await
        .filter(|a| a.state == "recorded")
        .map(|a| a.value)
}

/// A workflow of the tenant's integration on Opportunities, counting `Amount` by `OwnerId`.
pub(crate) async fn add_workflow(
    env: &TestEnv,
    tenant: &Tenant,
    activity: &str,
    condition: serde_json::Value,
) -> uuid::Uuid {
    crm_sync_e2e::upsert_workflow(
        &env.pool,
        tenant.company_id,
        tenant.integration_id,
        None,
        json!({
            "name": activity, "object_type": "Opportunity", "triggers": ["updated"],
            "conditions": {"all": [condition]},
            "user_field": "OwnerId", "value_field": "Amount", "activity_type": activity
        }),
        true,
    )
    .await
}

/// The evaluator replica of the record-state tests.
const EVALUATOR: &str = "evaluator";

/// A tenant's evaluator, the replica [`EVALUATOR`] a test can restart (its state folder and
/// transactional id are the replica's), and a provisioner.
struct Stateful {
    env: TestEnv,
    tenant: Tenant,
    evaluator: Service,
    _provisioner: Service,
}

async fn stateful(name: &str) -> Stateful {
    let env = TestEnv::new(&format!("state-{name}")).await;
    let tenant = Tenant::create(&env.pool, name, true, true).await;
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    Stateful {
        env,
        tenant,
        evaluator,
        _provisioner,
    }
}

// ---- Crash and rebalance: the state equals a clean replay's -------------------------------------
