//! The trail's decisions in words, made when an admin reads them. The evaluator stores only
//! each workflow's verdict codes, the version of the workflow it judged against and the values
//! the workflows that did not count read: wording every failing condition of every event on the
//! pipeline cost more than judging it, and few entries are ever read.

use std::collections::HashMap;

use crm_sync_proto::Message;
use crm_sync_proto::v1::CrmEvent;
use crm_sync_proto::view::ValueRef;
use crm_sync_workflow::{Fields, Mode, Previous, Record, WorkflowSpec};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// One workflow's verdict on an event, as the evaluator stores it: the workflow version it
/// judged against, the decision (`counted`, `still_counts`, `retracted`, `not_counted`) and the
/// reason code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub version: Uuid,
    pub decision: &'static str,
    pub reason: Option<&'static str>,
}

/// The reason of a retraction by a delete of a record that counted for a workflow inactive by
/// then.
pub const WORKFLOW_INACTIVE: &str = "workflow_inactive";
/// The reason of a retraction by a delete of a record that counted for a workflow moved to
/// another object since.
pub const WORKFLOW_MOVED: &str = "workflow_moved";

/// What was known of the record's previous values when it was judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PreviousKnown {
    /// A created record: every field was empty before.
    Nothing,
    /// An update: the stored previous values are those the event sent.
    Sent,
    /// A delete, or a bare record.
    Unknown,
}

impl PreviousKnown {
    pub(super) fn tag(self) -> u8 {
        match self {
            PreviousKnown::Nothing => 0,
            PreviousKnown::Sent => 1,
            PreviousKnown::Unknown => 2,
        }
    }
}

/// The values the workflows that did not count read, as stored: one byte telling what was known
/// of the previous values, then a `CrmEvent` holding only `fields` and `previous_fields`.
pub fn encode_read_values(known: PreviousKnown, fields: Fields, previous: Fields) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut values = super::entry::ReadValues::start(&mut out, known);
        for (name, value) in &fields {
            values.field(name, ValueRef::of(value));
        }
        for (name, value) in &previous {
            values.previous(name, ValueRef::of(value));
        }
    }
    // The length the values are stored after is the page's business.
    out.split_off(4)
}

/// The stored values back; a value that does not decode reads as nothing known.
fn decode_read_values(bytes: Option<&[u8]>) -> (PreviousKnown, Fields, Fields) {
    let unknown = || (PreviousKnown::Unknown, Fields::new(), Fields::new());
    let Some((&tag, rest)) = bytes.and_then(|b| b.split_first()) else {
        return unknown();
    };
    let known = match tag {
        0 => PreviousKnown::Nothing,
        1 => PreviousKnown::Sent,
        _ => PreviousKnown::Unknown,
    };
    match CrmEvent::decode(rest) {
        Ok(e) => (known, e.fields, e.previous_fields),
        Err(_) => unknown(),
    }
}

/// A workflow as it was when events were judged against it.
#[derive(Debug, Clone)]
pub struct Version {
    pub workflow_id: Uuid,
    pub spec: WorkflowSpec,
}

/// The version id of a workflow's definition: the same workflow and definition, the same id.
pub fn version_id(workflow_id: Uuid, spec_json: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(workflow_id.as_bytes())
        .chain_update(spec_json.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::from_bytes(bytes)
}

/// One workflow's decision as the admin API and the CLI show it.
#[derive(Serialize)]
struct Worded<'a> {
    workflow_id: Uuid,
    workflow: &'a str,
    activity_type: &'a str,
    decision: &'a str,
    reason: Option<&'a str>,
    explanation: Vec<String>,
}

/// The stored decisions of one event in words: per workflow its id, name and activity type (as
/// they were when the event was judged), the decision, the reason code and the reason in words.
/// Entries written before the trail stored codes already hold their words and are returned as
/// they are.
pub fn word(
    decisions: Value,
    read_values: Option<&[u8]>,
    change_type: &str,
    versions: &HashMap<Uuid, Version>,
) -> Value {
    let Value::Array(items) = decisions else {
        return Value::Array(Vec::new());
    };
    if items.iter().any(|d| d.get("explanation").is_some()) {
        return Value::Array(items);
    }
    let (known, fields, previous) = decode_read_values(read_values);
    let record = Record {
        fields: &fields,
        previous: match known {
            PreviousKnown::Nothing => Previous::Nothing,
            PreviousKnown::Sent => Previous::Sent(&previous),
            PreviousKnown::Unknown => Previous::Unknown,
        },
    };
    let worded = items
        .iter()
        .map(|d| {
            let text = |key: &str| d.get(key).and_then(Value::as_str);
            let version = text("v").and_then(|v| Uuid::parse_str(v).ok());
            let decision = text("d").unwrap_or("");
            let reason = text("r");
            match version.and_then(|v| versions.get(&v)) {
                Some(v) => Worded {
                    workflow_id: v.workflow_id,
                    workflow: &v.spec.name,
                    activity_type: &v.spec.activity_type,
                    decision,
                    reason,
                    explanation: explanation(&v.spec, (decision, reason), &record, change_type),
                },
                None => Worded {
                    workflow_id: Uuid::nil(),
                    workflow: "",
                    activity_type: "",
                    decision,
                    reason,
                    explanation: vec![
                        "the workflow as it was when this event was judged is no longer kept"
                            .to_owned(),
                    ],
                },
            }
        })
        .collect::<Vec<_>>();
    serde_json::to_value(worded).unwrap_or_else(|_| Value::Array(Vec::new()))
}

