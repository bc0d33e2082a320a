//! The evaluator's own work per event, without Kafka or PostgreSQL: decoding the event (and the
//! record's stored state), merging, judging ten workflows of five conditions, building and
//! encoding the outcomes, encoding the new state. The same steps and shapes as
//! `tests/load/evaluator.sh` (an Opportunity of 25 fields, the same leaves), so that work on the
//! handler's CPU can be measured in seconds instead of a load run.
//! `cargo bench -p crm-sync-workflow-evaluator --bench event`; figures in BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crm_sync_proto::Message;
use crm_sync_proto::Timestamp;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser, FieldValue};
use crm_sync_store::workflows::StoredWorkflow;
use crm_sync_workflow::{Condition, Record, RecordView, Trigger, WorkflowSpec};
use crm_sync_workflow_evaluator::judge::judge_with;
use crm_sync_workflow_evaluator::outputs;
use crm_sync_workflow_evaluator::record::{self, Before, Current};
use crm_sync_workflow_evaluator::snapshot::Workflows;
use uuid::Uuid;

// The service's allocator: most of the work is allocating and freeing strings.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The company's id as the handler writes it into each outcome.
const COMPANY: &str = "00000000-0000-0000-0000-000000000001";

/// The load script's leaves: (field, operator, value as JSON, or nothing).
const LEAVES: [(&str, &str, &str); 15] = [
    ("StageName", "eq", r#""Closed Won""#),
    ("Amount", "gte", "1000"),
    ("CloseDate", "gte", r#""2026-01-01""#),
    ("Type", "in", r#"["New Business", "Renewal"]"#),
    ("IsWon", "eq", "true"),
    ("StageName", "changed_to", r#""Closed Won""#),
    ("LeadSource", "not_in", r#"["Partner Referral"]"#),
    ("Name", "contains", r#""licenses""#),
    ("OwnerId", "starts_with", r#""005""#),
    ("Probability", "gte", "80"),
    ("ForecastCategoryName", "ne", r#""Omitted""#),
    ("Description", "is_not_empty", ""),
    ("LastModifiedDate", "gt", r#""2026-11-01T00:00:00Z""#),
    ("Amount", "changed", ""),
    ("CurrencyIsoCode", "eq", r#""eur""#),
];

fn workflows() -> Workflows {
    Workflows::new(list())
}

fn list() -> Vec<Arc<StoredWorkflow>> {
    (0..10u128)
        .map(|n| {
            let all: Vec<serde_json::Value> = (0..5)
                .map(|i| {
                    let (field, op, value) = LEAVES[(n as usize * 3 + i) % LEAVES.len()];
                    let mut leaf = serde_json::json!({ "field": field, "op": op });
                    if !value.is_empty() {
                        leaf["value"] = serde_json::from_str(value).unwrap();
                    }
                    leaf
                })
                .collect();
            Arc::new(StoredWorkflow {
                id: Uuid::from_u128(100 + n),
                company_id: Uuid::from_u128(1),
                integration_id: Uuid::from_u128(2),
                active: true,
                spec: WorkflowSpec {
                    name: format!("Workflow {n}"),
                    object_type: "Opportunity".into(),
                    triggers: vec![Trigger::Created, Trigger::Updated],
                    conditions: Condition::from_json(&serde_json::json!({ "all": all })).unwrap(),
                    user_field: "OwnerId".into(),
                    value_field: Some("Amount".into()),
                    date_field: Some("CloseDate".into()),
                    activity_type: format!("activity_{n}"),
                },
            })
        })
        .collect()
}

/// The load script's `i`th event: Opportunity `i % 50000` with 25 text fields.
fn event(i: u32) -> Vec<u8> {
    let stage = ["Closed Won", "Prospecting", "Negotiation/Review"][i as usize % 3];
    let record = format!("006LOAD{:011}", i % 50_000);
    let owner = format!("005LOAD{:05}", i % 500);
    let texts = [
        ("Id", record.clone()),
        ("AccountId", "0015g00000AbCdeAAF".into()),
        ("Name", format!("Acme Corp - {} licenses", i % 900)),
        ("StageName", stage.into()),
        ("Amount", format!("{}.50", 500 + (i * 37) % 200_000)),
        ("Probability", format!("{}", (i * 7) % 101)),
        (
            "CloseDate",
            format!("2026-{:02}-{:02}", i % 12 + 1, i % 28 + 1),
        ),
        ("Type", "New Business".into()),
        ("LeadSource", "Web".into()),
        ("IsWon", i.is_multiple_of(3).to_string()),
        ("IsClosed", "true".into()),
        ("ForecastCategoryName", "Closed".into()),
        ("CurrencyIsoCode", "EUR".into()),
        ("OwnerId", owner.clone()),
        ("CreatedById", "0055g00000CrEaTAAA".into()),
        ("CreatedDate", "2026-10-01T09:00:00.000Z".into()),
        ("LastModifiedDate", "2026-11-20T15:04:05.000Z".into()),
        ("Description", "Three-year deal".into()),
        ("NextStep", "Kick-off call".into()),
        ("Pricebook2Id", "01s5g00000PrIcEAAA".into()),
        ("CampaignId", "7015g00000CaMpAAA".into()),
        ("HasOpportunityLineItem", "true".into()),
        ("FiscalQuarter", "4".into()),
        ("FiscalYear", "2026".into()),
        ("TotalOpportunityQuantity", "200".into()),
    ];
    let text = |t: &str| FieldValue {
        kind: Some(Kind::Text(t.to_owned())),
    };
    let mut event = CrmEvent {
        event_id: format!("load-{i}"),
        integration_id: Uuid::from_u128(2).to_string(),
        object_type: "Opportunity".into(),
        record_id: record,
        occurred_at: Some(Timestamp {
            seconds: 1_763_651_045,
            nanos: 0,
        }),
        owner: Some(CrmUser {
            crm_user_id: owner,
            ..Default::default()
        }),
        fields: texts.iter().map(|(k, v)| ((*k).into(), text(v))).collect(),
        previous_fields: [("StageName", "Negotiation/Review"), ("Amount", "400")]
            .iter()
            .map(|(k, v)| ((*k).into(), text(v)))
            .collect(),
        ..Default::default()
    };
    event.set_change_type(ChangeType::Updated);
    event.encode_to_vec()
}

/// What the handler does with one event, from its bytes (and the stored state's) to the bytes
/// it writes: the outcomes' size, and the new state.
fn handle(workflows: &Workflows, payload: &[u8], stored: Option<&[u8]>) -> (usize, Vec<u8>) {
    let view = crm_sync_proto::view::decode_event(payload).unwrap();
    let event = view.event;
    let prior = stored.map(|bytes| crm_sync_proto::view::decode_state(bytes).unwrap());
    let mut merged = record::merge(prior, &event, (&view.fields, &view.previous));
    let state = &mut merged.state;
    let current = Current::new(&merged.fields, &merged.changes);
    let before = Before(&current);
    let view = RecordView {
        object_type: &event.object_type,
        change: event.change_type(),
        record: Record {
            fields: &current,
            previous: record::previous(event.change_type(), merged.new_record, &before),
        },
        owner: state.owner.as_ref(),
    };
    let judgement = judge_with(
        &workflows.list,
        &view,
        &state.matches,
        record::event_time(&event),
        &mut workflows.shared.for_one_record(),
    );
    let written: usize = judgement
        .changes
        .iter()
        .map(|change| {
            outputs::outcome(&event, state, COMPANY, change)
                .payload
                .len()
        })
        .sum();
    state.matches = judgement.matches;
    (written, merged.encode())
}

fn bench(c: &mut Criterion) {
    let workflows = workflows();
    let first: Vec<Vec<u8>> = (0..100).map(event).collect();
    let second: Vec<Vec<u8>> = (50_000..50_100).map(event).collect();
    // The states the first events left, their matches included: the second events retract some.
    let stored: Vec<Vec<u8>> = first
        .iter()
        .map(|payload| handle(&workflows, payload, None).1)
        .collect();
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(first.len() as u64));
    group.bench_function("a record's first event", |b| {
        b.iter(|| {
            for payload in &first {
                black_box(handle(&workflows, black_box(payload), None));
            }
        })
    });
    group.bench_function("an event on a stored record", |b| {
        b.iter(|| {
            for (payload, state) in second.iter().zip(&stored) {
                black_box(handle(&workflows, black_box(payload), Some(state)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
