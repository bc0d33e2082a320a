//! Pipedrive webhooks v2: one event per request, `{"meta": {…}, "data": {…}, "previous": {…}}`.
//!
//! - `meta.action` `create` → CREATED, `change` → UPDATED, `delete` → DELETED; `meta.entity` is
//!   the object (`deal`, `person`, `activity`, …) and `meta.entity_id` the record;
//! - `data` is the record as it now is (fields typed as Pipedrive sends them; `custom_fields`
//!   are flattened under their field key, a monetary one adding `<key>_currency`);
//! - `previous` holds the old values of the fields a change touched (→ `previous_fields`); a
//!   delete carries the record only there;
//! - `owner_id` names the responsible user;
//! - a merge arrives as a delete of the merged-away record (its `meta.merged_to_id` says where
//!   it went) and a change of the surviving one.
//!
//! The delivery id is `meta.id`; Pipedrive keeps it across retries (`meta.attempt`).

use chrono::{DateTime, NaiveDateTime, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::event::{self, event_id, id_text, json_field, timestamp};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Webhook {
    pub meta: Meta,
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub previous: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Meta {
    pub action: String,
    pub entity: String,
    #[serde(default)]
    pub entity_id: Option<Value>,
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default)]
    pub version: Option<Value>,
    #[serde(default)]
    pub company_id: Option<Value>,
    #[serde(default)]
    pub user_id: Option<Value>,
    #[serde(default)]
    pub timestamp: Option<Value>,
    #[serde(default)]
    pub attempt: Option<Value>,
    #[serde(default)]
    pub merged_to_id: Option<Value>,
    #[serde(default)]
    pub change_source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipedriveError {
    #[error("the body is not a Pipedrive webhook: {0}")]
    NotJson(String),
    #[error(
        "this is a Pipedrive webhooks v1 payload; create the webhook with version 2.0 (v1 is not accepted)"
    )]
    Version1,
    #[error("meta.version {0:?} is not 2.0")]
    Version(String),
    #[error("meta.action {0:?} is not create, change or delete")]
    Action(String),
    #[error("meta.entity {0:?} is not an object name")]
    Entity(String),
    #[error("meta.id (the event's id) is missing")]
    NoEventId,
    #[error("the record id is missing (meta.entity_id, data.id)")]
    NoRecordId,
    #[error("{0} is not a JSON object")]
    NotAnObject(&'static str),
}

pub fn parse(body: &[u8]) -> Result<Webhook, PipedriveError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| PipedriveError::NotJson(e.to_string()))?;
    let is_v1 = value.get("current").is_some()
        || value.get("v").and_then(Value::as_i64) == Some(1)
        || value.pointer("/meta/v").and_then(Value::as_i64) == Some(1);
    if is_v1 {
        return Err(PipedriveError::Version1);
    }
    let hook: Webhook =
        serde_json::from_value(value).map_err(|e| PipedriveError::NotJson(e.to_string()))?;
    if let Some(version) = &hook.meta.version {
        let v = id_text(version).unwrap_or_default();
        if v != "2.0" && v != "2" {
            return Err(PipedriveError::Version(v));
        }
    }
    if !matches!(hook.meta.action.as_str(), "create" | "change" | "delete") {
        return Err(PipedriveError::Action(hook.meta.action.clone()));
    }
    if !event::valid_object_type(&hook.meta.entity) {
        return Err(PipedriveError::Entity(hook.meta.entity.clone()));
    }
    if hook.meta.id.as_ref().and_then(id_text).is_none() {
        return Err(PipedriveError::NoEventId);
    }
    for (name, part) in [("data", &hook.data), ("previous", &hook.previous)] {
        if matches!(part, Some(v) if !v.is_null() && !v.is_object()) {
            return Err(PipedriveError::NotAnObject(name));
        }
    }
    if record_id(&hook).is_none() {
        return Err(PipedriveError::NoRecordId);
    }
    Ok(hook)
}

fn object(part: &Option<Value>) -> Option<&Map<String, Value>> {
    part.as_ref().and_then(Value::as_object)
}

fn record_id(hook: &Webhook) -> Option<String> {
    hook.meta
        .entity_id
        .as_ref()
        .and_then(id_text)
        .or_else(|| {
            object(&hook.data)
                .and_then(|d| d.get("id"))
                .and_then(id_text)
        })
        .or_else(|| {
            object(&hook.previous)
                .and_then(|d| d.get("id"))
                .and_then(id_text)
        })
        .filter(|id| event::valid_record_id(id))
}

