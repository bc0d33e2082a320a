//! The generic endpoint: `CrmEvent`s in the protobuf JSON mapping (one object, or an array of up
//! to [`MAX_EVENTS`]), signed with `X-Crm-Sync-Signature` ([`signature`]), for sources without a
//! connector of their own.
//!
//! The sender names each event's delivery: `sourceDeliveryId` (else `eventId`) is the delivery
//! id the event id is derived from, so a resent event deduplicates. `integrationId` and `crm`
//! are taken from the endpoint (an `integrationId` naming another integration is refused);
//! `receivedAt` is set on arrival and `occurredAt` defaults to it.

pub mod signature;

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind};
use prost_reflect::DeserializeOptions;
use serde_json::Value;
use uuid::Uuid;

use crate::event::{self, event_id, timestamp};

pub const MAX_EVENTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenericError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the body holds no events")]
    Empty,
    #[error("the body holds {0} events; at most {MAX_EVENTS} are accepted per request")]
    TooMany(usize),
    #[error("event {index}: {problem}")]
    Invalid { index: usize, problem: String },
}

fn invalid(index: usize, problem: impl Into<String>) -> GenericError {
    GenericError::Invalid {
        index,
        problem: problem.into(),
    }
}

/// Parses and completes the events; `crm_account_id` is the integration's account, which events
/// that name none get.
pub fn to_events(
    integration_id: Uuid,
    crm_account_id: &str,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<CrmEvent>, GenericError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| GenericError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    if items.is_empty() {
        return Err(GenericError::Empty);
    }
    if items.len() > MAX_EVENTS {
        return Err(GenericError::TooMany(items.len()));
    }
    let descriptor = crm_sync_proto::descriptor_pool()
        .get_message_by_name("crm_sync.v1.CrmEvent")
        .ok_or_else(|| invalid(1, "the CrmEvent schema is unavailable"))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let index = i + 1;
            let message = prost_reflect::DynamicMessage::deserialize_with_options(
                descriptor.clone(),
                item,
                &DeserializeOptions::new(),
            )
            .map_err(|e| invalid(index, e.to_string()))?;
            let mut e: CrmEvent = message
                .transcode_to()
                .map_err(|e| invalid(index, e.to_string()))?;
            complete(index, integration_id, crm_account_id, &mut e, now)?;
            Ok(e)
        })
        .collect()
}

fn complete(
    index: usize,
    integration_id: Uuid,
    crm_account_id: &str,
    e: &mut CrmEvent,
    now: DateTime<Utc>,
) -> Result<(), GenericError> {
    let delivery = [&e.source_delivery_id, &e.event_id]
        .into_iter()
        .map(|s| s.trim())
        .find(|s| !s.is_empty())
        .ok_or_else(|| invalid(index, "name the delivery: sourceDeliveryId or eventId"))?
        .to_owned();
    if delivery.len() > 255 {
        return Err(invalid(
            index,
            "the delivery id is longer than 255 characters",
        ));
    }
    if !e.integration_id.is_empty() && e.integration_id != integration_id.to_string() {
        return Err(invalid(
            index,
            format!(
                "integrationId {} is not this endpoint's integration",
                e.integration_id
            ),
        ));
    }
    if !event::valid_object_type(&e.object_type) {
        return Err(invalid(
            index,
            format!(
                "objectType {:?} is not an object name (letters, digits, _ . -)",
                e.object_type
            ),
        ));
    }
    if !event::valid_record_id(&e.record_id) {
        return Err(invalid(
            index,
            format!("recordId {:?} is not a record id", e.record_id),
        ));
    }
    if e.change_type() == ChangeType::Unspecified {
        return Err(invalid(
            index,
            "changeType must be CHANGE_TYPE_CREATED, CHANGE_TYPE_UPDATED or CHANGE_TYPE_DELETED",
        ));
    }
    if e.crm_account_id.is_empty() {
        e.crm_account_id = crm_account_id.to_owned();
    }
    // A sender may name a whole request with one delivery id: the record makes each event's id
    // its own, so that events sharing a delivery are not taken for duplicates of each other.
    e.event_id = event_id(
        "generic",
        integration_id,
        &[&delivery, &e.object_type, &e.record_id],
    )
    .to_string();
    e.source_delivery_id = delivery;
    e.integration_id = integration_id.to_string();
    e.crm = CrmKind::Generic as i32;
    e.received_at = Some(timestamp(now));
    if e.occurred_at.is_none() {
        e.occurred_at = e.received_at;
    }
    if e.owner
        .as_ref()
        .is_some_and(|o| o.crm_user_id.trim().is_empty())
    {
        e.owner = None;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crm_sync_proto::v1::field_value::Kind;

    use super::*;

    fn now() -> DateTime<Utc> {
        event::parse_datetime("2026-12-01T00:00:00Z").unwrap()
    }

    #[test]
    fn the_json_form_of_crm_event_is_accepted_and_completed() {
        let iid = Uuid::new_v4();
        let body = r#"{"eventId": "evt-1", "objectType": "invoice", "recordId": "INV-7",
            "changeType": "CHANGE_TYPE_CREATED", "occurredAt": "2026-11-20T15:04:05Z",
            "fields": {"total": {"number": "99.50"}, "status": {"text": "paid"}},
            "owner": {"crmUserId": "u-1", "name": "Ada Lovelace", "email": "ada@example.com"}}"#;
        let events = to_events(iid, "acct-1", body.as_bytes(), now()).unwrap();
        let e = &events[0];
        assert_eq!(
            e.event_id,
            event_id("generic", iid, &["evt-1", "invoice", "INV-7"]).to_string()
        );
        assert_eq!(e.source_delivery_id, "evt-1");
        assert_eq!(e.integration_id, iid.to_string());
        assert_eq!(e.crm, CrmKind::Generic as i32);
        assert_eq!(e.crm_account_id, "acct-1");
        assert_eq!(e.fields["total"].kind, Some(Kind::Number("99.50".into())));
        assert_eq!(e.owner.as_ref().unwrap().email, "ada@example.com");
        assert_eq!(e.occurred_at.as_ref().unwrap().seconds, 1_795_187_045);
        assert_eq!(e.received_at, Some(timestamp(now())));
    }

    #[test]
    fn events_that_cannot_be_placed_are_refused_naming_the_event() {
        let iid = Uuid::new_v4();
        let ok = r#"{"eventId": "a", "objectType": "deal", "recordId": "1", "changeType": "CHANGE_TYPE_UPDATED"}"#;
        for (body, expected) in [
            ("nope".to_owned(), "not JSON".to_owned()),
            ("[]".to_owned(), "no events".to_owned()),
            (
                format!(
                    "[{ok}, {{\"objectType\": \"deal\", \"recordId\": \"1\", \"changeType\": \"CHANGE_TYPE_UPDATED\"}}]"
                ),
                "event 2: name the delivery".to_owned(),
            ),
            (ok.replace("deal", "deal/x"), "objectType".to_owned()),
            (ok.replace("\"1\"", "\"\""), "recordId".to_owned()),
            (
                ok.replace("CHANGE_TYPE_UPDATED", "CHANGE_TYPE_UNSPECIFIED"),
                "changeType must be".to_owned(),
            ),
            (
                ok.replace("\"eventId\"", "\"integrationId\": \"x\", \"eventId\""),
                "integrationId x".to_owned(),
            ),
            (
                ok.replace("objectType", "objectKind"),
                "event 1:".to_owned(),
            ),
        ] {
            let err = to_events(iid, "", body.as_bytes(), now())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&expected), "{body}: {err}");
        }
    }
}
