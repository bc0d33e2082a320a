//! Evaluation throughput: 10 workflows × 5 conditions on a realistic Salesforce Opportunity
//! update. `cargo bench -p crm-sync-workflow --bench evaluate`; the figures are in BENCHMARKS.md.
//!
//! Throughput is reported in condition (leaf) evaluations per second. In the "all satisfied"
//! case no `all` group can stop early, so each event costs exactly 50 leaf evaluations plus the
//! value and date reads of the 10 matches; the "mixed" case is closer to real traffic, where
//! most workflows fail on their first condition (reported per event). The "decode" group adds
//! what comes before judging: the payload's protobuf decode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent, FieldValue};
use crm_sync_workflow::{Condition, Decision, Trigger, WorkflowSpec};
use prost::Message;
use serde_json::{Value, json};

const WORKFLOWS: usize = 10;
const CONDITIONS: usize = 5;

/// Leaves an admin would write, each satisfied by `opportunity()`; `{n}` varies thresholds so
/// that no two workflows are identical.
fn leaf(i: usize, n: usize) -> Value {
    match i % 15 {
        0 => json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
        1 => json!({"field": "Amount", "op": "gte", "value": 1000 + n}),
        2 => json!({"field": "CloseDate", "op": "gte", "value": format!("2026-0{}-01", 1 + n % 9)}),
        3 => {
            json!({"field": "Type", "op": "in", "value": ["New Business", "Existing Business - Upgrade", "Renewal"]})
        }
        4 => json!({"field": "IsWon", "op": "eq", "value": true}),
        5 => json!({"field": "StageName", "op": "changed_to", "value": "Closed Won"}),
        6 => {
            json!({"field": "LeadSource", "op": "not_in", "value": ["Partner Referral", "Purchased List"]})
        }
        7 => json!({"field": "Name", "op": "contains", "value": "licenses"}),
        8 => json!({"field": "OwnerId", "op": "starts_with", "value": "005"}),
        9 => json!({"field": "Probability", "op": "gte", "value": 90 - n}),
        10 => json!({"field": "ForecastCategoryName", "op": "ne", "value": "Omitted"}),
        11 => json!({"field": "Description", "op": "is_not_empty"}),
        12 => json!({"field": "LastModifiedDate", "op": "gt", "value": "2026-11-01T00:00:00Z"}),
        13 => json!({"field": "Amount", "op": "changed", "type": "number"}),
        _ => json!({"field": "CurrencyIsoCode", "op": "eq", "value": "eur"}),
    }
}

fn workflows() -> Vec<WorkflowSpec> {
    (0..WORKFLOWS)
        .map(|n| {
            let leaves: Vec<Value> = (0..CONDITIONS).map(|i| leaf(n * 3 + i, n)).collect();
            WorkflowSpec {
                name: format!("Workflow {n}"),
                object_type: "Opportunity".into(),
                triggers: vec![Trigger::Created, Trigger::Updated],
                conditions: Condition::from_json(&json!({ "all": leaves })).unwrap(),
                user_field: "OwnerId".into(),
                value_field: Some("Amount".into()),
                date_field: Some("CloseDate".into()),
                activity_type: format!("activity_{n}"),
            }
        })
        .collect()
}

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(Kind::Text(s.to_owned())),
    }
}

/// An Opportunity update as a Salesforce Outbound Message carries it: ~25 text fields.
fn opportunity(stage: &str) -> CrmEvent {
    let fields = [
        ("Id", "0065g00000XyZabAAB"),
        ("AccountId", "0015g00000AbCdeAAF"),
        ("Name", "Acme Corp - 200 licenses"),
        ("StageName", stage),
        ("Amount", "125000.50"),
        ("Probability", "100"),
        ("CloseDate", "2026-11-20"),
        ("Type", "New Business"),
        ("LeadSource", "Web"),
        ("IsWon", "true"),
        ("IsClosed", "true"),
        ("ForecastCategoryName", "Closed"),
        ("CurrencyIsoCode", "EUR"),
        ("OwnerId", "0055g00000OwNeRAAA"),
        ("CreatedById", "0055g00000CrEaTAAA"),
        ("CreatedDate", "2026-10-01T09:00:00.000Z"),
        ("LastModifiedDate", "2026-11-20T15:04:05.000Z"),
        ("Description", "Three-year deal, signed by the CFO."),
        ("NextStep", "Kick-off call"),
        ("Pricebook2Id", "01s5g00000PrIcEAAA"),
        ("CampaignId", "7015g00000CaMpAAA"),
        ("HasOpportunityLineItem", "true"),
        ("FiscalQuarter", "4"),
        ("FiscalYear", "2026"),
        ("TotalOpportunityQuantity", "200"),
    ];
    let mut event = CrmEvent {
        event_id: "9d5c0a8e-0000-4000-8000-000000000001".into(),
        integration_id: "6b0c8a1e-0000-4000-8000-000000000001".into(),
        object_type: "Opportunity".into(),
        record_id: "0065g00000XyZabAAB".into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
        previous_fields: [
            ("StageName".to_owned(), text("Negotiation/Review")),
            ("Amount".to_owned(), text("120000")),
        ]
        .into_iter()
        .collect(),
        ..Default::default()
    };
    event.set_change_type(ChangeType::Updated);
    event
}

fn bench(c: &mut Criterion) {
    let workflows = workflows();
    let leaves: usize = workflows.iter().map(|w| w.conditions.leaf_count()).sum();
    assert_eq!(leaves, WORKFLOWS * CONDITIONS);
    let won = opportunity("Closed Won");
    for w in &workflows {
        assert!(
            matches!(w.decide(&won), Decision::Matched(_)),
            "{} must match so that every leaf is evaluated",
            w.name
        );
    }
    let mut group = c.benchmark_group("evaluate");
    group.throughput(Throughput::Elements(leaves as u64));
    group.bench_function("10 workflows x 5 conditions, all satisfied", |b| {
        b.iter(|| {
            for w in &workflows {
                black_box(w.decide(black_box(&won)));
            }
        })
    });
    // Most traffic is updates of open deals: each workflow stops at its first false leaf, and
    // a record that no longer matches is also checked for a retraction.
    let open = opportunity("Prospecting");
    group.throughput(Throughput::Elements(1));
    group.bench_function("10 workflows, open deal (per event)", |b| {
        b.iter(|| {
            for w in &workflows {
                black_box(w.decide(black_box(&open)));
            }
        })
    });
    group.finish();

    // What the evaluator does with each consumed payload before judging it.
    let bytes = won.encode_to_vec();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one Opportunity update (25 fields)", |b| {
        b.iter(|| CrmEvent::decode(black_box(bytes.as_slice())).unwrap())
    });
    group.bench_function("decode and judge by 10 workflows", |b| {
        b.iter(|| {
            let event = CrmEvent::decode(black_box(bytes.as_slice())).unwrap();
            for w in &workflows {
                black_box(w.decide(&event));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