/// A record's fields as events carry them (also used for records pulled from the API).
pub fn flatten(record: &Map<String, Value>) -> Vec<(String, FieldValue)> {
    let mut out = Vec::with_capacity(record.len());
    for (name, value) in record {
        match (name.as_str(), value) {
            ("custom_fields", Value::Object(custom)) => {
                for (key, field) in custom {
                    match field {
                        Value::Object(f) if f.contains_key("value") => {
                            out.push((key.clone(), json_field(&f["value"])));
                            if let Some(currency) = f.get("currency").filter(|c| !c.is_null()) {
                                out.push((format!("{key}_currency"), json_field(currency)));
                            }
                        }
                        other => out.push((key.clone(), json_field(other))),
                    }
                }
            }
            _ => out.push((name.clone(), json_field(value))),
        }
    }
    out
}

/// `meta.timestamp` is an ISO 8601 instant in v2 (Unix seconds or milliseconds in some tools).
fn occurred_at(hook: &Webhook) -> Option<DateTime<Utc>> {
    let from_value = |v: &Value| match v {
        Value::String(s) => event::parse_datetime(s).or_else(|| {
            NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%d %H:%M:%S")
                .ok()
                .map(|t| t.and_utc())
        }),
        Value::Number(n) => n.as_i64().and_then(|n| {
            if n > 100_000_000_000 {
                event::from_millis(n)
            } else {
                DateTime::from_timestamp(n, 0)
            }
        }),
        _ => None,
    };
    hook.meta
        .timestamp
        .as_ref()
        .and_then(from_value)
        .or_else(|| {
            object(&hook.data)
                .and_then(|d| d.get("update_time"))
                .and_then(from_value)
        })
}

fn owner(part: Option<&Map<String, Value>>) -> Option<CrmUser> {
    let id = part?.get("owner_id").and_then(id_text)?;
    Some(CrmUser {
        crm_user_id: id,
        ..CrmUser::default()
    })
}

pub fn to_event(integration_id: Uuid, hook: &Webhook, now: DateTime<Utc>) -> CrmEvent {
    let meta = &hook.meta;
    let change = match meta.action.as_str() {
        "create" => ChangeType::Created,
        "delete" => ChangeType::Deleted,
        _ => ChangeType::Updated,
    };
    let record_id = record_id(hook).unwrap_or_default();
    let delivery = meta.id.as_ref().and_then(id_text).unwrap_or_default();
    let data = object(&hook.data);
    let previous = object(&hook.previous);
    let source_change_type = if meta.merged_to_id.as_ref().is_some_and(|v| !v.is_null()) {
        "merge".to_owned()
    } else {
        meta.action.clone()
    };
    CrmEvent {
        event_id: event_id("pipedrive", integration_id, &[&delivery, &record_id]).to_string(),
        integration_id: integration_id.to_string(),
        crm: CrmKind::Pipedrive as i32,
        object_type: meta.entity.clone(),
        record_id,
        change_type: change as i32,
        fields: data.map(flatten).unwrap_or_default().into_iter().collect(),
        previous_fields: previous
            .map(flatten)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        // A delete carries the record (and so its owner) only in `previous`.
        owner: owner(data).or_else(|| owner(previous).filter(|_| change == ChangeType::Deleted)),
        occurred_at: Some(timestamp(occurred_at(hook).unwrap_or(now))),
        received_at: Some(timestamp(now)),
        source_delivery_id: delivery,
        crm_account_id: meta
            .company_id
            .as_ref()
            .and_then(id_text)
            .unwrap_or_default(),
        source_change_type,
        full_snapshot: false,
        fields_omitted: false,
    }
}

#[cfg(test)]
mod tests {
    use crm_sync_proto::v1::field_value::Kind;

    use super::*;

    /// A deal change as Pipedrive's webhooks v2 guide shows the format.
    const DEAL_CHANGE: &str = include_str!("testdata/deal-change-v2.json");

    fn now() -> DateTime<Utc> {
        event::parse_datetime("2026-12-01T00:00:00Z").unwrap()
    }

    fn kind(fields: &std::collections::BTreeMap<String, FieldValue>, name: &str) -> Option<Kind> {
        fields.get(name).and_then(|f| f.kind.clone())
    }

