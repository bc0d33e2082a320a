#![allow(clippy::unwrap_used)]

use super::*;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, FieldValue};
use crm_sync_workflow::{Condition, Fields, Previous, Record, Trigger, WorkflowSpec};
use serde_json::json;
use uuid::Uuid;

/// A workflow counting won deals' amounts by owner, on `conditions`.
pub(crate) fn won(conditions: serde_json::Value) -> Arc<StoredWorkflow> {
    Arc::new(StoredWorkflow {
        id: Uuid::from_u128(7),
        company_id: Uuid::from_u128(1),
        integration_id: Uuid::from_u128(2),
        active: true,
        spec: WorkflowSpec {
            name: "won".into(),
            object_type: "deal".into(),
            triggers: vec![Trigger::Created, Trigger::Updated, Trigger::Deleted],
            conditions: Condition::from_json(&conditions).unwrap(),
            user_field: "owner".into(),
            value_field: Some("amount".into()),
            date_field: None,
            activity_type: "deal_won".into(),
        },
    })
}

pub(crate) fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                FieldValue {
                    kind: Some(Kind::Text((*v).to_owned())),
                },
            )
        })
        .collect()
}

fn view<'a>(change: ChangeType, current: &'a Fields, previous: &'a Fields) -> RecordView<'a> {
    RecordView {
        object_type: "deal",
        change,
        record: Record {
            fields: current,
            previous: Previous::Sent(previous),
        },
        owner: None,
    }
}

const T: Timestamp = Timestamp {
    seconds: 100,
    nanos: 0,
};

fn stage_is_won() -> Arc<StoredWorkflow> {
    won(json!({"field": "stage", "op": "eq", "value": "won"}))
}

#[test]
fn a_new_match_is_an_outcome_and_an_unchanged_one_is_not() {
    let workflows = [stage_is_won()];
    let now = fields(&[("stage", "won"), ("amount", "500"), ("owner", "u1")]);
    let first = judge(&workflows, &view(ChangeType::Updated, &now, &now), &[], T);
    assert!(
        matches!(first.changes.as_slice(), [Change::Matched { now, .. }] if now.value == "500")
    );
    let again = judge(
        &workflows,
        &view(ChangeType::Updated, &now, &now),
        &first.matches,
        T,
    );
    assert!(again.changes.is_empty());
    assert_eq!(again.matches, first.matches);
}

#[test]
fn a_new_amount_updates_the_match_and_a_lost_deal_retracts_it() {
    let workflows = [stage_is_won()];
    let before = fields(&[("stage", "won"), ("amount", "500"), ("owner", "u1")]);
    let first = judge(
        &workflows,
        &view(ChangeType::Updated, &before, &before),
        &[],
        T,
    );
    let more = fields(&[("stage", "won"), ("amount", "900"), ("owner", "u1")]);
    let second = judge(
        &workflows,
        &view(ChangeType::Updated, &more, &before),
        &first.matches,
        T,
    );
    assert!(
        matches!(second.changes.as_slice(), [Change::Matched { now, .. }] if now.value == "900")
    );
    let lost = fields(&[("stage", "lost"), ("amount", "900"), ("owner", "u1")]);
    let third = judge(
        &workflows,
        &view(ChangeType::Updated, &lost, &more),
        &second.matches,
        T,
    );
    assert!(
        matches!(third.changes.as_slice(), [Change::Retracted { owner_crm_user_id, .. }] if owner_crm_user_id == "u1")
    );
    assert!(third.matches.is_empty());
}

#[test]
fn a_record_that_never_matched_retracts_nothing() {
    let workflows = [stage_is_won()];
    let open = fields(&[("stage", "open"), ("amount", "5"), ("owner", "u1")]);
    let judged = judge(&workflows, &view(ChangeType::Updated, &open, &open), &[], T);
    assert!(judged.changes.is_empty());
    assert_eq!(judged.no_match, vec![NoMatch::Conditions]);
    let deleted = judge(&workflows, &view(ChangeType::Deleted, &open, &open), &[], T);
    assert!(deleted.changes.is_empty());
}

#[test]
fn a_delete_retracts_with_the_stored_owner() {
    let workflows = [stage_is_won()];
    let won = fields(&[("stage", "won"), ("amount", "5"), ("owner", "u9")]);
    let first = judge(&workflows, &view(ChangeType::Updated, &won, &won), &[], T);
    let gone = fields(&[]);
    let deleted = judge(
        &workflows,
        &view(ChangeType::Deleted, &gone, &gone),
        &first.matches,
        T,
    );
    assert!(
        matches!(deleted.changes.as_slice(), [Change::Retracted { owner_crm_user_id, .. }] if owner_crm_user_id == "u9")
    );
}

