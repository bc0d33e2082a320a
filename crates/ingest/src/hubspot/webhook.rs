//! HubSpot webhook batches: a JSON array of up to [`MAX_EVENTS`] events, each naming one object
//! and what happened to it (`deal.creation`, `deal.propertyChange`, `deal.deletion`,
//! `deal.merge`, `deal.restore`, … or the generic `object.*` form with `objectTypeId`).
//!
//! HubSpot sends little: a property change carries that one property's new value, creations and
//! deletions carry no properties at all. The owner is known only from changes of
//! `hubspot_owner_id`; ingest remembers it for the record's later events.
//!
//! - creation, restore → CREATED; propertyChange → UPDATED with that property (an empty value,
//!   HubSpot's way of clearing a property, is null); deletion, privacyDeletion → DELETED;
//! - merge → UPDATED for the surviving object (`newObjectId`, else `primaryObjectId`), DELETED
//!   for every object merged away;
//! - association changes and anything else → nothing (acknowledged, so HubSpot does not retry).
//!
//! The delivery id is the event's `eventId` (with its `subscriptionId`, since HubSpot does not
//! promise `eventId` alone is unique): a redelivery (`attemptNumber` > 0) gets the same event ids.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use crate::event::{self, event_id, id_text, timestamp};

/// HubSpot sends at most 100 events per request.
pub const MAX_EVENTS: usize = 100;
/// The deal, contact and company property naming the record's owner.
pub const OWNER_PROPERTY: &str = "hubspot_owner_id";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event_id: Value,
    #[serde(default)]
    pub subscription_id: Option<Value>,
    pub portal_id: Value,
    #[serde(default)]
    pub app_id: Option<Value>,
    #[serde(default)]
    pub occurred_at: Option<i64>,
    pub subscription_type: String,
    #[serde(default)]
    pub attempt_number: Option<i64>,
    #[serde(default)]
    pub object_id: Option<Value>,
    #[serde(default)]
    pub object_type_id: Option<String>,
    #[serde(default)]
    pub property_name: Option<String>,
    #[serde(default)]
    pub property_value: Option<Value>,
    #[serde(default)]
    pub change_source: Option<String>,
    #[serde(default)]
    pub primary_object_id: Option<Value>,
    #[serde(default)]
    pub merged_object_ids: Option<Vec<Value>>,
    #[serde(default)]
    pub new_object_id: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubSpotError {
    #[error("the body is not a JSON array of HubSpot events: {0}")]
    NotJson(String),
    #[error("the batch holds no events")]
    Empty,
    #[error("the batch holds {0} events; HubSpot sends at most {MAX_EVENTS}")]
    TooMany(usize),
    #[error("event {index}: {problem}")]
    Invalid { index: usize, problem: String },
    #[error("event {index} comes from portal {portal}, another than the batch's first ({first})")]
    MixedPortals {
        index: usize,
        portal: String,
        first: String,
    },
}

fn invalid(index: usize, problem: impl Into<String>) -> HubSpotError {
    HubSpotError::Invalid {
        index,
        problem: problem.into(),
    }
}

/// A parsed batch and the portal (HubSpot account) it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub portal_id: String,
    pub events: Vec<Event>,
}

pub fn parse(body: &[u8]) -> Result<Batch, HubSpotError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| HubSpotError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        single @ Value::Object(_) => vec![single],
        _ => return Err(HubSpotError::NotJson("expected an array".into())),
    };
    if items.is_empty() {
        return Err(HubSpotError::Empty);
    }
    if items.len() > MAX_EVENTS {
        return Err(HubSpotError::TooMany(items.len()));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut portal: Option<String> = None;
    for (i, item) in items.into_iter().enumerate() {
        let index = i + 1;
        let event: Event =
            serde_json::from_value(item).map_err(|e| invalid(index, e.to_string()))?;
        if id_text(&event.event_id).is_none() {
            return Err(invalid(index, "eventId is missing"));
        }
        let this_portal =
            id_text(&event.portal_id).ok_or_else(|| invalid(index, "portalId is missing"))?;
        match &portal {
            None => portal = Some(this_portal),
            Some(first) if *first != this_portal => {
                return Err(HubSpotError::MixedPortals {
                    index,
                    portal: this_portal,
                    first: first.clone(),
                });
            }
            Some(_) => {}
        }
        if !event.subscription_type.contains('.') {
            return Err(invalid(
                index,
                format!(
                    "subscriptionType {:?} is not <object>.<event>",
                    event.subscription_type
                ),
            ));
        }
        if let Some(ms) = event.occurred_at
            && event::from_millis(ms).is_none()
        {
            return Err(invalid(index, "occurredAt is out of range"));
        }
        events.push(event);
    }
    Ok(Batch {
        portal_id: portal.unwrap_or_default(),
        events,
    })
}

