use chrono::{DateTime, Utc};
use crm_sync_proto::Message as _;
use crm_sync_proto::announce::timestamp;
use crm_sync_proto::v1::{CrmUser, OutcomeKind, WorkflowOutcome};

use super::*;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_764_633_600 + seconds, 0).unwrap()
}

fn proto() -> WorkflowOutcome {
    WorkflowOutcome {
        outcome_id: "out-1".into(),
        event_id: "evt-1".into(),
        kind: OutcomeKind::Matched as i32,
        integration_id: Uuid::from_u128(1).to_string(),
        workflow_id: Uuid::from_u128(2).to_string(),
        object_type: "Opportunity".into(),
        record_id: "006A".into(),
        activity_type: "deal_won".into(),
        value: "1250.50".into(),
        occurred_at: Some(timestamp(at(0))),
        owner: Some(CrmUser {
            crm_user_id: "005A".into(),
            name: "Ada".into(),
            email: String::new(),
        }),
        ..Default::default()
    }
}

fn outcome() -> Outcome {
    Outcome::try_from(proto()).unwrap()
}

#[test]
fn a_well_formed_outcome_is_validated_once() {
    let o = Outcome::decode(&proto().encode_to_vec()).unwrap();
    assert_eq!(o.kind, Kind::Matched);
    assert_eq!(o.value.to_string(), "1250.50");
    assert_eq!(o.workflow_id, Uuid::from_u128(2));
    // Without a date field the activity is dated at the CRM change.
    assert_eq!(o.activity_date, at(0));
    assert_eq!(
        o.owner.as_ref().map(|u| u.crm_user_id.as_str()),
        Some("005A")
    );
}

#[test]
fn malformed_outcomes_are_refused_with_the_reason() {
    let refused = |edit: fn(&mut WorkflowOutcome)| {
        let mut o = proto();
        edit(&mut o);
        Outcome::try_from(o).unwrap_err()
    };
    let e = refused(|o| o.kind = OutcomeKind::Unspecified as i32);
    assert_eq!(e.detail, "outcome kind is unspecified");
    let e = refused(|o| o.workflow_id = "nope".into());
    assert_eq!(e.detail, "workflow_id \"nope\" is not a UUID");
    let e = refused(|o| o.record_id.clear());
    assert_eq!(e.reason, "invalid_outcome");
    let e = refused(|o| o.value = "n/a".into());
    assert!(e.detail.starts_with("value \"n/a\""), "{}", e.detail);
    assert_eq!(
        Outcome::decode(b"\xff\xff").unwrap_err().reason,
        "undecodable"
    );
}

#[test]
fn an_owner_without_an_id_is_no_owner() {
    let mut o = proto();
    o.owner = Some(CrmUser::default());
    assert_eq!(Outcome::try_from(o).unwrap().owner, None);
}

#[test]
fn the_activity_id_is_stable_per_workflow_and_record() {
    let mut other = outcome();
    other.outcome_id = "out-2".into();
    assert_eq!(outcome().activity_id(), other.activity_id());
    other.record_id = "006B".into();
    assert_ne!(outcome().activity_id(), other.activity_id());
}

#[test]
fn an_identity_is_written_only_when_the_event_adds_to_it() {
    let o = outcome();
    let named = Identity {
        user_id: None,
        named: true,
        has_email: false,
        held: false,
    };
    assert!(Identity::needs_write(None, &o, "005A"));
    // The event names Ada but carries no email: nothing to add.
    assert!(!Identity::needs_write(Some(&named), &o, "005A"));
    let anonymous = Identity {
        named: false,
        ..named
    };
    assert!(Identity::needs_write(Some(&anonymous), &o, "005A"));
    // What the event says of another CRM user is not this one's name.
    assert!(!Identity::needs_write(Some(&anonymous), &o, "005B"));
    assert!(Identity::after_write(Some(&anonymous), &o, "005A").named);
    assert!(!Identity::after_write(None, &o, "005A").has_email);
}

#[test]
fn only_an_unmapped_identity_is_locked() {
    let o = outcome();
    let mapped = Identity {
        user_id: Some(Uuid::from_u128(7)),
        named: false,
        has_email: false,
        held: false,
    };
    assert!(!Identity::locks_for(Some(&mapped), true, &o, "005A"));
    assert!(Identity::locks_for(None, false, &o, "005A"));
    let waiting = Identity {
        user_id: None,
        named: true,
        ..mapped
    };
    assert!(Identity::locks_for(Some(&waiting), true, &o, "005A"));
    assert!(!Identity::locks_for(Some(&waiting), false, &o, "005A"));
}

#[test]
fn an_identity_an_admin_unmapped_is_not_provisioned() {
    let held = Identity {
        user_id: None,
        named: true,
        has_email: true,
        held: true,
    };
    assert!(!Identity::provisions(Some(&held), true));
    assert!(Identity::provisions(None, true));
    assert!(!Identity::provisions(None, false));
}

#[test]
fn a_late_change_never_overwrites_a_newer_one() {
    let recorded = |seconds| {
        Some(Current {
            recorded: true,
            last_event_at: at(seconds),
        })
    };
    assert_eq!(
        Change::of(Kind::Matched, recorded(10), at(5)),
        Change::Stale
    );
    assert_eq!(
        Change::of(Kind::Retracted, recorded(10), at(5)),
        Change::Stale
    );
    // The same instant again is a replay of the last change: applied, idempotently.
    assert_eq!(
        Change::of(Kind::Matched, recorded(10), at(10)),
        Change::Updated
    );
    assert!(!Change::Stale.writes());
}

#[test]
fn retractions_are_told_apart() {
    let retracted = Some(Current {
        recorded: false,
        last_event_at: at(0),
    });
    let recorded = Some(Current {
        recorded: true,
        last_event_at: at(0),
    });
    assert_eq!(
        Change::of(Kind::Retracted, None, at(1)),
        Change::NothingToRetract
    );
    assert_eq!(
        Change::of(Kind::Retracted, recorded, at(1)),
        Change::Retracted
    );
    assert_eq!(
        Change::of(Kind::Retracted, retracted, at(1)),
        Change::AlreadyRetracted
    );
    assert_eq!(Change::of(Kind::Matched, None, at(1)), Change::Recorded);
    assert_eq!(Change::of(Kind::Matched, retracted, at(1)), Change::Updated);
    // Retracting again remembers the newer change, but downstream heard of it already.
    assert!(Change::AlreadyRetracted.writes());
    assert!(!Change::AlreadyRetracted.announced());
    assert_eq!(
        Change::NothingToRetract.retraction_result(),
        "nothing_to_retract"
    );
}
