//! `CrmEvent`s written straight onto a test's events topic, as a connector would write them.

use std::time::Duration;

use crm_sync_proto::v1::{
    ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue, OutcomeKind, WorkflowOutcome, field_value,
};
use crm_sync_proto::{Message, Timestamp};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{Tenant, TestEnv};

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(field_value::Kind::Text(s.to_owned())),
    }
}

/// A newly created Closed Won opportunity of `owner` (which the tenant's workflow matches).
pub fn won_deal(tenant: &Tenant, record: &str, owner: CrmUser) -> CrmEvent {
    let mut event = CrmEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        integration_id: tenant.integration_id.to_string(),
        object_type: "Opportunity".into(),
        record_id: record.into(),
        fields: [
            ("StageName", "Closed Won"),
            ("Amount", "10"),
            ("OwnerId", owner.crm_user_id.as_str()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), text(v)))
        .collect(),
        owner: Some(owner.clone()),
        occurred_at: Some(Timestamp {
            seconds: 1_795_000_000,
            nanos: 0,
        }),
        crm_account_id: tenant.organization_id.clone(),
        ..Default::default()
    };
    event.set_change_type(ChangeType::Created);
    event.set_crm(CrmKind::Generic);
    event
}

/// Writes the event to the test's events topic (key and event id header as ingest writes them).
pub async fn send(env: &TestEnv, event: &CrmEvent) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .unwrap();
    let key = format!(
        "{}/{}/{}",
        event.integration_id, event.object_type, event.record_id
    );
    producer
        .send(
            FutureRecord::to(&env.topics.events)
                .key(&key)
                .payload(&event.encode_to_vec())
                .headers(OwnedHeaders::new().insert(Header {
                    key: "crm-sync-event-id",
                    value: Some(event.event_id.as_str()),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Writes records onto the test's matches topic, in order, each to its partition (or by key).
pub async fn backlog_on_matches(env: &TestEnv, records: &[(Option<i32>, String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for (partition, key, payload) in records {
        let mut record = FutureRecord::to(&env.topics.matches)
            .key(key)
            .payload(payload);
        if let Some(partition) = partition {
            record = record.partition(*partition);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .unwrap();
    }
}

/// A matched outcome of the tenant's workflow for `owner`'s record, as the evaluator writes
/// one: a deal of 250 won at a fixed instant.
pub fn matched_outcome(tenant: &Tenant, record_id: &str, owner: CrmUser) -> WorkflowOutcome {
    let at = Timestamp {
        seconds: 1_795_000_000,
        nanos: 0,
    };
    WorkflowOutcome {
        outcome_id: format!("outcome-{record_id}"),
        event_id: format!("event-{record_id}"),
        company_id: tenant.company_id.to_string(),
        integration_id: tenant.integration_id.to_string(),
        workflow_id: tenant.workflow_id.to_string(),
        kind: OutcomeKind::Matched as i32,
        object_type: "Opportunity".into(),
        record_id: record_id.into(),
        owner: Some(owner),
        activity_type: "deal_won".into(),
        value: "250".into(),
        activity_date: Some(at),
        occurred_at: Some(at),
        crm: 0,
    }
}

/// Writes an outcome onto the test's matches topic, keyed by its record.
pub async fn send_outcome(env: &TestEnv, o: &WorkflowOutcome) {
    let key = format!("{}/Opportunity/{}", o.integration_id, o.record_id);
    backlog_on_matches(env, &[(None, key, o.encode_to_vec())]).await;
}
