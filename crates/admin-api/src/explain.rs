//! The workflow dry run: does a sample record match, and if not, which condition failed.
//!
//! Every verdict comes from the evaluator's own code (`WorkflowSpec::decide`): a part of the
//! condition tree is judged by deciding a copy of the workflow whose conditions are just that
//! part. The tree is walked in its stored JSON form, so new operators and groups added to the
//! workflow crate are explained without changes here.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser, FieldValue};
use crm_sync_workflow::{Condition, Decision, NoMatch, WorkflowSpec};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Why a part of the conditions failed.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct FailedCondition {
    /// Where in the workflow, e.g. `conditions/all/1`.
    pub path: String,
    /// The failing part as stored.
    #[schema(value_type = Object)]
    pub condition: Value,
    /// The field a comparison reads, if this part is one.
    pub field: Option<String>,
    /// The sample's value of that field (absent: the record does not carry it).
    #[schema(value_type = Object)]
    pub actual: Option<Value>,
    /// True when the field's value could not be read as the literal's type.
    pub type_mismatch: bool,
    /// The failure in words.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Match,
    NoMatch,
    TypeMismatch,
}

/// How one sub-condition fares on the event, by the evaluator's rules.
fn judge(spec: &WorkflowSpec, condition: &Value, event: &CrmEvent) -> Verdict {
    let Ok(conditions) = Condition::from_json(condition) else {
        return Verdict::NoMatch;
    };
    let part = WorkflowSpec {
        conditions,
        value_field: None,
        date_field: None,
        ..spec.clone()
    };
    let decision = part.decide(event);
    if matches!(decision, Decision::Matched(_)) {
        Verdict::Match
    } else if matches!(decision, Decision::NoMatch(NoMatch::TypeMismatch)) {
        Verdict::TypeMismatch
    } else {
        Verdict::NoMatch
    }
}

/// The failing parts of the workflow's conditions for the event, outermost first. Empty when
/// the conditions match.
pub fn failed_conditions(spec: &WorkflowSpec, event: &CrmEvent) -> Vec<FailedCondition> {
    let mut out = Vec::new();
    walk(
        spec,
        &spec.conditions.to_json(),
        "conditions",
        event,
        &mut out,
    );
    out
}

fn walk(
    spec: &WorkflowSpec,
    node: &Value,
    path: &str,
    event: &CrmEvent,
    out: &mut Vec<FailedCondition>,
) {
    let verdict = judge(spec, node, event);
    if verdict == Verdict::Match {
        return;
    }
    let group = node
        .as_object()
        .filter(|m| m.len() == 1)
        .and_then(|m| m.iter().next());
    match group {
        Some((kind, Value::Array(items))) if kind == "all" => {
            for (i, item) in items.iter().enumerate() {
                walk(spec, item, &format!("{path}/all/{i}"), event, out);
            }
        }
        Some((kind, Value::Array(items))) if kind == "any" => {
            out.push(failure(
                path,
                node,
                None,
                verdict,
                format!("none of the {} alternatives matched", items.len()),
            ));
            for (i, item) in items.iter().enumerate() {
                walk(spec, item, &format!("{path}/any/{i}"), event, out);
            }
        }
        Some((kind, _)) if kind == "not" => out.push(failure(
            path,
            node,
            None,
            verdict,
            "the negated condition matched".to_owned(),
        )),
        _ => {
            let field = node.get("field").and_then(Value::as_str);
            let actual = field.and_then(|f| event.fields.get(f)).map(field_json);
            let op = node.get("op").and_then(Value::as_str).unwrap_or("?");
            let expected = node.get("value").map(Value::to_string).unwrap_or_default();
            let message = match (field, &actual, verdict) {
                (Some(f), Some(a), Verdict::TypeMismatch) => {
                    format!("{f} is {a}, which cannot be compared with {expected}")
                }
                (Some(f), Some(a), _) => format!("{f} is {a}; the condition wants {op} {expected}"),
                (Some(f), None, _) => {
                    format!("the record has no {f}; the condition wants {op} {expected}")
                }
                (None, _, _) => "this condition does not hold".to_owned(),
            };
            out.push(failure(path, node, field, verdict, message).with_actual(actual));
        }
    }
}

