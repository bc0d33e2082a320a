//! Between a topic's protobuf values and their proto3 JSON form (field names as in the .proto
//! files, enums by name), by reflection over `crm_sync_proto::descriptor_pool()`.

use anyhow::Context as _;
use crm_sync_proto::v1::CrmEvent;
use crm_sync_proto::{
    DynamicMessage, Message, MessageDescriptor, descriptor_pool, message_name_for_topic,
};
use prost_reflect::{DeserializeOptions, SerializeOptions};

/// What the tools need to know about a topic's message type beyond its schema.
#[derive(Debug, Clone)]
pub struct TopicType {
    pub descriptor: MessageDescriptor,
    /// The field holding the message's stable id (also sent as the event-id header).
    pub id_field: &'static str,
    /// The fields that make up the topic's record key, joined with `/`.
    pub key_fields: &'static [&'static str],
    /// Whether a missing id may be generated: only for CRM events, whose ids are random-ish
    /// delivery ids anyway; the other ids are deterministic and consumers deduplicate on them.
    pub generate_missing_id: bool,
}

impl TopicType {
    pub fn for_topic(topic: &str) -> anyhow::Result<TopicType> {
        let name = message_name_for_topic(topic).with_context(|| {
            format!(
                "topic `{topic}` carries no known crm-sync message type (expected a name ending \
                 in crm.events.v1, crm.matches.v1, salesscreen.activities.v1 or \
                 salesscreen.users.v1, optionally with .dlq)"
            )
        })?;
        let descriptor = descriptor_pool()
            .get_message_by_name(name)
            .with_context(|| format!("message type {name} is missing from the descriptor pool"))?;
        let (id_field, key_fields, generate_missing_id): (_, &'static [&'static str], _) =
            match name {
                "crm_sync.v1.CrmEvent" => (
                    "event_id",
                    &["integration_id", "object_type", "record_id"],
                    true,
                ),
                "crm_sync.v1.WorkflowOutcome" => (
                    "outcome_id",
                    &["integration_id", "object_type", "record_id"],
                    false,
                ),
                "crm_sync.v1.ActivityChanged" => ("change_id", &["company_id", "user_id"], false),
                "crm_sync.v1.UserProvisioned" => ("event_id", &["company_id", "user_id"], false),
                other => anyhow::bail!("no key rule for message type {other}"),
            };
        Ok(TopicType {
            descriptor,
            id_field,
            key_fields,
            generate_missing_id,
        })
    }

    pub fn name(&self) -> &str {
        self.descriptor.full_name()
    }

    /// Parses one JSON document; unknown fields are errors. The error text has no position:
    /// callers know the line.
    pub fn from_json(&self, json: &str) -> Result<DynamicMessage, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        let message = DynamicMessage::deserialize_with_options(
            self.descriptor.clone(),
            &mut de,
            &DeserializeOptions::new(),
        )
        .and_then(|m| de.end().map(|()| m))
        .map_err(|e| describe_json_error(&e))?;
        Ok(message)
    }

    /// The message's bytes. A CRM event's fields are written in name order, as ingest and the
    /// pulls write them: reflection keeps a map hashed, so its entries came out in any order,
    /// and events produced by hand or by the load scripts made the evaluator sort them.
    pub fn encode(&self, message: &DynamicMessage) -> Vec<u8> {
        let bytes = message.encode_to_vec();
        if self.name() == "crm_sync.v1.CrmEvent"
            && let Ok(event) = CrmEvent::decode(bytes.as_slice())
        {
            return event.encode_to_vec();
        }
        bytes
    }

    pub fn text_field(&self, message: &DynamicMessage, field: &str) -> String {
        message
            .get_field_by_name(field)
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// The record key (`integration/object/record`, the partitioning contract of the topics), or
    /// the name of the first empty part.
    pub fn key_of(&self, message: &DynamicMessage) -> Result<String, &'static str> {
        let mut parts = Vec::with_capacity(self.key_fields.len());
        for field in self.key_fields {
            let value = self.text_field(message, field);
            if value.is_empty() {
                return Err(field);
            }
            parts.push(value);
        }
        Ok(parts.join("/"))
    }
}