/// HubSpot's standard object type ids, as sent with `object.*` subscriptions.
fn object_name(type_id: &str) -> Option<&'static str> {
    Some(match type_id {
        "0-1" => "contact",
        "0-2" => "company",
        "0-3" => "deal",
        "0-5" => "ticket",
        "0-7" => "product",
        "0-8" => "line_item",
        "0-14" => "quote",
        "0-27" => "task",
        "0-46" => "note",
        "0-47" => "meeting",
        "0-48" => "call",
        "0-49" => "email",
        "0-136" => "lead",
        _ => return None,
    })
}

/// The object and the action of a subscription type.
fn split(event: &Event, index: usize) -> Result<(String, &str), HubSpotError> {
    let (object, action) = event
        .subscription_type
        .split_once('.')
        .unwrap_or((event.subscription_type.as_str(), ""));
    let object = if object == "object" {
        let type_id = event
            .object_type_id
            .as_deref()
            .ok_or_else(|| invalid(index, "an object.* event has no objectTypeId"))?;
        match object_name(type_id) {
            Some(name) => name.to_owned(),
            // Custom objects: `2-1234567` is not a name, but it is stable.
            None => format!("object_{type_id}"),
        }
    } else {
        object.to_owned()
    };
    if !event::valid_object_type(&object) {
        return Err(invalid(index, format!("{object:?} is not an object name")));
    }
    Ok((object, action))
}

fn record(value: &Option<Value>, index: usize, what: &str) -> Result<String, HubSpotError> {
    value
        .as_ref()
        .and_then(id_text)
        .filter(|id| event::valid_record_id(id))
        .ok_or_else(|| invalid(index, format!("{what} is missing or not an id")))
}

/// The batch's events as `CrmEvent`s, in order (a merge may produce several).
pub fn to_events(
    integration_id: Uuid,
    batch: &Batch,
    now: DateTime<Utc>,
) -> Result<Vec<CrmEvent>, HubSpotError> {
    let mut out = Vec::with_capacity(batch.events.len());
    for (i, e) in batch.events.iter().enumerate() {
        let index = i + 1;
        let (object, action) = split(e, index)?;
        let delivery = id_text(&e.event_id).unwrap_or_default();
        let subscription = e
            .subscription_id
            .as_ref()
            .and_then(id_text)
            .unwrap_or_default();
        let occurred_at = e.occurred_at.and_then(event::from_millis).unwrap_or(now);
        for change in changes(e, index, action)? {
            out.push(CrmEvent {
                event_id: event_id(
                    "hubspot",
                    integration_id,
                    &[&delivery, &subscription, &change.record_id],
                )
                .to_string(),
                integration_id: integration_id.to_string(),
                crm: CrmKind::Hubspot as i32,
                object_type: object.clone(),
                record_id: change.record_id,
                change_type: change.change as i32,
                fields: change.fields.into_iter().collect(),
                previous_fields: Default::default(),
                owner: change.owner,
                occurred_at: Some(timestamp(occurred_at)),
                received_at: Some(timestamp(now)),
                source_delivery_id: delivery.clone(),
                crm_account_id: batch.portal_id.clone(),
                source_change_type: e.subscription_type.clone(),
                full_snapshot: false,
                fields_omitted: false,
            });
        }
    }
    Ok(out)
}

/// What one webhook event says about one record.
struct RecordChange {
    record_id: String,
    change: ChangeType,
    fields: Vec<(String, FieldValue)>,
    owner: Option<CrmUser>,
}

impl RecordChange {
    fn bare(record_id: String, change: ChangeType) -> RecordChange {
        RecordChange {
            record_id,
            change,
            fields: Vec::new(),
            owner: None,
        }
    }
}

/// The records an event changes; none for an action crm-sync does not follow.
fn changes(e: &Event, index: usize, action: &str) -> Result<Vec<RecordChange>, HubSpotError> {
    let object_id = || record(&e.object_id, index, "objectId");
    Ok(match action {
        "creation" | "restore" => vec![RecordChange::bare(object_id()?, ChangeType::Created)],
        "deletion" | "privacyDeletion" => {
            vec![RecordChange::bare(object_id()?, ChangeType::Deleted)]
        }
        "propertyChange" => vec![property_change(e, index)?],
        "merge" => merge(e, index)?,
        _ => Vec::new(),
    })
}

