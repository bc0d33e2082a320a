//! The messages the evaluator writes: outcomes, hydration requests, and the record's state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crm_sync_kafka::OutgoingMessage;
use crm_sync_proto::v1::{
    CrmEvent, CrmUser, HydrationRequest, OutcomeKind, RecordState, WorkflowMatchState,
    WorkflowOutcome,
};
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
fn owner(state: &RecordState, crm_user_id: &str) -> Option<CrmUser> {
    if crm_user_id.is_empty() {
        return None;
    }
    let same = state
        .owner
        .as_ref()
        .filter(|o| o.crm_user_id == crm_user_id);
    Some(CrmUser {
        crm_user_id: crm_user_id.to_owned(),
        name: same.map(|o| o.name.clone()).unwrap_or_default(),
        email: same.map(|o| o.email.clone()).unwrap_or_default(),
    })
}

pub fn outcome(
    event: &CrmEvent,
    state: &RecordState,
    company_id: Uuid,
    change: &Change<'_>,
) -> WorkflowOutcome {
    let (workflow, kind) = match change {
        Change::Matched { workflow, .. } => (*workflow, OutcomeKind::Matched),
        Change::Retracted { workflow, .. } => (*workflow, OutcomeKind::Retracted),
    };
    let workflow_id = text(&workflow.id);
    let mut outcome = WorkflowOutcome {
        outcome_id: outcome_id(&event.event_id, &workflow_id),
        event_id: event.event_id.clone(),
        company_id: text(&company_id),
        integration_id: event.integration_id.clone(),
        workflow_id,
        object_type: event.object_type.clone(),
        record_id: event.record_id.clone(),
        activity_type: workflow.spec.activity_type.clone(),
        occurred_at: Some(event_time(event)),
        ..Default::default()
    };
    outcome.set_crm(event.crm());
    match change {
        Change::Matched { now, .. } => fill_match(&mut outcome, state, now),
        Change::Retracted {
            owner_crm_user_id, ..
        } => {
            outcome.owner = owner(state, owner_crm_user_id);
            outcome.value = "0".to_owned();
        }
    }
    outcome.set_kind(kind);
    outcome
}

fn fill_match(outcome: &mut WorkflowOutcome, state: &RecordState, now: &WorkflowMatchState) {
    outcome.owner = owner(state, &now.owner_crm_user_id);
    outcome.value.clone_from(&now.value);
    outcome.activity_date = now.activity_date;
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
