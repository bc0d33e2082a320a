//! The messages the evaluator writes: outcomes, hydration requests, and the record's state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crm_sync_kafka::OutgoingMessage;
use crm_sync_proto::v1::{CrmEvent, HydrationRequest, OutcomeKind, RecordState};
use crm_sync_proto::view::{CrmUserRef, OutcomeRef};
use crm_sync_proto::{Message, Timestamp};
use uuid::Uuid;

use crate::judge::Change;
use crate::record::event_time;

/// Namespace of outcome ids: v5(event id, workflow id), identical on every replay.
const OUTCOME_NAMESPACE: Uuid = Uuid::from_u128(0x0c8e_5d1b_9a4f_4b7e_8c21_7f3a_6d5e_4b2c);
/// Namespace of hydration request ids: v5(record key, event id).
const HYDRATION_NAMESPACE: Uuid = Uuid::from_u128(0x5b1e_2a47_7d0c_4e39_9f61_2c8a_0e4d_71b3);

/// Where the evaluator's outputs go (shared by every record written there).
#[derive(Debug, Clone)]
pub struct Topics {
    pub matches: Arc<str>,
    pub records: Arc<str>,
    pub hydrations: Arc<str>,
}

fn outcome_id(event_id: &str, workflow_id: &str) -> String {
    text(&v5(
        &OUTCOME_NAMESPACE,
        &[event_id.as_bytes(), b"\x1f", workflow_id.as_bytes()],
    ))
}

/// `Uuid::new_v5` of the concatenated `name`, hashed by the `sha1` crate, which uses the CPU's
/// SHA instructions where it has them: the portable SHA-1 behind `new_v5` was 3.5 % of the
/// evaluator's instructions (one id per outcome).
fn v5(namespace: &Uuid, name: &[&[u8]]) -> Uuid {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(namespace.as_bytes());
    for part in name {
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// A UUID's usual text, without going through `fmt`: several are written per outcome.
fn text(id: &Uuid) -> String {
    id.hyphenated()
        .encode_lower(&mut Uuid::encode_buffer())
        .to_owned()
}

/// The CRM user, with the name and email the record's state has if it is the same user.
fn owner<'a>(state: &'a RecordState, crm_user_id: &'a str) -> Option<CrmUserRef<'a>> {
    if crm_user_id.is_empty() {
        return None;
    }
    let same = state
        .owner
        .as_ref()
        .filter(|o| o.crm_user_id == crm_user_id);
    Some(CrmUserRef {
        crm_user_id,
        name: same.map_or("", |o| o.name.as_str()),
        email: same.map_or("", |o| o.email.as_str()),
    })
}

/// An outcome as written: its kind, its id (the record's event id), and its bytes.
pub struct Outcome {
    pub kind: OutcomeKind,
    pub id: String,
    pub payload: Vec<u8>,
}

/// The outcome of a change, encoded from the event, the state and the workflow where their
/// strings are (`company_id`: the company's id as text, the same for all of an event's).
pub fn outcome(
    event: &CrmEvent,
    state: &RecordState,
    company_id: &str,
    change: &Change<'_>,
) -> Outcome {
    let mut buffer = Uuid::encode_buffer();
    let (workflow_id, activity_type, kind, owner_id, value, activity_date) = match change {
        Change::Matched { workflow, now } => (
            &*workflow.id.hyphenated().encode_lower(&mut buffer),
            workflow.spec.activity_type.as_str(),
            OutcomeKind::Matched,
            now.owner_crm_user_id.as_str(),
            now.value.as_str(),
            now.activity_date,
        ),
        Change::Retracted {
            workflow,
            owner_crm_user_id,
        } => (
            &*workflow.id.hyphenated().encode_lower(&mut buffer),
            workflow.spec.activity_type.as_str(),
            OutcomeKind::Retracted,
            owner_crm_user_id.as_str(),
            "0",
            None,
        ),
        // The workflow is not at hand: the activity retracted keeps its own type.
        Change::RetractedInactive {
            workflow_id,
            owner_crm_user_id,
        } => (
            workflow_id.as_str(),
            "",
            OutcomeKind::Retracted,
            owner_crm_user_id.as_str(),
            "0",
            None,
        ),
    };
    let id = outcome_id(&event.event_id, workflow_id);
    let payload = OutcomeRef {
        outcome_id: &id,
        event_id: &event.event_id,
        company_id,
        integration_id: &event.integration_id,
        workflow_id,
        kind,
        object_type: &event.object_type,
        record_id: &event.record_id,
        owner: owner(state, owner_id),
        activity_type,
        value,
        activity_date,
        occurred_at: Some(event_time(event)),
        crm: event.crm(),
    }
    .encode();
    Outcome { kind, id, payload }
}

pub fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
    }
}

/// True when the record was never asked for, or last longer ago than `interval`.
pub fn hydration_due(state: &RecordState, now: &Timestamp, interval: Duration) -> bool {
    state
        .hydration_requested_at
        .is_none_or(|at| now.seconds - at.seconds >= interval.as_secs() as i64)
}

pub fn hydration_request(
    event: &CrmEvent,
    key: &str,
    missing_fields: Vec<String>,
    workflow_ids: Vec<String>,
    now: Timestamp,
) -> HydrationRequest {
    let mut request = HydrationRequest {
        request_id: text(&v5(
            &HYDRATION_NAMESPACE,
            &[key.as_bytes(), b"\x1f", event.event_id.as_bytes()],
        )),
        integration_id: event.integration_id.clone(),
        object_type: event.object_type.clone(),
        record_id: event.record_id.clone(),
        missing_fields,
        workflow_ids,
        event_id: event.event_id.clone(),
        requested_at: Some(now),
        ..Default::default()
    };
    request.set_crm(event.crm());
    request
}