/// serde_json's message without its trailing position, plus the column where it helps.
fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    if e.column() > 0 {
        format!("{message} (column {})", e.column())
    } else {
        message.to_owned()
    }
}

/// Proto3 JSON with the .proto field names (`event_id`, not `eventId`), defaults omitted.
pub fn to_json(message: &DynamicMessage) -> anyhow::Result<serde_json::Value> {
    message
        .serialize_with_options(
            serde_json::value::Serializer,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .context("rendering a message as JSON")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_crm_event_round_trips_through_protobuf() {
        let t = TopicType::for_topic("x.crm.events.v1").unwrap();
        let line = json!({
            "event_id": "e1", "integration_id": "i1", "crm": "CRM_KIND_SALESFORCE",
            "object_type": "Opportunity", "record_id": "006A", "change_type": "CHANGE_TYPE_UPDATED",
            "fields": {"Amount": {"number": "1250.50"}, "Desc": {"null_value": true}},
            "owner": {"crm_user_id": "005A"}, "occurred_at": "2026-11-20T15:04:05Z"
        });
        let m = t.from_json(&line.to_string()).unwrap();
        let bytes = m.encode_to_vec();
        let typed = CrmEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(typed.record_id, "006A");
        assert_eq!(typed.occurred_at.unwrap().seconds, 1_795_187_045);
        let back = DynamicMessage::decode(t.descriptor.clone(), bytes.as_slice()).unwrap();
        assert_eq!(to_json(&back).unwrap(), line);
        assert_eq!(t.key_of(&m).unwrap(), "i1/Opportunity/006A");
        // The JSON mapping's lowerCamelCase names are accepted too.
        let camel = t
            .from_json(r#"{"eventId": "e1", "integrationId": "i1", "objectType": "Opportunity", "recordId": "006A"}"#)
            .unwrap();
        assert_eq!(t.key_of(&camel).unwrap(), "i1/Opportunity/006A");
    }

    #[test]
    fn an_events_fields_are_written_in_name_order() {
        let t = TopicType::for_topic("crm.events.v1").unwrap();
        let names: Vec<String> = (0..40).rev().map(|i| format!("f{i:02}")).collect();
        let fields: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .map(|n| (n.clone(), json!({"text": n})))
            .collect();
        let line = json!({"event_id": "e1", "record_id": "1", "fields": fields});
        let bytes = t.encode(&t.from_json(&line.to_string()).unwrap());
        let view = crm_sync_proto::view::decode_event(&bytes).unwrap();
        let mut sorted = names.clone();
        sorted.sort();
        // The view sorts what comes unsorted: compare with the bytes' own order instead.
        let in_bytes: Vec<usize> = sorted
            .iter()
            .map(|n| {
                bytes
                    .windows(n.len())
                    .position(|w| w == n.as_bytes())
                    .unwrap()
            })
            .collect();
        assert!(in_bytes.is_sorted(), "entries in name order: {in_bytes:?}");
        assert_eq!(view.fields.len(), 40);
        assert_eq!(CrmEvent::decode(bytes.as_slice()).unwrap().record_id, "1");
    }

    #[test]
    fn bad_json_says_what_is_wrong() {
        let t = TopicType::for_topic("crm.events.v1").unwrap();
        let e = t
            .from_json(r#"{"event_id": "e", "colour": 1}"#)
            .unwrap_err();
        assert!(e.contains("colour"), "{e}");
        let e = t.from_json(r#"{"crm": "CRM_KIND_ZOHO"}"#).unwrap_err();
        assert!(e.contains("CRM_KIND_ZOHO"), "{e}");
        let e = t.from_json(r#"{"event_id": "e"} trailing"#).unwrap_err();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn keys_and_ids_per_topic() {
        let t = TopicType::for_topic("salesscreen.users.v1.dlq").unwrap();
        assert_eq!(t.name(), "crm_sync.v1.UserProvisioned");
        let m = t
            .from_json(r#"{"company_id": "c", "event_id": "x"}"#)
            .unwrap();
        assert_eq!(t.key_of(&m), Err("user_id"));
        assert!(TopicType::for_topic("other").is_err());
    }
}
