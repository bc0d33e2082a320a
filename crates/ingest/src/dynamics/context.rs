//! Dataverse's `RemoteExecutionContext`, as its webhooks post it: the .NET data-contract JSON of
//! the plug-in execution context. Collections are arrays of `{"key", "value"}`; typed values are
//! objects with a `__type` (`Entity`, `EntityReference`, `Money`, `OptionSetValue`, …); dates are
//! `/Date(<ms>)/` or `/Date(<ms>+0000)/`.

use chrono::{DateTime, SecondsFormat, Utc};
use crm_sync_proto::v1::{FieldValue, field_value};
use serde_json::{Map, Value};

use crate::event;

#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    pub message_name: String,
    pub primary_entity_name: String,
    pub primary_entity_id: Option<String>,
    pub organization_id: String,
    pub operation_id: Option<String>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub operation_created_on: Option<DateTime<Utc>>,
    pub user_id: Option<String>,
    pub input: Vec<(String, Value)>,
    pub pre_images: Vec<Entity>,
    pub post_images: Vec<Entity>,
}

/// An `Entity` (a record with attributes) or, with no attributes, an `EntityReference`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub logical_name: String,
    pub id: Option<String>,
    pub attributes: Vec<(String, Value)>,
    pub formatted: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("not a RemoteExecutionContext: {0}")]
    Shape(String),
}

fn shape(problem: impl Into<String>) -> ContextError {
    ContextError::Shape(problem.into())
}

/// GUIDs as Dataverse writes them in any case or with braces, normalised to lowercase.
pub fn guid(text: &str) -> Option<String> {
    let t = text.trim().trim_start_matches('{').trim_end_matches('}');
    let ok = t.len() == 36
        && t.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| t.to_ascii_lowercase())
}

const NIL_GUID: &str = "00000000-0000-0000-0000-000000000000";

fn opt_guid(object: &Map<String, Value>, name: &str) -> Option<String> {
    object
        .get(name)
        .and_then(Value::as_str)
        .and_then(guid)
        .filter(|g| g != NIL_GUID)
}

/// `/Date(1495810553000)/`, `/Date(1495810553000+0000)/` (the offset is informational: the
/// number is always UTC milliseconds).
pub fn wcf_date(text: &str) -> Option<DateTime<Utc>> {
    let inner = text.trim().strip_prefix("/Date(")?.strip_suffix(")/")?;
    let digits_end = inner
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '+' || *c == '-')
        .map_or(inner.len(), |(i, _)| i);
    let millis: i64 = inner[..digits_end].parse().ok()?;
    event::from_millis(millis)
}

fn pairs(value: Option<&Value>, what: &str) -> Result<Vec<(String, Value)>, ContextError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let key = item
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| shape(format!("{what} holds an entry without a key")))?;
                Ok((
                    key.to_owned(),
                    item.get("value").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect(),
        Some(_) => Err(shape(format!("{what} is not a list of key/value pairs"))),
    }
}

/// Reads an `Entity` or `EntityReference` value.
pub fn entity(value: &Value, what: &str) -> Result<Entity, ContextError> {
    let object = value
        .as_object()
        .ok_or_else(|| shape(format!("{what} is not an entity")))?;
    let logical_name = object
        .get("LogicalName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| shape(format!("{what} has no LogicalName")))?
        .to_owned();
    let attributes = pairs(object.get("Attributes"), &format!("{what}.Attributes"))?;
    let formatted = pairs(
        object.get("FormattedValues"),
        &format!("{what}.FormattedValues"),
    )?
    .into_iter()
    .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_owned())))
    .collect();
    Ok(Entity {
        logical_name,
        id: opt_guid(object, "Id"),
        attributes,
        formatted,
    })
}

fn images(value: Option<&Value>, what: &str) -> Result<Vec<Entity>, ContextError> {
    pairs(value, what)?
        .iter()
        .map(|(name, image)| entity(image, &format!("{what}[{name}]")))
        .collect()
}

pub fn parse(body: &[u8]) -> Result<Context, ContextError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ContextError::NotJson(e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| shape("the body is not a JSON object"))?;
    let text = |name: &str| -> Result<String, ContextError> {
        object
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| shape(format!("{name} is missing")))
    };
    let message_name = text("MessageName")?;
    let primary_entity_name = text("PrimaryEntityName")?;
    if !event::valid_object_type(&primary_entity_name) {
        return Err(shape(format!(
            "PrimaryEntityName {primary_entity_name:?} is not a table name"
        )));
    }
    let organization_id = object
        .get("OrganizationId")
        .and_then(Value::as_str)
        .and_then(guid)
        .ok_or_else(|| shape("OrganizationId is missing or not a GUID"))?;
    let operation_created_on = match object.get("OperationCreatedOn") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            wcf_date(s)
                .or_else(|| event::parse_datetime(s))
                .ok_or_else(|| shape(format!("OperationCreatedOn {s:?} is not a date")))?,
        ),
        Some(_) => return Err(shape("OperationCreatedOn is not a date")),
    };
    Ok(Context {
        message_name,
        primary_entity_name,
        primary_entity_id: opt_guid(object, "PrimaryEntityId"),
        organization_id,
        operation_id: opt_guid(object, "OperationId"),
        request_id: opt_guid(object, "RequestId"),
        correlation_id: opt_guid(object, "CorrelationId"),
        operation_created_on,
        user_id: opt_guid(object, "UserId"),
        input: pairs(object.get("InputParameters"), "InputParameters")?,
        pre_images: images(object.get("PreEntityImages"), "PreEntityImages")?,
        post_images: images(object.get("PostEntityImages"), "PostEntityImages")?,
    })
}

