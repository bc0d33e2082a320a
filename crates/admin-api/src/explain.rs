//! The workflow dry run: does a sample record match, and if not, which condition failed.
//!
//! The verdicts come from the workflow crate: `WorkflowSpec::decide` for the outcome (exactly
//! what the evaluator would do) and `WorkflowSpec::explain` for the condition tree with each
//! node's verdict and, where it fails, its path and reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser, FieldValue};
use crm_sync_workflow::{Decision, Explanation, Node, Verdict, WorkflowSpec};
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

impl From<&Explanation> for FailedCondition {
    fn from(e: &Explanation) -> Self {
        let (field, actual) = match &e.node {
            Node::Compare { field, actual, .. } => (Some(field.clone()), actual.clone()),
            _ => (None, None),
        };
        FailedCondition {
            path: e.path.clone(),
            condition: e.condition.clone(),
            field,
            actual,
            type_mismatch: e.verdict == Verdict::TypeMismatch,
            message: e.reason.clone().unwrap_or_default(),
        }
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
    pub fields: BTreeMap<String, FieldValue>,
    pub previous_fields: BTreeMap<String, FieldValue>,
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
    /// The whole condition tree with each node's verdict (None when the conditions were not
    /// what decided: another object or trigger, a delete, a missing value).
    pub conditions: Option<Explanation>,
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
            conditions: Some(spec.explain(event)),
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
    let conditions = about_conditions.then(|| spec.explain(event));
    Outcome {
        matched: false,
        reason,
        failed_conditions: conditions
            .as_ref()
            .map(|c| {
                c.failures()
                    .into_iter()
                    .map(FailedCondition::from)
                    .collect()
            })
            .unwrap_or_default(),
        conditions,
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
            previous_fields: BTreeMap::new(),
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
        assert_eq!(f.message, "Amount is \"500\"; the condition wants gte 1000");
        let tree = serde_json::to_value(o.conditions.as_ref().unwrap()).unwrap();
        assert_eq!(tree["kind"], "all");
        assert_eq!(tree["verdict"], "no_match");
        assert_eq!(tree["items"][0]["verdict"], "match");
        assert_eq!(tree["items"][1]["path"], "conditions/all/1");

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
