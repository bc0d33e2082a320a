use super::*;
use crate::condition::Fields;
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{CrmUser, FieldValue};
use serde_json::json;

fn workflow(triggers: &[Trigger], conditions: serde_json::Value) -> WorkflowSpec {
    WorkflowSpec {
        name: "Won".into(),
        object_type: "Opportunity".into(),
        triggers: triggers.to_vec(),
        conditions: Condition::from_json(&conditions).unwrap(),
        user_field: "OwnerId".into(),
        value_field: Some("Amount".into()),
        date_field: Some("CloseDate".into()),
        activity_type: "deal_won".into(),
    }
}

fn won_workflow() -> WorkflowSpec {
    workflow(
        &[Trigger::Created, Trigger::Updated],
        json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
    )
}

fn to_fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                FieldValue {
                    kind: Some(Kind::Text(v.to_string())),
                },
            )
        })
        .collect()
}

fn event(change: ChangeType, fields: &[(&str, &str)]) -> CrmEvent {
    let mut e = CrmEvent {
        object_type: "opportunity".into(),
        fields: to_fields(fields),
        ..Default::default()
    };
    e.set_change_type(change);
    e
}

fn retracted(reason: RetractReason, owner: Option<&str>) -> Decision {
    Decision::Retracted(Retraction {
        owner_crm_user_id: owner.map(str::to_owned),
        reason,
    })
}

#[test]
fn a_won_opportunity_matches_with_value_date_and_owner() {
    let e = event(
        ChangeType::Updated,
        &[
            ("StageName", "Closed Won"),
            ("Amount", "1250.50"),
            ("CloseDate", "2026-11-20"),
            ("OwnerId", "005A"),
        ],
    );
    let Decision::Matched(m) = won_workflow().decide(&e) else {
        panic!()
    };
    assert_eq!(m.owner_crm_user_id.as_deref(), Some("005A"));
    assert_eq!(m.value.to_string(), "1250.50");
    assert_eq!(
        m.activity_date.unwrap().to_rfc3339(),
        "2026-11-20T00:00:00+00:00"
    );
}

#[test]
fn without_value_and_date_fields_a_match_counts_one_at_the_event_time() {
    let mut w = won_workflow();
    w.value_field = None;
    w.date_field = None;
    let mut e = event(ChangeType::Created, &[("StageName", "Closed Won")]);
    e.owner = Some(CrmUser {
        crm_user_id: "005B".into(),
        ..Default::default()
    });
    let Decision::Matched(m) = w.decide(&e) else {
        panic!()
    };
    assert_eq!(m.value, Decimal::ONE);
    assert_eq!(m.activity_date, None);
    assert_eq!(m.owner_crm_user_id.as_deref(), Some("005B"));
}

#[test]
fn triggers_objects_and_values_gate_the_match() {
    let w = won_workflow();
    let fields = [
        ("StageName", "Closed Won"),
        ("Amount", "10"),
        ("OwnerId", "005A"),
    ];
    let mut other = event(ChangeType::Updated, &fields);
    other.object_type = "Lead".into();
    assert_eq!(w.decide(&other), Decision::NoMatch(NoMatch::OtherObject));
    let created_only = workflow(
        &[Trigger::Created],
        json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
    );
    assert_eq!(
        created_only.decide(&event(ChangeType::Updated, &fields)),
        Decision::NoMatch(NoMatch::OtherTrigger)
    );
    let no_amount = event(ChangeType::Updated, &[("StageName", "Closed Won")]);
    assert_eq!(
        w.decide(&no_amount),
        Decision::NoMatch(NoMatch::MissingValue)
    );
    let bad_amount = event(
        ChangeType::Updated,
        &[("StageName", "Closed Won"), ("Amount", "lots")],
    );
    assert_eq!(
        w.decide(&bad_amount),
        Decision::NoMatch(NoMatch::TypeMismatch)
    );
    let bad_date = event(
        ChangeType::Updated,
        &[
            ("StageName", "Closed Won"),
            ("Amount", "1"),
            ("CloseDate", "soon"),
        ],
    );
    assert_eq!(
        w.decide(&bad_date),
        Decision::NoMatch(NoMatch::TypeMismatch)
    );
}

#[test]
fn an_update_that_no_longer_matches_retracts_and_a_created_one_does_not() {
    let w = won_workflow();
    let open = [("StageName", "Prospecting"), ("OwnerId", "005A")];
    assert_eq!(
        w.decide(&event(ChangeType::Updated, &open)),
        retracted(RetractReason::NoLongerMatches, Some("005A"))
    );
    assert_eq!(
        w.decide(&event(ChangeType::Created, &open)),
        Decision::NoMatch(NoMatch::Conditions)
    );
    // A partial update without the condition's field says nothing about it.
    assert_eq!(
        w.decide(&event(ChangeType::Updated, &[("Amount", "5")])),
        Decision::NoMatch(NoMatch::Unknown)
    );
    // A field that cannot be read is counted, never retracted on.
    let typed = workflow(
        &[Trigger::Updated],
        json!({"field": "Amount", "op": "gte", "value": 1000}),
    );
    assert_eq!(
        typed.decide(&event(ChangeType::Updated, &[("Amount", "n/a")])),
        Decision::NoMatch(NoMatch::TypeMismatch)
    );
}