#[test]
fn fields_never_seen_are_reported_missing() {
    let workflows = [stage_is_won()];
    let partial = fields(&[("stage", "won")]);
    let judged = judge(
        &workflows,
        &view(ChangeType::Updated, &partial, &partial),
        &[],
        T,
    );
    assert!(judged.changes.is_empty());
    assert_eq!(
        judged
            .missing_fields
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        vec!["amount", "owner"]
    );
}

#[test]
fn changed_to_matches_once_and_keeps_its_activity_on_later_edits() {
    let workflows = [won(
        json!({"field": "stage", "op": "changed_to", "value": "won"}),
    )];
    let open = fields(&[("stage", "open"), ("amount", "5"), ("owner", "u1")]);
    let won_now = fields(&[("stage", "won"), ("amount", "5"), ("owner", "u1")]);
    let first = judge(
        &workflows,
        &view(ChangeType::Updated, &won_now, &open),
        &[],
        T,
    );
    assert_eq!(first.changes.len(), 1);
    // The same state again: not a change to "won", and the activity stays.
    let again = judge(
        &workflows,
        &view(ChangeType::Updated, &won_now, &won_now),
        &first.matches,
        T,
    );
    assert!(again.changes.is_empty());
    assert_eq!(again.matches.len(), 1);
    // Another amount while still won: the activity's value follows.
    let more = fields(&[("stage", "won"), ("amount", "8"), ("owner", "u1")]);
    let edited = judge(
        &workflows,
        &view(ChangeType::Updated, &more, &won_now),
        &again.matches,
        T,
    );
    assert!(matches!(edited.changes.as_slice(), [Change::Matched { now, .. }] if now.value == "8"));
}

#[test]
fn inactive_workflows_matches_are_carried_over() {
    let stale = WorkflowMatchState {
        workflow_id: Uuid::from_u128(99).to_string(),
        value: "1".into(),
        ..Default::default()
    };
    let workflows = [stage_is_won()];
    let open = fields(&[("stage", "open"), ("amount", "5"), ("owner", "u1")]);
    let judged = judge(
        &workflows,
        &view(ChangeType::Updated, &open, &open),
        std::slice::from_ref(&stale),
        T,
    );
    assert_eq!(judged.matches, vec![stale]);
}

#[test]
fn workflows_sharing_leaves_judge_as_each_would_alone() {
    let won_big = json!({"all": [
        {"field": "stage", "op": "eq", "value": "won"},
        {"field": "amount", "op": "gte", "value": 100}
    ]});
    let changed_to_won = json!({"all": [
        {"field": "stage", "op": "changed_to", "value": "won"},
        {"field": "amount", "op": "gte", "value": 100}
    ]});
    let workflows = vec![
        won(won_big.clone()),
        won(changed_to_won),
        won(won_big),
        stage_is_won(),
    ];
    let snapshot = crate::snapshot::Workflows::new(workflows.clone());
    let before = fields(&[("stage", "open"), ("amount", "500")]);
    for (stage, amount) in [("won", "500"), ("won", "50"), ("lost", "500")] {
        let now = fields(&[("stage", stage), ("amount", amount), ("owner", "u1")]);
        let view = view(ChangeType::Updated, &now, &before);
        let alone = judge(&workflows, &view, &[], T);
        let shared = judge_with(
            &workflows,
            &view,
            &[],
            T,
            &mut snapshot.shared.for_one_record(),
        );
        assert_eq!(shared.verdicts, alone.verdicts, "{stage} {amount}");
        assert_eq!(shared.matches, alone.matches, "{stage} {amount}");
    }
}

#[test]
fn a_delete_retracts_the_matches_of_inactive_workflows_and_of_workflows_moved_elsewhere() {
    let inactive = WorkflowMatchState {
        workflow_id: Uuid::from_u128(99).to_string(),
        value: "1".into(),
        owner_crm_user_id: "u3".into(),
        ..Default::default()
    };
    let mut moved = (*stage_is_won()).clone();
    moved.spec.object_type = "account".into();
    let workflows = [Arc::new(moved)];
    let won = fields(&[("stage", "won"), ("amount", "5"), ("owner", "u1")]);
    let before = [stage_is_won()];
    let counted = judge(&before, &view(ChangeType::Updated, &won, &won), &[], T);
    let prior = [counted.matches, vec![inactive.clone()]].concat();
    let gone = fields(&[]);
    let deleted = judge(
        &workflows,
        &view(ChangeType::Deleted, &gone, &gone),
        &prior,
        T,
    );
    assert!(
        matches!(
            deleted.changes.as_slice(),
            [
                Change::Retracted { owner_crm_user_id: moved, .. },
                Change::RetractedInactive { workflow_id, owner_crm_user_id: inactive },
            ] if moved == "u1" && *workflow_id == Uuid::from_u128(99).to_string() && inactive == "u3"
        ),
        "{:?}",
        deleted.changes
    );
    assert!(deleted.matches.is_empty(), "{:?}", deleted.matches);
}
