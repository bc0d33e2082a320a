#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use super::*;
use crate::judge::judge;
use crm_sync_proto::Message;
use crm_sync_proto::v1::FieldValue;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_workflow::{Condition, Trigger, WorkflowSpec};
use serde_json::{Value, json};

fn workflow(id: u128, name: &str, object: &str, conditions: Value) -> Arc<StoredWorkflow> {
    Arc::new(StoredWorkflow {
        id: Uuid::from_u128(id),
        company_id: Uuid::from_u128(1),
        integration_id: Uuid::from_u128(2),
        active: true,
        spec: WorkflowSpec {
            name: name.into(),
            object_type: object.into(),
            triggers: vec![Trigger::Created, Trigger::Updated],
            conditions: Condition::from_json(&conditions).unwrap(),
            user_field: "OwnerId".into(),
            value_field: Some("Amount".into()),
            date_field: None,
            activity_type: "deal_won".into(),
        },
    })
}

fn event(stage: &str, amount: &str) -> CrmEvent {
    let text = |s: &str| FieldValue {
        kind: Some(Kind::Text(s.into())),
    };
    let mut e = CrmEvent {
        event_id: "e1".into(),
        integration_id: Uuid::from_u128(2).to_string(),
        object_type: "Opportunity".into(),
        record_id: "006A".into(),
        source_delivery_id: "04lA".into(),
        fields: [
            ("StageName".to_owned(), text(stage)),
            ("Amount".to_owned(), text(amount)),
            ("OwnerId".to_owned(), text("005A")),
            ("Name".to_owned(), text("Acme")),
        ]
        .into(),
        ..Default::default()
    };
    e.set_change_type(ChangeType::Created);
    e.set_crm(CrmKind::Salesforce);
    e
}

/// The entry of `event` judged by `workflows`.
fn judged(workflows: &[Arc<StoredWorkflow>], event: &CrmEvent) -> Entry {
    let view = RecordView::of_event(event);
    let judgement = judge(workflows, &view, &[], Timestamp::default());
    let active = Arc::new(Workflows::new(workflows.to_vec()));
    Entry::new(event, (Uuid::from_u128(2), Uuid::from_u128(1))).judged(&active, &judgement, &view)
}

/// The entry of `event` judged by `workflows`, the record having satisfied `prior` before.
fn judged_after(
    workflows: &[Arc<StoredWorkflow>],
    event: &CrmEvent,
    prior: &[crm_sync_proto::v1::WorkflowMatchState],
) -> Entry {
    let view = RecordView::of_event(event);
    let judgement = judge(workflows, &view, prior, Timestamp::default());
    let active = Arc::new(Workflows::new(workflows.to_vec()));
    Entry::new(event, (Uuid::from_u128(2), Uuid::from_u128(1))).judged(&active, &judgement, &view)
}

/// The entry as the reader finds it in the page the writer stores.
fn read_back(entry: &Entry, versions: &mut Versions) -> store::StoredEvent {
    let pages = store::pages::encode_entries(std::slice::from_ref(entry), |e, index| {
        e.version(index, versions)
    });
    assert_eq!(pages.len(), 1);
    let mut entries = store::pages::decode(&pages[0]).unwrap();
    let stored = entries.pop().unwrap();
    assert_eq!(stored.event_id, "e1");
    stored
}

/// The stored event's decisions as a reader words them.
fn worded(stored: &store::StoredEvent, known: &HashMap<Uuid, words::Version>) -> Value {
    words::word(
        stored.decisions.clone(),
        stored.read_values.as_deref(),
        &stored.change_type,
        known,
    )
}

/// The entry as the writer stores it, and its decisions as a reader words them.
fn stored_and_worded(entry: Entry) -> (store::StoredEvent, Value) {
    stored_and_worded_with(entry, Versions::default())
}

/// [`stored_and_worded`], by a writer that already knows `versions`.
fn stored_and_worded_with(entry: Entry, mut versions: Versions) -> (store::StoredEvent, Value) {
    let stored = read_back(&entry, &mut versions);
    let known = versions
        .known
        .values()
        .map(|k| {
            (
                k.version,
                words::Version {
                    workflow_id: k.workflow.id,
                    spec: k.workflow.spec.clone(),
                },
            )
        })
        .collect();
    let decisions = worded(&stored, &known);
    (stored, decisions)
}

/// The fields whose current values the stored entry kept.
fn kept_fields(stored: &store::StoredEvent) -> Vec<String> {
    let bytes = stored.read_values.as_deref().unwrap();
    let mut names: Vec<_> = CrmEvent::decode(&bytes[1..])
        .unwrap()
        .fields
        .into_keys()
        .collect();
    names.sort();
    names
}