#[test]
fn a_delete_retracts_unless_the_deletion_itself_is_what_counts() {
    let w = won_workflow();
    assert_eq!(
        w.decide(&event(ChangeType::Deleted, &[])),
        retracted(RetractReason::Deleted, None)
    );
    // Even a delete carrying matching values: the workflow does not list `deleted`.
    let won = [("StageName", "Closed Won"), ("Amount", "3")];
    assert_eq!(
        w.decide(&event(ChangeType::Deleted, &won)),
        retracted(RetractReason::Deleted, None)
    );
    let counts_deletes = workflow(
        &[Trigger::Deleted],
        json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
    );
    assert!(matches!(
        counts_deletes.decide(&event(ChangeType::Deleted, &won)),
        Decision::Matched(_)
    ));
    assert_eq!(
        counts_deletes.decide(&event(ChangeType::Deleted, &[])),
        retracted(RetractReason::Deleted, None)
    );
}

#[test]
fn changed_to_matches_the_change_and_retracts_only_on_the_state() {
    // "StageName changed to Closed Won and Amount ≥ 1000".
    let w = workflow(
        &[Trigger::Created, Trigger::Updated],
        json!({"all": [
            {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
            {"field": "Amount", "op": "gte", "value": 1000}
        ]}),
    );
    let update = |now: &[(&str, &str)], before: &[(&str, &str)]| {
        let mut e = event(ChangeType::Updated, now);
        e.previous_fields = to_fields(before);
        w.decide(&e)
    };
    let won = [("StageName", "Closed Won"), ("Amount", "1500")];
    assert!(matches!(
        update(&won, &[("StageName", "Negotiation")]),
        Decision::Matched(_)
    ));
    // Amount edited later: no new match, no retraction (whether or not the CRM resends the
    // unchanged stage).
    assert_eq!(
        update(&won, &[("Amount", "1200")]),
        Decision::NoMatch(NoMatch::Unknown)
    );
    assert_eq!(
        update(&won, &[("StageName", "Closed Won"), ("Amount", "1200")]),
        Decision::NoMatch(NoMatch::NoChange)
    );
    assert_eq!(
        update(
            &[("StageName", "Negotiation"), ("Amount", "1500")],
            &[("StageName", "Closed Won")]
        ),
        retracted(RetractReason::NoLongerMatches, None)
    );
    assert_eq!(
        update(
            &[("StageName", "Closed Won"), ("Amount", "900")],
            &[("Amount", "1500")]
        ),
        retracted(RetractReason::NoLongerMatches, None)
    );
    // No previous values at all (e.g. Salesforce Outbound Messages): not known to be a change.
    assert_eq!(update(&won, &[]), Decision::NoMatch(NoMatch::Unknown));
    // Created as won: it changed from nothing to Closed Won.
    assert!(matches!(
        w.decide(&event(ChangeType::Created, &won)),
        Decision::Matched(_)
    ));
}

#[test]
fn dates_parse_in_every_form_crms_send() {
    assert_eq!(
        parse_date("2026-11-25T23:30:00.000+0100")
            .unwrap()
            .to_rfc3339(),
        "2026-11-25T22:30:00+00:00"
    );
    assert_eq!(
        parse_date("2026-11-25T23:30:00").unwrap().to_rfc3339(),
        "2026-11-25T23:30:00+00:00"
    );
    assert_eq!(
        parse_date("1763596800000").unwrap().to_rfc3339(),
        "2025-11-20T00:00:00+00:00"
    );
    assert!(parse_date("yesterday").is_none());
}

#[test]
fn names_too_long_to_rank_or_with_control_characters_are_refused() {
    let mut w = won_workflow();
    w.activity_type = "x".repeat(201);
    assert_eq!(
        w.validate().unwrap_err().to_string(),
        "activity_type: is longer than 200 characters"
    );
    w.activity_type = "x".repeat(200);
    assert!(w.validate().is_ok());
    let mut w = won_workflow();
    w.date_field = Some("Close\u{7}Date".into());
    assert_eq!(
        w.validate().unwrap_err().to_string(),
        "date_field: must not contain control characters"
    );
    let mut w = won_workflow();
    w.object_type = "O".repeat(300);
    assert!(
        w.validate()
            .unwrap_err()
            .to_string()
            .starts_with("object_type:")
    );
}

#[test]
fn validation_names_the_field() {
    let mut w = won_workflow();
    w.triggers.clear();
    assert!(
        w.validate()
            .unwrap_err()
            .to_string()
            .starts_with("triggers:")
    );
    let mut w = won_workflow();
    w.user_field = " ".into();
    assert!(
        w.validate()
            .unwrap_err()
            .to_string()
            .starts_with("user_field:")
    );
    let bad: Result<WorkflowSpec, _> = serde_json::from_value(json!({
        "name": "x", "object_type": "Opportunity", "triggers": ["updated"],
        "conditions": {"all": [{"field": "CloseDate", "op": "gt", "value": 5, "type": "date"}]},
        "user_field": "OwnerId", "activity_type": "deal_won"
    }));
    let e = bad.unwrap_err().to_string();
    assert!(
        e.contains("conditions/all/0/value: expected a date literal"),
        "{e}"
    );
}