/// Whether a verdict is explained by the workflow's failing conditions.
pub fn needs_explaining(decision: &str, reason: Option<&str>) -> bool {
    matches!(
        (decision, reason),
        (
            "not_counted",
            Some("conditions" | "no_change" | "unknown" | "type_mismatch")
        ) | ("retracted", Some("no_longer_matches"))
    )
}

fn explanation(
    spec: &WorkflowSpec,
    (decision, reason): (&str, Option<&str>),
    record: &Record<'_>,
    change_type: &str,
) -> Vec<String> {
    if needs_explaining(decision, reason) {
        return spec.conditions.failure_reasons(record, Mode::Full);
    }
    match (decision, reason) {
        ("not_counted", Some("other_trigger")) => vec![format!(
            "the workflow does not react to {change_type} records (it reacts to {})",
            spec.triggers
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )],
        ("not_counted", Some("missing_value")) => vec![format!(
            "the conditions hold, but the value field {} is empty",
            spec.value_field.as_deref().unwrap_or("")
        )],
        ("not_counted", Some("deleted")) => {
            vec!["the record was deleted; it had not counted, so nothing changed".into()]
        }
        ("retracted", Some("deleted")) => {
            vec!["the record was deleted, so its activity was retracted".into()]
        }
        ("retracted", Some(WORKFLOW_INACTIVE)) => vec![
            "the record was deleted; the workflow was inactive by then, and the activity it \
             had counted for this record was retracted"
                .into(),
        ],
        ("retracted", Some(WORKFLOW_MOVED)) => vec![format!(
            "the record was deleted; the workflow now reads {} records, and the activity it \
             had counted for this record was retracted",
            spec.object_type
        )],
        _ => Vec::new(),
    }
}

/// The version ids the stored decisions refer to.
pub(super) fn versions_of(decisions: &Value, out: &mut Vec<Uuid>) {
    let Some(items) = decisions.as_array() else {
        return;
    };
    for d in items {
        if let Some(v) = d
            .get("v")
            .and_then(Value::as_str)
            .and_then(|v| Uuid::parse_str(v).ok())
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn entries_written_with_their_words_are_shown_as_they_are() {
        let old = json!([{"workflow_id": Uuid::from_u128(1), "workflow": "Big wins",
            "activity_type": "deal_won", "decision": "not_counted", "reason": "conditions",
            "explanation": ["Amount is \"500\"; the condition wants gte 1000"]}]);
        assert_eq!(word(old.clone(), None, "updated", &HashMap::new()), old);
    }

    #[test]
    fn stored_codes_name_their_versions_and_a_lost_version_is_said_so() {
        let stored = json!([
            {"v": Uuid::from_u128(7), "d": "not_counted", "r": "conditions"},
            {"v": Uuid::from_u128(8), "d": "counted"},
        ]);
        let mut ids = Vec::new();
        versions_of(&stored, &mut ids);
        assert_eq!(ids, [Uuid::from_u128(7), Uuid::from_u128(8)]);
        let worded = word(stored, None, "updated", &HashMap::new());
        assert_eq!(worded[0]["decision"], "not_counted");
        assert_eq!(worded[0]["reason"], "conditions");
        assert_eq!(worded[1]["reason"], Value::Null);
        assert_eq!(
            worded[1]["explanation"],
            json!(["the workflow as it was when this event was judged is no longer kept"])
        );
    }

    #[test]
    fn read_values_come_back_as_stored() {
        let text = |s: &str| crm_sync_proto::v1::FieldValue {
            kind: Some(crm_sync_proto::v1::field_value::Kind::Text(s.into())),
        };
        let fields: Fields = [("Amount".to_owned(), text("500"))].into();
        let previous: Fields = [("Amount".to_owned(), text("400"))].into();
        let bytes = encode_read_values(PreviousKnown::Sent, fields.clone(), previous.clone());
        assert_eq!(
            decode_read_values(Some(&bytes)),
            (PreviousKnown::Sent, fields, previous)
        );
        let (known, ..) = decode_read_values(Some(&[0xff, 0xff]));
        assert_eq!(
            known,
            PreviousKnown::Unknown,
            "undecodable values are not trusted"
        );
    }
}