#[test]
fn decisions_say_in_words_why_a_workflow_did_not_count_and_skip_other_objects() {
    let workflows = [
        workflow(
            10,
            "Big wins",
            "Opportunity",
            json!({"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"},
                           {"field": "Amount", "op": "gte", "value": 1000}]}),
        ),
        workflow(
            11,
            "Any win",
            "Opportunity",
            json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
        ),
        workflow(
            12,
            "Leads",
            "Lead",
            json!({"field": "Status", "op": "eq", "value": "Hot"}),
        ),
    ];
    let entry = judged(&workflows, &event("Closed Won", "500"));
    assert_eq!(entry.summary, Summary::Matched);
    let (written, decisions) = stored_and_worded(entry);
    // Only the fields the workflow that did not count reads are kept.
    let kept = kept_fields(&written);
    assert!(
        kept.contains(&"Amount".to_owned()) && !kept.contains(&"Name".to_owned()),
        "{kept:?}"
    );
    assert_eq!(written.summary, "matched");
    assert_eq!(written.source, "webhook");
    assert_eq!(written.crm, "salesforce");
    assert_eq!(written.change_type, "created");
    assert_eq!(written.delivery_id, "04lA");
    // Stored as codes, without words.
    assert_eq!(
        written
            .decisions
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["d"].as_str(), v.get("r").and_then(Value::as_str)))
            .collect::<Vec<_>>(),
        [
            (Some("not_counted"), Some("conditions")),
            (Some("counted"), None)
        ]
    );
    assert_eq!(
        decisions,
        json!([
            {"workflow_id": Uuid::from_u128(10), "workflow": "Big wins", "activity_type": "deal_won",
             "decision": "not_counted", "reason": "conditions",
             "explanation": ["Amount is \"500\"; the condition wants gte 1000"]},
            {"workflow_id": Uuid::from_u128(11), "workflow": "Any win", "activity_type": "deal_won",
             "decision": "counted", "reason": null, "explanation": []},
        ])
    );

    let entry = judged(&workflows, &event("Negotiation/Review", "5000"));
    assert_eq!(entry.summary, Summary::NoMatch);
    let (_, decisions) = stored_and_worded(entry);
    assert_eq!(
        decisions[1]["explanation"],
        json!(["StageName is \"Negotiation/Review\"; the condition wants eq \"Closed Won\""])
    );
}

#[test]
fn a_full_queue_drops_entries_instead_of_waiting_and_aborted_ones_are_forgotten() {
    let workflows = [workflow(
        11,
        "Any win",
        "Opportunity",
        json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
    )];
    let e = event("Closed Won", "1");
    let (trail, mut queue) = Trail::new(2, true);
    for _ in 0..3 {
        trail.stage(Some(judged(&workflows, &e)));
    }
    // Three entries do not fit in a queue of two: the transaction's entries are dropped.
    trail.seal();
    trail.committed();
    assert!(queue.entries.try_recv().is_err());
    trail.stage(Some(judged(&workflows, &e)));
    trail.aborted();
    trail.seal();
    trail.committed();
    assert!(
        queue.entries.try_recv().is_err(),
        "an aborted entry is never written"
    );
    trail.stage(Some(judged(&workflows, &e)));
    trail.stage(trail.entry(&e, (Uuid::from_u128(2), Uuid::from_u128(1))));
    trail.seal();
    trail.committed();
    let batch = queue.entries.try_recv().unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[1].summary, Summary::Unchanged);
    // The queue is full until the writer takes them.
    trail.stage(Some(judged(&workflows, &e)));
    trail.seal();
    trail.committed();
    assert!(queue.entries.try_recv().is_err());
}

#[test]
fn a_disabled_trail_makes_no_entries() {
    let e = event("Closed Won", "1");
    let (trail, mut queue) = Trail::new(10, false);
    let entry = trail.entry(&e, (Uuid::from_u128(2), Uuid::from_u128(1)));
    assert!(entry.is_none());
    trail.stage(entry);
    trail.seal();
    trail.committed();
    assert!(queue.entries.try_recv().is_err(), "nothing to write");
}

#[test]
fn an_entry_is_worded_against_the_workflow_as_it_was_when_judged() {
    let before = workflow(
        10,
        "Big wins",
        "Opportunity",
        json!({"field": "Amount", "op": "gte", "value": 1000}),
    );
    let mut versions = Versions::default();
    let written = read_back(
        &judged(std::slice::from_ref(&before), &event("Closed Won", "500")),
        &mut versions,
    );
    // The admin then lowers the threshold: the workflow has a new version.
    let after = workflow(
        10,
        "Big wins",
        "Opportunity",
        json!({"field": "Amount", "op": "gte", "value": 100}),
    );
    let old = versions.of(&before);
    let new = versions.of(&after);
    assert_ne!(old, new, "a changed definition is a new version");
    let known = [(old, &before), (new, &after)]
        .into_iter()
        .map(|(v, w)| {
            (
                v,
                words::Version {
                    workflow_id: w.id,
                    spec: w.spec.clone(),
                },
            )
        })
        .collect();
    let worded = worded(&written, &known);
    assert_eq!(
        worded[0]["explanation"],
        json!(["Amount is \"500\"; the condition wants gte 1000"])
    );
}