fn failure(
    path: &str,
    node: &Value,
    field: Option<&str>,
    verdict: Verdict,
    message: String,
) -> FailedCondition {
    FailedCondition {
        path: path.to_owned(),
        condition: node.clone(),
        field: field.map(str::to_owned),
        actual: None,
        type_mismatch: verdict == Verdict::TypeMismatch,
        message,
    }
}

impl FailedCondition {
    fn with_actual(mut self, actual: Option<Value>) -> Self {
        self.actual = actual;
        self
    }
}

fn field_json(f: &FieldValue) -> Value {
    match &f.kind {
        Some(Kind::Text(t)) => Value::String(t.clone()),
        Some(Kind::Number(n)) => {
            serde_json::from_str(n).unwrap_or_else(|_| Value::String(n.clone()))
        }
        Some(Kind::Boolean(b)) => Value::Bool(*b),
        Some(Kind::NullValue(_)) | None => Value::Null,
    }
}

/// A sample field value as the evaluator would receive it; `Err` for nested objects and lists,
/// which no CRM field carries.
pub fn field_value(v: &Value) -> Result<FieldValue, &'static str> {
    let kind = match v {
        Value::String(s) => Kind::Text(s.clone()),
        Value::Number(n) => Kind::Number(n.to_string()),
        Value::Bool(b) => Kind::Boolean(*b),
        Value::Null => Kind::NullValue(true),
        Value::Array(_) | Value::Object(_) => {
            return Err("expected a text, number, boolean or null value");
        }
    };
    Ok(FieldValue { kind: Some(kind) })
}

/// The event a sample record stands for.
pub struct Sample {
    pub object_type: String,
    pub change: ChangeType,
    pub fields: HashMap<String, FieldValue>,
    pub previous_fields: HashMap<String, FieldValue>,
    pub owner: Option<CrmUser>,
}