    #[test]
    fn a_deal_change_carries_the_record_its_previous_values_and_its_owner() {
        let hook = parse(DEAL_CHANGE.as_bytes()).unwrap();
        let iid = Uuid::new_v4();
        let e = to_event(iid, &hook, now());
        assert_eq!(e.object_type, "deal");
        assert_eq!(e.record_id, "1");
        assert_eq!(e.change_type, ChangeType::Updated as i32);
        assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "18487521");
        assert_eq!(e.crm_account_id, "12882925");
        assert_eq!(e.source_delivery_id, "ec1b24d1-3bd8-4ef2-b4ec-5f0ad0b4bcd8");
        assert_eq!(
            e.event_id,
            event_id(
                "pipedrive",
                iid,
                &["ec1b24d1-3bd8-4ef2-b4ec-5f0ad0b4bcd8", "1"]
            )
            .to_string()
        );
        assert_eq!(kind(&e.fields, "status"), Some(Kind::Text("won".into())));
        assert_eq!(
            kind(&e.fields, "value"),
            Some(Kind::Number("1250.5".into()))
        );
        assert_eq!(
            kind(&e.fields, "d4de1c1518b4531717c676029a45911c340390a6"),
            Some(Kind::Number("300".into()))
        );
        assert_eq!(
            kind(
                &e.fields,
                "d4de1c1518b4531717c676029a45911c340390a6_currency"
            ),
            Some(Kind::Text("EUR".into()))
        );
        assert_eq!(
            kind(&e.fields, "8f4b27fbd29c3e7b5e0d0bfd3a7dd8e9f2a6c1d0"),
            Some(Kind::Text("Inbound".into()))
        );
        assert_eq!(
            kind(&e.previous_fields, "status"),
            Some(Kind::Text("open".into()))
        );
        assert_eq!(e.previous_fields.len(), 2);
        assert_eq!(e.occurred_at.as_ref().unwrap().seconds, 1_727_447_128);
        assert_eq!(e.source_change_type, "change");
    }

    #[test]
    fn creates_deletes_and_merges() {
        let create = r#"{"meta": {"action": "create", "entity": "deal", "entity_id": "7", "id": "a1", "version": "2.0", "company_id": "1", "timestamp": "2024-09-27T14:25:27.000Z"},
                         "data": {"id": 7, "title": "New deal", "owner_id": 5, "value": 10, "custom_fields": {}}, "previous": null}"#;
        let e = to_event(Uuid::nil(), &parse(create.as_bytes()).unwrap(), now());
        assert_eq!(e.change_type, ChangeType::Created as i32);
        assert!(e.previous_fields.is_empty());
        assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "5");

        let merged = r#"{"meta": {"action": "delete", "entity": "deal", "entity_id": "8", "id": "a2", "version": "2.0", "company_id": "1", "merged_to_id": "7", "timestamp": "2024-09-27T14:30:00Z"},
                         "data": null, "previous": {"id": 8, "title": "Dup", "owner_id": 6}}"#;
        let e = to_event(Uuid::nil(), &parse(merged.as_bytes()).unwrap(), now());
        assert_eq!(e.change_type, ChangeType::Deleted as i32);
        assert_eq!(e.record_id, "8");
        assert!(e.fields.is_empty());
        assert_eq!(e.previous_fields.len(), 3);
        assert_eq!(e.owner.as_ref().unwrap().crm_user_id, "6");
        assert_eq!(e.source_change_type, "merge");
    }

    #[test]
    fn v1_payloads_and_bad_metadata_are_refused_with_the_reason() {
        let v1 = r#"{"v": 1, "matches_filters": {"current": []}, "meta": {"v": 1, "action": "updated", "object": "deal", "id": 1}, "current": {}, "previous": {}, "event": "updated.deal", "retry": 0}"#;
        assert_eq!(parse(v1.as_bytes()).unwrap_err(), PipedriveError::Version1);
        for (body, expected) in [
            ("[]", "not a Pipedrive webhook"),
            (
                r#"{"meta": {"action": "merge", "entity": "deal", "entity_id": 1, "id": "x"}}"#,
                "meta.action \"merge\"",
            ),
            (
                r#"{"meta": {"action": "change", "entity": "deal", "entity_id": 1}}"#,
                "meta.id",
            ),
            (
                r#"{"meta": {"action": "change", "entity": "deal", "id": "x"}, "data": {}}"#,
                "record id is missing",
            ),
            (
                r#"{"meta": {"action": "change", "entity": "deal/x", "entity_id": 1, "id": "x"}}"#,
                "not an object name",
            ),
            (
                r#"{"meta": {"action": "change", "entity": "deal", "entity_id": 1, "id": "x", "version": "3.0"}}"#,
                "not 2.0",
            ),
            (
                r#"{"meta": {"action": "change", "entity": "deal", "entity_id": 1, "id": "x"}, "data": [1]}"#,
                "data is not a JSON object",
            ),
        ] {
            let err = parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
