//! What every connector shares when it builds `CrmEvent`s: stable event ids, timestamps, field
//! values from JSON, and the checks that keep Kafka keys well-formed.

use chrono::{DateTime, TimeZone, Utc};

use crm_sync_proto::v1::{CrmEvent, FieldValue, field_value};
use uuid::Uuid;

/// Namespace of every ingest event id. Never change it: ids must stay the same across deploys so
/// that a redelivery after an upgrade still deduplicates downstream.
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3f6c_9a2e_51d4_4b7a_8e0f_5c1b_2d7e_9a40);

/// The stable id of one event: `source` names the delivery format (e.g. `hubspot`), `parts` the
/// CRM's own delivery id and whatever else tells the events of one delivery apart.
pub fn event_id(source: &str, integration_id: Uuid, parts: &[&str]) -> Uuid {
    let mut name = format!("{source}:{integration_id}");
    for part in parts {
        name.push(':');
        name.push_str(part);
    }
    Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
}

pub use crm_sync_proto::announce::timestamp;

/// Milliseconds since the Unix epoch, as CRMs write them; None when out of range.
pub fn from_millis(millis: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(millis).single()
}

/// The Kafka key of an event: `integration/object/record`, so that every event of a record lands
/// on one partition, in order.
pub fn kafka_key(event: &CrmEvent) -> String {
    format!(
        "{}/{}/{}",
        event.integration_id, event.object_type, event.record_id
    )
}

/// Object names become part of Kafka keys: letters, digits, `_`, `.` and `-` only, starting with
/// a letter (covers Salesforce `Foo__c`, HubSpot `deal`, Pipedrive `deal_product`, Dataverse
/// `new_invoice`).
pub fn valid_object_type(name: &str) -> bool {
    name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Record ids: non-empty, printable, without `/` (the key separator), at most 255 characters.
pub fn valid_record_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 255 && !id.contains('/') && !id.chars().any(char::is_control)
}

pub fn null() -> FieldValue {
    FieldValue {
        kind: Some(field_value::Kind::NullValue(true)),
    }
}

pub fn text(value: impl Into<String>) -> FieldValue {
    FieldValue {
        kind: Some(field_value::Kind::Text(value.into())),
    }
}

/// A JSON value as a field: typed where JSON is typed. Arrays of scalars become comma-separated
/// text (multi-select values); objects and nested arrays their compact JSON.
pub fn json_field(value: &serde_json::Value) -> FieldValue {
    use serde_json::Value;
    let kind = match value {
        Value::Null => field_value::Kind::NullValue(true),
        Value::Bool(b) => field_value::Kind::Boolean(*b),
        Value::Number(n) => field_value::Kind::Number(n.to_string()),
        Value::String(s) => field_value::Kind::Text(s.clone()),
        Value::Array(items) if items.iter().all(is_scalar) => {
            field_value::Kind::Text(items.iter().map(scalar_text).collect::<Vec<_>>().join(","))
        }
        other => field_value::Kind::Text(other.to_string()),
    };
    FieldValue { kind: Some(kind) }
}

fn is_scalar(value: &serde_json::Value) -> bool {
    !(value.is_array() || value.is_object())
}

fn scalar_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON id that CRMs write as a number or a string.
pub fn id_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Salesforce-style date-times: RFC 3339, or with a `+0000` offset.
pub fn parse_datetime(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    DateTime::parse_from_rfc3339(value)
        .or_else(|_| DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_values_keep_their_type() {
        let kind = |v: serde_json::Value| json_field(&v).kind.unwrap();
        assert_eq!(kind(json!(null)), field_value::Kind::NullValue(true));
        assert_eq!(kind(json!(true)), field_value::Kind::Boolean(true));
        assert_eq!(
            kind(json!(1250.5)),
            field_value::Kind::Number("1250.5".into())
        );
        assert_eq!(kind(json!(42)), field_value::Kind::Number("42".into()));
        assert_eq!(kind(json!("x")), field_value::Kind::Text("x".into()));
        assert_eq!(kind(json!([1, "b"])), field_value::Kind::Text("1,b".into()));
        assert_eq!(
            kind(json!({"a": 1})),
            field_value::Kind::Text(r#"{"a":1}"#.into())
        );
    }

    #[test]
    fn object_types_and_record_ids_are_safe_in_keys() {
        for ok in [
            "Opportunity",
            "Invoice__c",
            "deal",
            "deal_product",
            "new_invoice",
            "p-0.1",
        ] {
            assert!(valid_object_type(ok), "{ok}");
        }
        for bad in ["", "0-3", "a/b", "deal ", "ü"] {
            assert!(!valid_object_type(bad), "{bad}");
        }
        assert!(valid_record_id("0065g00000XyZ12AAB"));
        assert!(!valid_record_id("a/b"));
        assert!(!valid_record_id(""));
    }

    #[test]
    fn event_ids_depend_on_every_part() {
        let iid = Uuid::nil();
        assert_eq!(
            event_id("hubspot", iid, &["1", "2"]),
            Uuid::new_v5(
                &EVENT_ID_NAMESPACE,
                b"hubspot:00000000-0000-0000-0000-000000000000:1:2"
            )
        );
        assert_ne!(
            event_id("hubspot", iid, &["1", "2"]),
            event_id("hubspot", iid, &["1", "3"])
        );
    }
}