impl Sample {
    pub fn event(self) -> CrmEvent {
        let now = Utc::now();
        let mut e = CrmEvent {
            event_id: "dry-run".into(),
            object_type: self.object_type,
            record_id: "dry-run".into(),
            fields: self.fields,
            previous_fields: self.previous_fields,
            owner: self.owner,
            occurred_at: Some(crm_sync_proto::Timestamp {
                seconds: now.timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        };
        e.set_change_type(self.change);
        e
    }
}

/// The dry run's verdict.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub matched: bool,
    /// Why not, as the evaluator's metrics label (`conditions`, `other_object`, …).
    pub reason: Option<&'static str>,
    pub failed_conditions: Vec<FailedCondition>,
    pub owner_crm_user_id: Option<String>,
    pub value: Option<String>,
    pub activity_date: Option<DateTime<Utc>>,
}

pub fn dry_run(spec: &WorkflowSpec, event: &CrmEvent) -> Outcome {
    let decision = spec.decide(event);
    if let Decision::Matched(m) = &decision {
        return Outcome {
            matched: true,
            reason: None,
            failed_conditions: Vec::new(),
            owner_crm_user_id: m.owner_crm_user_id.clone(),
            value: Some(m.value.to_string()),
            activity_date: m.activity_date,
        };
    }
    // Matched explicitly by the `if let`s rather than by an exhaustive `match`: the workflow crate
    // may grow decisions and reasons, and the dry run should keep compiling and explaining.
    let reason = if let Decision::NoMatch(r) = &decision {
        Some(r.as_str())
    } else if let Decision::Retracted(r) = &decision {
        Some(r.reason.as_str())
    } else {
        None
    };
    let about_conditions = !matches!(
        reason,
        Some("other_object" | "other_trigger" | "missing_value" | "deleted")
    );
    Outcome {
        matched: false,
        reason,
        failed_conditions: if about_conditions {
            failed_conditions(spec, event)
        } else {
            Vec::new()
        },
        owner_crm_user_id: None,
        value: None,
        activity_date: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(conditions: Value) -> WorkflowSpec {
        serde_json::from_value(json!({
            "name": "Won", "object_type": "Opportunity", "triggers": ["created", "updated"],
            "conditions": conditions, "user_field": "OwnerId", "value_field": "Amount",
            "activity_type": "deal_won"
        }))
        .unwrap()
    }

    fn sample(fields: Value) -> CrmEvent {
        let fields = fields
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), field_value(v).unwrap()))
            .collect();
        Sample {
            object_type: "Opportunity".into(),
            change: ChangeType::Created,
            fields,
            previous_fields: HashMap::new(),
            owner: None,
        }
        .event()
    }

    #[test]
    fn names_the_failing_leaf_of_an_all_group() {
        let s = spec(json!({"all": [
            {"field": "StageName", "op": "eq", "value": "Closed Won"},
            {"field": "Amount", "op": "gte", "value": 1000}
        ]}));
        let o = dry_run(
            &s,
            &sample(json!({"StageName": "Closed Won", "Amount": "500", "OwnerId": "005A"})),
        );
        assert!(!o.matched);
        assert_eq!(o.reason, Some("conditions"));
        assert_eq!(o.failed_conditions.len(), 1, "{:?}", o.failed_conditions);
        let f = &o.failed_conditions[0];
        assert_eq!(f.path, "conditions/all/1");
        assert_eq!(f.field.as_deref(), Some("Amount"));
        assert_eq!(f.actual, Some(json!("500")));
        assert!(f.message.contains("Amount"), "{}", f.message);

        let o = dry_run(
            &s,
            &sample(json!({"StageName": "Closed Won", "Amount": "1500", "OwnerId": "005A"})),
        );
        assert!(o.matched);
        assert_eq!(o.value.as_deref(), Some("1500"));
        assert_eq!(o.owner_crm_user_id.as_deref(), Some("005A"));
    }

    #[test]
    fn an_update_that_no_longer_matches_is_a_retraction_and_still_explained() {
        let s = spec(json!({"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]}));
        let mut e = sample(json!({"StageName": "Closed Lost", "Amount": "1"}));
        e.set_change_type(ChangeType::Updated);
        let o = dry_run(&s, &e);
        assert_eq!(o.reason, Some("no_longer_matches"));
        assert_eq!(o.failed_conditions.len(), 1);
        assert_eq!(o.failed_conditions[0].path, "conditions/all/0");
    }

    #[test]
    fn explains_any_groups_missing_fields_type_mismatches_and_other_objects() {
        let s = spec(json!({"any": [
            {"field": "StageName", "op": "eq", "value": "Closed Won"},
            {"field": "Probability", "op": "gte", "value": 90}
        ]}));
        let o = dry_run(
            &s,
            &sample(json!({"StageName": "Prospecting", "Probability": "high", "Amount": "1"})),
        );
        assert_eq!(o.reason, Some("type_mismatch"));
        let paths: Vec<&str> = o
            .failed_conditions
            .iter()
            .map(|f| f.path.as_str())
            .collect();
        assert_eq!(
            paths,
            ["conditions", "conditions/any/0", "conditions/any/1"]
        );
        assert!(o.failed_conditions[2].type_mismatch);

        let o = dry_run(&s, &sample(json!({"Amount": "1"})));
        assert!(o.failed_conditions[1].message.contains("has no StageName"));

        let mut lead = sample(json!({"StageName": "Closed Won"}));
        lead.object_type = "Lead".into();
        let o = dry_run(&s, &lead);
        assert_eq!(o.reason, Some("other_object"));
        assert!(o.failed_conditions.is_empty());
    }
}