/// The type name of a data-contract object (`Money`, `EntityReference`, …).
fn type_name(object: &Map<String, Value>) -> Option<&str> {
    let full = object.get("__type")?.as_str()?;
    Some(full.split(':').next().unwrap_or(full))
}

/// An attribute value as a field: money and option sets as numbers, lookups as the referenced
/// record's GUID, dates in ISO 8601.
pub fn field(value: &Value) -> FieldValue {
    match value {
        Value::String(s) => match wcf_date(s) {
            Some(date) => event::text(date.to_rfc3339_opts(SecondsFormat::Millis, true)),
            None => event::text(s.clone()),
        },
        Value::Object(object) if is_reference(object) => match opt_guid(object, "Id") {
            Some(id) => event::text(id),
            None => event::null(),
        },
        // Money, OptionSetValue, AliasedValue, …: the wrapped value.
        Value::Object(object) => match object.get("Value") {
            Some(inner) => field(inner),
            None => event::json_field(value),
        },
        // A multi-select choice: a list of OptionSetValues.
        Value::Array(items)
            if !items.is_empty() && items.iter().all(|i| i.get("Value").is_some()) =>
        {
            let values: Vec<String> = items
                .iter()
                .filter_map(|i| i.get("Value"))
                .filter_map(|v| match field(v).kind {
                    Some(field_value::Kind::Number(n)) | Some(field_value::Kind::Text(n)) => {
                        Some(n)
                    }
                    _ => None,
                })
                .collect();
            event::text(values.join(","))
        }
        other => event::json_field(other),
    }
}

/// An `EntityReference`, typed or (as some serialisers write it) untyped.
fn is_reference(object: &Map<String, Value>) -> bool {
    match type_name(object) {
        Some(name) => name == "EntityReference",
        None => {
            object.contains_key("LogicalName")
                && object.contains_key("Id")
                && !object.contains_key("Attributes")
        }
    }
}

/// The GUID a lookup attribute points at, if the value is an `EntityReference`.
pub fn reference_id(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    if is_reference(object) {
        opt_guid(object, "Id")
    } else {
        None
    }
}

/// The display name a lookup carries (`Name`: Dataverse fills it for owners in most contexts,
/// and writes `null` where it did not look it up).
pub fn reference_name(value: &Value) -> Option<String> {
    let object = value.as_object()?;
    if !is_reference(object) {
        return None;
    }
    let name = object.get("Name")?.as_str()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wcf_dates_with_and_without_offsets() {
        let expected = event::from_millis(1_495_810_553_000).unwrap();
        assert_eq!(wcf_date("/Date(1495810553000)/"), Some(expected));
        assert_eq!(wcf_date("/Date(1495810553000+0000)/"), Some(expected));
        assert_eq!(wcf_date("/Date(1495810553000-0500)/"), Some(expected));
        assert_eq!(wcf_date("/Date(-1000)/"), event::from_millis(-1000));
        assert_eq!(wcf_date("2017-05-26"), None);
    }

    #[test]
    fn typed_values_become_plain_fields() {
        use field_value::Kind;
        let kind = |v: Value| field(&v).kind.unwrap();
        assert_eq!(
            kind(
                serde_json::json!({"__type": "Money:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 1250.5})
            ),
            Kind::Number("1250.5".into())
        );
        assert_eq!(
            kind(
                serde_json::json!({"__type": "OptionSetValue:http://schemas.microsoft.com/xrm/2011/Contracts", "Value": 3})
            ),
            Kind::Number("3".into())
        );
        assert_eq!(
            kind(
                serde_json::json!({"__type": "EntityReference:http://schemas.microsoft.com/xrm/2011/Contracts", "Id": "7D577253-3EF0-4A0A-BB7F-8335C2596E70", "LogicalName": "systemuser", "Name": null})
            ),
            Kind::Text("7d577253-3ef0-4a0a-bb7f-8335c2596e70".into())
        );
        assert_eq!(
            kind(serde_json::json!("/Date(1495810553000)/")),
            Kind::Text("2017-05-26T14:55:53.000Z".into())
        );
        assert_eq!(
            kind(
                serde_json::json!([{"__type": "OptionSetValue:x", "Value": 1}, {"__type": "OptionSetValue:x", "Value": 4}])
            ),
            Kind::Text("1,4".into())
        );
        assert_eq!(kind(serde_json::json!(null)), Kind::NullValue(true));
    }

    #[test]
    fn guids_normalise() {
        assert_eq!(
            guid("{6EDCB49A-7645-E711-8102-C4346BC4C8E8}").as_deref(),
            Some("6edcb49a-7645-e711-8102-c4346bc4c8e8")
        );
        assert_eq!(guid("6edcb49a"), None);
    }
}