#[test]
fn versions_due_for_storing_are_the_new_ones() {
    let w = workflow(
        10,
        "Big wins",
        "Opportunity",
        json!({"field": "Amount", "op": "gte", "value": 1000}),
    );
    let mut versions = Versions::default();
    let v = versions.of(&w);
    let due = versions.due();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].version, v);
    versions.stored(&due);
    assert!(
        versions.due().is_empty(),
        "stored versions are not stored again at once"
    );
    // The same definition in a reloaded snapshot (another Arc) is the same version.
    let reloaded = Arc::new((*w).clone());
    assert_eq!(versions.of(&reloaded), v);
    assert!(versions.due().is_empty());
}

#[test]
fn the_values_kept_are_those_every_non_counting_workflow_reads_each_once() {
    let workflows = [
        workflow(
            10,
            "Big wins",
            "Opportunity",
            json!({"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"},
                           {"field": "Amount", "op": "gte", "value": 1000}]}),
        ),
        workflow(
            11,
            "Named deals",
            "Opportunity",
            json!({"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"},
                           {"field": "Name", "op": "contains", "value": "licenses"}]}),
        ),
        workflow(
            12,
            "Any update",
            "Opportunity",
            json!({"field": "Probability", "op": "gte", "value": 0}),
        ),
    ];
    let entry = judged(&workflows, &event("Prospecting", "500"));
    let (stored, decisions) = stored_and_worded(entry);
    // No workflow counted it: the fields they read, each once (the owner and value fields
    // every workflow reads; Probability is not in the record, so there is no value to keep).
    assert_eq!(
        kept_fields(&stored),
        ["Amount", "Name", "OwnerId", "StageName"]
    );
    assert_eq!(
        decisions[1]["explanation"],
        json!([
            "StageName is \"Prospecting\"; the condition wants eq \"Closed Won\"",
            "Name is \"Acme\"; the condition wants contains \"licenses\""
        ])
    );
}

#[test]
fn a_delete_says_it_retracted_the_activities_of_workflows_deactivated_or_moved_since() {
    let won = json!({"field": "StageName", "op": "eq", "value": "Closed Won"});
    let deactivated = workflow(10, "Old wins", "Opportunity", won.clone());
    let before_move = workflow(11, "Any win", "Opportunity", won);
    // Both counted the record when it was won.
    let counted = judge(
        &[deactivated.clone(), before_move.clone()],
        &RecordView::of_event(&event("Closed Won", "500")),
        &[],
        Timestamp::default(),
    )
    .matches;
    assert_eq!(counted.len(), 2, "{counted:?}");
    // Then an admin deactivated one and moved the other to accounts; the record is deleted.
    let mut moved = (*before_move).clone();
    moved.spec.object_type = "Account".into();
    let mut deleted = event("Closed Won", "500");
    deleted.set_change_type(ChangeType::Deleted);
    let entry = judged_after(&[Arc::new(moved)], &deleted, &counted);
    assert_eq!(entry.summary, Summary::Retracted);
    // The new reasons are stored as literals: a reader from before them decodes the page too.
    let mut any = Versions::default();
    let body = store::pages::encode_entries(std::slice::from_ref(&entry), |e, index| {
        e.version(index, &mut any)
    })
    .concat();
    for reason in [words::WORKFLOW_INACTIVE, words::WORKFLOW_MOVED] {
        assert!(
            body.windows(reason.len()).any(|w| w == reason.as_bytes()),
            "{reason} is not stored as a literal"
        );
    }
    // The writer knows the deactivated workflow's version (it looks it up when it does not).
    let mut versions = Versions::default();
    versions.of(&deactivated);
    let (stored, decisions) = stored_and_worded_with(entry, versions);
    assert_eq!(stored.summary, "retracted");
    assert_eq!(
        decisions,
        json!([
            {"workflow_id": Uuid::from_u128(11), "workflow": "Any win", "activity_type": "deal_won",
             "decision": "retracted", "reason": "workflow_moved",
             "explanation": ["the record was deleted; the workflow now reads Account records, \
                              and the activity it had counted for this record was retracted"]},
            {"workflow_id": Uuid::from_u128(10), "workflow": "Old wins", "activity_type": "deal_won",
             "decision": "retracted", "reason": "workflow_inactive",
             "explanation": ["the record was deleted; the workflow was inactive by then, and \
                              the activity it had counted for this record was retracted"]},
        ])
    );
}