pub fn message(
    topic: &Arc<str>,
    key: &Arc<str>,
    payload: Vec<u8>,
    event_id: String,
    partition: Option<i32>,
) -> OutgoingMessage {
    OutgoingMessage {
        topic: Arc::clone(topic),
        key: Arc::clone(key),
        payload,
        event_id,
        headers: Vec::new(),
        partition,
    }
}

pub fn encoded<M: Message>(m: &M) -> Vec<u8> {
    m.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use crm_sync_store::workflows::StoredWorkflow;

    use super::*;

    #[test]
    fn ids_are_the_name_based_uuids_of_the_concatenated_name() {
        let long = "x".repeat(150);
        for parts in [
            vec![],
            vec!["a"],
            vec!["evt-1", "\u{1f}", "w"],
            vec![&long[..], "y"],
        ] {
            let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
            assert_eq!(
                v5(&HYDRATION_NAMESPACE, &bytes),
                Uuid::new_v5(&HYDRATION_NAMESPACE, parts.concat().as_bytes()),
                "{parts:?}"
            );
        }
    }

    use crm_sync_proto::v1::{CrmKind, CrmUser, WorkflowMatchState, WorkflowOutcome};

    fn event() -> CrmEvent {
        let mut event = CrmEvent {
            event_id: "evt-1".into(),
            integration_id: "i-1".into(),
            object_type: "deal".into(),
            record_id: "42".into(),
            occurred_at: Some(Timestamp {
                seconds: 1_764_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        event.set_crm(CrmKind::Hubspot);
        event
    }

    /// What every outcome of `event()` by `workflow` says, whatever was decided.
    fn of_event(workflow: &StoredWorkflow, company: &str) -> WorkflowOutcome {
        WorkflowOutcome {
            outcome_id: outcome_id("evt-1", &text(&workflow.id)),
            event_id: "evt-1".into(),
            company_id: company.to_owned(),
            integration_id: "i-1".into(),
            workflow_id: text(&workflow.id),
            object_type: "deal".into(),
            record_id: "42".into(),
            activity_type: "deal_won".into(),
            occurred_at: event().occurred_at,
            crm: CrmKind::Hubspot as i32,
            ..Default::default()
        }
    }

    #[test]
    fn an_outcome_carries_the_event_the_workflow_and_what_was_decided() {
        let workflow = crate::judge::tests::won(serde_json::json!({"all": []}));
        let ada = CrmUser {
            crm_user_id: "u-1".into(),
            name: "Ada".into(),
            email: "ada@example.com".into(),
        };
        let state = RecordState {
            owner: Some(ada.clone()),
            ..Default::default()
        };
        let date = Some(Timestamp {
            seconds: 1_763_000_000,
            nanos: 0,
        });
        let matched = Change::Matched {
            workflow: &workflow,
            now: WorkflowMatchState {
                workflow_id: text(&workflow.id),
                value: "1250.5".into(),
                activity_date: date,
                owner_crm_user_id: "u-1".into(),
            },
        };
        let retracted = Change::Retracted {
            workflow: &workflow,
            owner_crm_user_id: "u-2".into(),
        };
        let company = text(&Uuid::from_u128(1));
        let base = of_event(&workflow, &company);
        for (change, kind, expected) in [
            (
                &matched,
                OutcomeKind::Matched,
                WorkflowOutcome {
                    kind: OutcomeKind::Matched as i32,
                    owner: Some(ada.clone()),
                    value: "1250.5".into(),
                    activity_date: date,
                    ..base.clone()
                },
            ),
            (
                &retracted,
                OutcomeKind::Retracted,
                WorkflowOutcome {
                    kind: OutcomeKind::Retracted as i32,
                    // Another user than the record's owner: no name or email to give.
                    owner: Some(CrmUser {
                        crm_user_id: "u-2".into(),
                        ..Default::default()
                    }),
                    value: "0".into(),
                    ..base.clone()
                },
            ),
        ] {
            let out = outcome(&event(), &state, &company, change);
            assert_eq!((out.kind, &out.id), (kind, &expected.outcome_id));
            assert_eq!(
                WorkflowOutcome::decode(out.payload.as_slice()).unwrap(),
                expected
            );
        }
    }

    #[test]
    fn a_retraction_of_an_inactive_workflows_match_names_the_workflow_and_no_type() {
        let workflow = crate::judge::tests::won(serde_json::json!({"all": []}));
        let company = text(&Uuid::from_u128(1));
        let change = Change::RetractedInactive {
            workflow_id: text(&workflow.id),
            owner_crm_user_id: "u-2".into(),
        };
        let out = outcome(&event(), &RecordState::default(), &company, &change);
        let expected = WorkflowOutcome {
            kind: OutcomeKind::Retracted as i32,
            owner: Some(CrmUser {
                crm_user_id: "u-2".into(),
                ..Default::default()
            }),
            value: "0".into(),
            activity_type: String::new(),
            ..of_event(&workflow, &company)
        };
        assert_eq!(out.id, expected.outcome_id);
        assert_eq!(
            WorkflowOutcome::decode(out.payload.as_slice()).unwrap(),
            expected
        );
    }

    #[test]
    fn outcome_ids_stay_what_earlier_versions_made_them() {
        // Replays after an upgrade must find the outcomes they already wrote.
        let workflow = Uuid::parse_str("6a2f0b0e-1c1d-4e2f-8a3b-4c5d6e7f8091").unwrap();
        assert_eq!(
            outcome_id("evt-1", &text(&workflow)),
            "7e45fbfb-c36c-5188-bb29-0e92c8bb435c"
        );
    }
}