/// One property's new value (the owner's id when the property is the owner).
fn property_change(e: &Event, index: usize) -> Result<RecordChange, HubSpotError> {
    let name = e
        .property_name
        .as_deref()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| invalid(index, "a propertyChange event has no propertyName"))?;
    let value = match &e.property_value {
        None | Some(Value::Null) => event::null(),
        Some(Value::String(s)) if s.is_empty() => event::null(),
        Some(Value::String(s)) => event::text(s.clone()),
        Some(other) => event::json_field(other),
    };
    let owner = (name == OWNER_PROPERTY)
        .then(|| e.property_value.as_ref().and_then(id_text))
        .flatten()
        .map(|id| CrmUser {
            crm_user_id: id,
            ..CrmUser::default()
        });
    Ok(RecordChange {
        record_id: record(&e.object_id, index, "objectId")?,
        change: ChangeType::Updated,
        fields: vec![(name.to_owned(), value)],
        owner,
    })
}

/// The surviving record is updated; the merged ones (and an old primary id) are gone.
fn merge(e: &Event, index: usize) -> Result<Vec<RecordChange>, HubSpotError> {
    let survivor = match (&e.new_object_id, &e.primary_object_id, &e.object_id) {
        (Some(_), _, _) => record(&e.new_object_id, index, "newObjectId")?,
        (None, Some(_), _) => record(&e.primary_object_id, index, "primaryObjectId")?,
        _ => record(&e.object_id, index, "objectId")?,
    };
    let mut gone = BTreeSet::new();
    for id in e.merged_object_ids.iter().flatten() {
        gone.insert(
            id_text(id)
                .filter(|id| event::valid_record_id(id))
                .ok_or_else(|| invalid(index, "mergedObjectIds holds a non-id"))?,
        );
    }
    if let Some(primary) = e.primary_object_id.as_ref().and_then(id_text) {
        // A merge may give the result a new id: the old primary is gone too.
        gone.insert(primary);
    }
    gone.remove(&survivor);
    let mut out = vec![RecordChange::bare(survivor, ChangeType::Updated)];
    out.extend(
        gone.into_iter()
            .map(|id| RecordChange::bare(id, ChangeType::Deleted)),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crm_sync_proto::v1::field_value::Kind;

    use super::*;

    /// The example batch of HubSpot's webhooks documentation.
    const DOC_BATCH: &str = include_str!("testdata/docs-batch.json");
    /// The example of HubSpot's documentation for request validation (v1).
    const DOC_VALIDATION: &str = r#"[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM","changeFlag":"NEW","appId":54321}]"#;

    fn now() -> DateTime<Utc> {
        event::parse_datetime("2026-12-01T00:00:00Z").unwrap()
    }

    #[test]
    fn the_documented_batch_maps_event_by_event() {
        let batch = parse(DOC_BATCH.as_bytes()).unwrap();
        assert_eq!(batch.portal_id, "33");
        let iid = Uuid::new_v4();
        let events = to_events(iid, &batch, now()).unwrap();
        assert_eq!(events.len(), 2);
        let change = &events[0];
        assert_eq!(change.object_type, "contact");
        assert_eq!(change.record_id, "1246965");
        assert_eq!(change.change_type, ChangeType::Updated as i32);
        assert_eq!(
            change.fields["lifecyclestage"].kind,
            Some(Kind::Text("subscriber".into()))
        );
        assert_eq!(change.source_delivery_id, "3816279340");
        assert_eq!(change.crm_account_id, "33");
        assert_eq!(change.source_change_type, "contact.propertyChange");
        assert_eq!(change.occurred_at.as_ref().unwrap().seconds, 1_462_216_307);
        assert_eq!(
            change.event_id,
            event_id("hubspot", iid, &["3816279340", "25", "1246965"]).to_string()
        );
        let created = &events[1];
        assert_eq!(created.change_type, ChangeType::Created as i32);
        assert!(created.fields.is_empty());
        assert_eq!(created.record_id, "1246978");

        let single = parse(DOC_VALIDATION.as_bytes()).unwrap();
        assert_eq!(single.portal_id, "62515");
        let e = &to_events(iid, &single, now()).unwrap()[0];
        assert_eq!(
            (e.object_type.as_str(), e.record_id.as_str()),
            ("contact", "123")
        );
    }

    #[test]
    fn deal_events_of_every_kind() {
        let body = r#"[
          {"eventId": 10, "subscriptionId": 1, "portalId": 62515, "occurredAt": 1700000000000, "subscriptionType": "deal.creation", "attemptNumber": 0, "objectId": 501, "changeSource": "CRM_UI"},
          {"eventId": 11, "subscriptionId": 2, "portalId": 62515, "occurredAt": 1700000000001, "subscriptionType": "deal.propertyChange", "attemptNumber": 0, "objectId": 501, "propertyName": "hubspot_owner_id", "propertyValue": "41629779", "changeSource": "CRM_UI"},
          {"eventId": 12, "subscriptionId": 3, "portalId": 62515, "occurredAt": 1700000000002, "subscriptionType": "deal.propertyChange", "attemptNumber": 1, "objectId": 501, "propertyName": "dealstage", "propertyValue": "closedwon", "changeSource": "CRM_UI"},
          {"eventId": 13, "subscriptionId": 3, "portalId": 62515, "occurredAt": 1700000000003, "subscriptionType": "deal.propertyChange", "attemptNumber": 0, "objectId": 502, "propertyName": "amount", "propertyValue": ""},
          {"eventId": 14, "subscriptionId": 4, "portalId": 62515, "occurredAt": 1700000000004, "subscriptionType": "deal.deletion", "attemptNumber": 0, "objectId": 503},
          {"eventId": 15, "subscriptionId": 5, "portalId": 62515, "occurredAt": 1700000000005, "subscriptionType": "deal.merge", "attemptNumber": 0, "objectId": 504, "primaryObjectId": 504, "mergedObjectIds": [505, 506], "newObjectId": 507, "numberOfPropertiesMoved": 3},
          {"eventId": 16, "subscriptionId": 6, "portalId": 62515, "occurredAt": 1700000000006, "subscriptionType": "deal.restore", "attemptNumber": 0, "objectId": 503},
          {"eventId": 17, "subscriptionId": 7, "portalId": 62515, "occurredAt": 1700000000007, "subscriptionType": "deal.associationChange", "fromObjectId": 501, "toObjectId": 9, "associationType": "DEAL_TO_CONTACT"},
          {"eventId": 18, "subscriptionId": 8, "portalId": 62515, "occurredAt": 1700000000008, "subscriptionType": "object.propertyChange", "objectTypeId": "0-3", "objectId": 508, "propertyName": "dealstage", "propertyValue": "closedwon"},
          {"eventId": 19, "subscriptionId": 9, "portalId": 62515, "occurredAt": 1700000000009, "subscriptionType": "object.creation", "objectTypeId": "2-3508482", "objectId": 9}
        ]"#;
        let events = to_events(Uuid::nil(), &parse(body.as_bytes()).unwrap(), now()).unwrap();
        let summary: Vec<(&str, &str, i32)> = events
            .iter()
            .map(|e| (e.object_type.as_str(), e.record_id.as_str(), e.change_type))
            .collect();
        let (c, u, d) = (
            ChangeType::Created as i32,
            ChangeType::Updated as i32,
            ChangeType::Deleted as i32,
        );
        assert_eq!(
            summary,
            [
                ("deal", "501", c),
                ("deal", "501", u),
                ("deal", "501", u),
                ("deal", "502", u),
                ("deal", "503", d),
                ("deal", "507", u),
                ("deal", "504", d),
                ("deal", "505", d),
                ("deal", "506", d),
                ("deal", "503", c),
                ("deal", "508", u),
                ("object_2-3508482", "9", c),
            ]
        );
        assert_eq!(events[1].owner.as_ref().unwrap().crm_user_id, "41629779");
        assert_eq!(events[2].owner, None);
        assert_eq!(
            events[2].fields["dealstage"].kind,
            Some(Kind::Text("closedwon".into()))
        );
        assert_eq!(events[3].fields["amount"].kind, Some(Kind::NullValue(true)));
        assert_eq!(events[5].source_change_type, "deal.merge");
        let merge_ids: BTreeSet<&str> = events[5..9].iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(merge_ids.len(), 4, "one event id per record of a merge");
    }

    #[test]
    fn bad_batches_name_the_problem() {
        for (body, expected) in [
            ("{", "not a JSON array"),
            ("[]", "no events"),
            ("[1]", "event 1: "),
            (
                r#"[{"eventId": 1, "portalId": 1, "subscriptionType": "deal"}]"#,
                "is not <object>.<event>",
            ),
            (
                r#"[{"portalId": 1, "subscriptionType": "deal.creation", "objectId": 1}]"#,
                "event 1: missing field `eventId`",
            ),
            (
                r#"[{"eventId": 1, "portalId": 1, "subscriptionType": "deal.creation", "objectId": 1}, {"eventId": 2, "portalId": 2, "subscriptionType": "deal.creation", "objectId": 1}]"#,
                "event 2 comes from portal 2",
            ),
        ] {
            let err = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let no_object =
            parse(br#"[{"eventId": 1, "portalId": 1, "subscriptionType": "deal.creation"}]"#)
                .unwrap();
        let err = to_events(Uuid::nil(), &no_object, now())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "event 1: objectId is missing or not an id");
        let many = format!("[{}]", vec![r#"{"eventId":1}"#; 101].join(","));
        assert_eq!(
            parse(many.as_bytes()).unwrap_err(),
            HubSpotError::TooMany(101)
        );
    }
}
