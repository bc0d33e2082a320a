//! Why a workflow's conditions hold or not on a record: the condition tree with each node's
//! verdict, by the same three-valued rules as [`Condition::evaluate_record`], and for every node
//! that does not match its path (`conditions/all/0`) and a reason in words.
//!
//! Admins dry-run a workflow on a sample record before activating it; "does not match" alone
//! does not tell them which of a dozen conditions to fix.

use serde::Serialize;
use serde_json::Value;

use crm_sync_proto::v1::CrmEvent;
use crm_sync_proto::view::ValueRef;

use crate::condition::{Comparison, Condition, Mode, Previous, Record, Verdict};
use crate::spec::WorkflowSpec;

/// One node of the condition tree and how it fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Where the node is, as a slash path from the workflow: `conditions`, `conditions/all/1`,
    /// `conditions/any/0/not` (the paths validation errors use too).
    pub path: String,
    pub verdict: Verdict,
    /// Why the node is not a match, in words; None when it matches.
    pub reason: Option<String>,
    #[serde(flatten)]
    pub node: Node,
    /// The node as stored (a group with its whole subtree); not serialized, since the tree
    /// itself shows it.
    #[serde(skip)]
    pub condition: Value,
}

/// What kind of node, with its children or, for a comparison, what it compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Node {
    All {
        items: Vec<Explanation>,
    },
    Any {
        items: Vec<Explanation>,
    },
    Not {
        item: Box<Explanation>,
    },
    Compare {
        field: String,
        op: &'static str,
        /// The literal(s) as written; absent for operators that take none.
        #[serde(skip_serializing_if = "Option::is_none")]
        value: Option<Value>,
        /// The record's value of the field; absent when the record does not carry it.
        #[serde(skip_serializing_if = "Option::is_none")]
        actual: Option<Value>,
        /// The field's previous value, where the event says it (change operators only).
        #[serde(skip_serializing_if = "Option::is_none")]
        previous: Option<Value>,
    },
}

impl Explanation {
    /// The nodes to show an admin as failed, outermost first: every failing comparison, and the
    /// `any` and `not` groups that failed as a whole (an `all` fails exactly when one of its
    /// items does, so it adds nothing). Empty when the tree matches.
    pub fn failures(&self) -> Vec<&Explanation> {
        let mut out = Vec::new();
        self.collect_failures(&mut out);
        out
    }

    fn collect_failures<'a>(&'a self, out: &mut Vec<&'a Explanation>) {
        if self.verdict == Verdict::Match {
            return;
        }
        match &self.node {
            Node::All { items } => items.iter().for_each(|i| i.collect_failures(out)),
            Node::Any { items } => {
                out.push(self);
                items.iter().for_each(|i| i.collect_failures(out));
            }
            // The inner condition matched (that is why the `not` fails): nothing inside to fix.
            Node::Not { .. } | Node::Compare { .. } => out.push(self),
        }
    }
}

impl Condition {
    /// Explains [`Condition::evaluate_record`]: the same verdict at the root, and one for every
    /// node (every child is evaluated, where evaluation stops at the first decisive one).
    /// `path` names this node, e.g. `conditions`.
    pub fn explain(&self, record: &Record<'_>, mode: Mode, path: &str) -> Explanation {
        let (verdict, node) = match self {
            Condition::All(items) => {
                let items: Vec<Explanation> = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| c.explain(record, mode, &format!("{path}/all/{i}")))
                    .collect();
                let verdict = items.iter().fold(Verdict::Match, |v, i| v.and(i.verdict));
                (verdict, Node::All { items })
            }
            Condition::Any(items) => {
                let items: Vec<Explanation> = items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| c.explain(record, mode, &format!("{path}/any/{i}")))
                    .collect();
                // any = not(all(not …)), as in evaluation.
                let verdict = items
                    .iter()
                    .fold(Verdict::Match, |v, i| v.and(i.verdict.not()))
                    .not();
                (verdict, Node::Any { items })
            }
            Condition::Not(inner) => {
                let item = inner.explain(record, mode, &format!("{path}/not"));
                (
                    item.verdict.not(),
                    Node::Not {
                        item: Box::new(item),
                    },
                )
            }
            Condition::Compare(c) => (c.evaluate(record, mode), compared(c, record)),
        };
        let reason = (verdict != Verdict::Match).then(|| reason(&node, verdict));
        Explanation {
            path: path.to_owned(),
            verdict,
            reason,
            node,
            condition: self.to_json(),
        }
    }
}

impl Condition {
    /// The reasons of [`Explanation::failures`], in the same order, without building the tree:
    /// only the failing nodes are worded. The record trail words every workflow that did not
    /// count an event, so this runs per event and workflow.
    pub fn failure_reasons(&self, record: &Record<'_>, mode: Mode) -> Vec<String> {
        let mut out = Vec::new();
        self.push_failures(record, mode, &mut out);
        out
    }

    /// Pushes the reasons of this node's failures (as `collect_failures` picks them); returns
    /// its verdict.
    fn push_failures(&self, record: &Record<'_>, mode: Mode, out: &mut Vec<String>) -> Verdict {
        match self {
            Condition::All(items) | Condition::Any(items) => {
                let start = out.len();
                let verdicts: Vec<Verdict> = items
                    .iter()
                    .map(|c| c.push_failures(record, mode, out))
                    .collect();
                let any = matches!(self, Condition::Any(_));
                let verdict = if any {
                    verdicts
                        .iter()
                        .fold(Verdict::Match, |v, i| v.and(i.not()))
                        .not()
                } else {
                    verdicts.iter().fold(Verdict::Match, |v, i| v.and(*i))
                };
                // A group that holds shows nothing of its items; a failing `any` comes before
                // its items.
                if verdict == Verdict::Match {
                    out.truncate(start);
                } else if any {
                    out.insert(start, any_reason(verdicts.len(), verdict));
                }
                verdict
            }
            Condition::Not(inner) => {
                let inner_verdict = inner.evaluate_record(record, mode);
                if inner_verdict.not() != Verdict::Match {
                    out.push(not_reason(inner_verdict));
                }
                inner_verdict.not()
            }
            Condition::Compare(c) => {
                let verdict = c.evaluate(record, mode);
                if verdict != Verdict::Match {
                    out.push(reason(&compared(c, record), verdict));
                }
                verdict
            }
        }
    }
}

impl WorkflowSpec {
    /// The workflow's conditions explained on the event, as [`WorkflowSpec::decide`] evaluates
    /// them for a match (previous values from the event). Object type and triggers are not
    /// conditions: `decide` says when those are the reason.
    pub fn explain(&self, event: &CrmEvent) -> Explanation {
        self.conditions
            .explain(&Record::of_event(event), Mode::Full, "conditions")
    }
}

fn compared(c: &Comparison, record: &Record<'_>) -> Node {
    let previous = match record.previous {
        Previous::Sent(fields) if c.op.is_change() => fields.get(&c.field).map(field_json),
        _ => None,
    };
    Node::Compare {
        field: c.field.clone(),
        op: c.op.as_str(),
        value: c.raw_value().cloned(),
        actual: record.fields.get(&c.field).map(field_json),
        previous,
    }
}

fn reason(node: &Node, verdict: Verdict) -> String {
    match node {
        Node::All { items } => {
            let failed = items.iter().filter(|i| i.verdict != Verdict::Match).count();
            match verdict {
                Verdict::NoMatch => {
                    format!("{failed} of the {} conditions do not hold", items.len())
                }
                Verdict::TypeMismatch => {
                    "a field could not be read as its condition's type".to_owned()
                }
                _ => "depends on fields the record does not carry".to_owned(),
            }
        }
        Node::Any { items } => any_reason(items.len(), verdict),
        Node::Not { item } => not_reason(item.verdict),
        Node::Compare {
            field,
            op,
            value,
            actual,
            previous,
        } => {
            let wants = match value {
                Some(v) => format!("the condition wants {op} {v}"),
                None => format!("the condition wants {op}"),
            };
            let is_change = matches!(*op, "changed" | "changed_to" | "changed_from");
            match (actual, verdict) {
                (None, _) => format!("the record has no {field}; {wants}"),
                (Some(a), Verdict::TypeMismatch) => match value {
                    Some(v) => format!("{field} is {a}, which cannot be compared with {v}"),
                    None => format!("{field} is {a}, which cannot be read as the condition's type"),
                },
                (Some(_), Verdict::Unknown) if is_change => format!(
                    "the event does not say what {field} was before, so whether it changed is unknown; {wants}"
                ),
                (Some(a), _) if is_empty(a) => format!("{field} is empty; {wants}"),
                (Some(a), _) => match previous {
                    Some(p) if is_change => format!("{field} is {a} (was {p}); {wants}"),
                    _ => format!("{field} is {a}; {wants}"),
                },
            }
        }
    }
}

fn any_reason(items: usize, verdict: Verdict) -> String {
    match verdict {
        Verdict::NoMatch => format!("none of the {items} alternatives matched"),
        Verdict::TypeMismatch => {
            "no alternative matched, and a field could not be read as its condition's type"
                .to_owned()
        }
        _ => "no alternative matched; some depend on fields the record does not carry".to_owned(),
    }
}

fn not_reason(inner: Verdict) -> String {
    match inner {
        Verdict::Match => "the negated condition matched".to_owned(),
        _ => "the negated condition cannot be decided on this record".to_owned(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// A field value as JSON: text as a string, a number as a JSON number where it is one.
pub fn field_json(f: ValueRef<'_>) -> Value {
    match f {
        ValueRef::Text(t) => Value::String(t.to_owned()),
        ValueRef::Number(n) => {
            serde_json::from_str(n).unwrap_or_else(|_| Value::String(n.to_owned()))
        }
        ValueRef::Boolean(b) => Value::Bool(b),
        ValueRef::Null(_) | ValueRef::Unset => Value::Null,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {

    use crm_sync_proto::v1::field_value::Kind;
    use crm_sync_proto::v1::{ChangeType, FieldValue};
    use serde_json::json;

    use super::*;
    use crate::condition::Fields;

    fn fields(v: Value) -> Fields {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    Value::String(s) => Kind::Text(s.clone()),
                    Value::Number(n) => Kind::Number(n.to_string()),
                    Value::Bool(b) => Kind::Boolean(*b),
                    _ => Kind::NullValue(true),
                };
                (k.clone(), FieldValue { kind: Some(kind) })
            })
            .collect()
    }

    fn condition(v: Value) -> Condition {
        Condition::from_json(&v).unwrap()
    }

    fn explain(c: &Condition, f: &Fields) -> Explanation {
        c.explain(&Record::of_fields(f), Mode::Full, "conditions")
    }

    #[test]
    fn every_node_gets_a_verdict_and_failures_a_path_and_reason() {
        let c = condition(json!({"all": [
            {"field": "StageName", "op": "eq", "value": "Closed Won"},
            {"field": "Amount", "op": "gte", "value": 1000},
            {"any": [
                {"field": "Region", "op": "in", "value": ["EMEA", "APAC"]},
                {"not": {"field": "Type", "op": "eq", "value": "Renewal"}}
            ]}
        ]}));
        let f = fields(
            json!({"StageName": "closed won", "Amount": 50, "Region": "AMER", "Type": "Renewal"}),
        );
        let e = explain(&c, &f);
        assert_eq!(e.verdict, Verdict::NoMatch);
        assert_eq!(
            e.reason.as_deref(),
            Some("2 of the 3 conditions do not hold")
        );
        let Node::All { items } = &e.node else {
            panic!("{e:?}")
        };
        assert_eq!(items[0].verdict, Verdict::Match);
        assert_eq!(items[0].reason, None);
        assert_eq!(
            items[1].reason.as_deref(),
            Some("Amount is 50; the condition wants gte 1000")
        );
        let failures: Vec<(&str, &str)> = e
            .failures()
            .iter()
            .map(|f| (f.path.as_str(), f.reason.as_deref().unwrap()))
            .collect();
        assert_eq!(
            failures,
            [
                (
                    "conditions/all/1",
                    "Amount is 50; the condition wants gte 1000"
                ),
                ("conditions/all/2", "none of the 2 alternatives matched"),
                (
                    "conditions/all/2/any/0",
                    "Region is \"AMER\"; the condition wants in [\"EMEA\",\"APAC\"]"
                ),
                ("conditions/all/2/any/1", "the negated condition matched"),
            ]
        );
        assert_eq!(
            e.failures()[1].condition,
            json!({"any": [
                {"field": "Region", "op": "in", "value": ["EMEA", "APAC"]},
                {"not": {"field": "Type", "op": "eq", "value": "Renewal"}}
            ]})
        );
    }

    #[test]
    fn missing_fields_type_mismatches_and_empties_are_told_apart() {
        let c = condition(json!({"all": [
            {"field": "StageName", "op": "eq", "value": "Closed Won"},
            {"field": "Amount", "op": "gt", "value": 0},
            {"field": "Owner", "op": "is_not_empty"}
        ]}));
        let e = explain(&c, &fields(json!({"Amount": "lots", "Owner": " "})));
        let reasons: Vec<&str> = e
            .failures()
            .iter()
            .map(|f| f.reason.as_deref().unwrap())
            .collect();
        assert_eq!(
            reasons,
            [
                "the record has no StageName; the condition wants eq \"Closed Won\"",
                "Amount is \"lots\", which cannot be compared with 0",
                "Owner is empty; the condition wants is_not_empty",
            ]
        );
        assert_eq!(e.verdict, Verdict::NoMatch);
        let partial = explain(&c, &fields(json!({"Amount": "lots", "Owner": "005"})));
        assert_eq!(partial.verdict, Verdict::TypeMismatch);
        assert_eq!(partial.failures()[0].verdict, Verdict::Unknown);
    }

    #[test]
    fn change_operators_say_what_the_field_was() {
        let spec: WorkflowSpec = serde_json::from_value(json!({
            "name": "Won", "object_type": "Opportunity", "triggers": ["updated"],
            "conditions": {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
            "user_field": "OwnerId", "activity_type": "deal_won"
        }))
        .unwrap();
        let mut event = CrmEvent {
            object_type: "Opportunity".into(),
            fields: fields(json!({"StageName": "Closed Won"})),
            previous_fields: fields(json!({"StageName": "Closed Won"})),
            ..Default::default()
        };
        event.set_change_type(ChangeType::Updated);
        let e = spec.explain(&event);
        assert_eq!(e.path, "conditions");
        assert_eq!(
            e.reason.as_deref(),
            Some(
                "StageName is \"Closed Won\" (was \"Closed Won\"); the condition wants changed_to \"Closed Won\""
            )
        );
        event.previous_fields = Fields::new();
        let e = spec.explain(&event);
        assert_eq!(e.verdict, Verdict::Unknown);
        assert!(
            e.reason
                .as_deref()
                .unwrap()
                .contains("does not say what StageName was before"),
            "{e:?}"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "compare");
        assert_eq!(json["verdict"], "unknown");
        assert_eq!(json["actual"], "Closed Won");
    }

    proptest::proptest! {
        /// The explanation's root verdict is the evaluator's, whatever the record.
        #[test]
        fn the_root_verdict_is_the_evaluators(
            stage in proptest::option::of(proptest::sample::select(vec!["Closed Won", "Open", ""])),
            amount in proptest::option::of(proptest::sample::select(vec!["50", "5000", "x"])),
            region in proptest::option::of(proptest::sample::select(vec!["EMEA", "AMER"])),
        ) {
            let c = condition(json!({"all": [
                {"field": "StageName", "op": "eq", "value": "Closed Won"},
                {"any": [
                    {"field": "Amount", "op": "gte", "value": 1000},
                    {"not": {"field": "Region", "op": "ne", "value": "EMEA"}}
                ]}
            ]}));
            let mut f = serde_json::Map::new();
            if let Some(s) = stage { f.insert("StageName".into(), json!(s)); }
            if let Some(a) = amount { f.insert("Amount".into(), json!(a)); }
            if let Some(r) = region { f.insert("Region".into(), json!(r)); }
            let f = fields(Value::Object(f));
            proptest::prop_assert_eq!(explain(&c, &f).verdict, c.evaluate(&f));
        }

        /// The reasons the record trail keeps are the explanation's failures, in its order,
        /// whatever the record and its previous values.
        #[test]
        fn failure_reasons_are_the_explanations_failures(
            stage in proptest::option::of(proptest::sample::select(vec!["Closed Won", "Lost", ""])),
            was in proptest::option::of(proptest::sample::select(vec!["Closed Won", "Open"])),
            amount in proptest::option::of(proptest::sample::select(vec!["50", "5000", "x"])),
            region in proptest::option::of(proptest::sample::select(vec!["EMEA", "AMER"])),
        ) {
            let c = condition(json!({"all": [
                {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
                {"any": [
                    {"field": "Amount", "op": "gte", "value": 1000},
                    {"not": {"field": "Region", "op": "ne", "value": "EMEA"}},
                    {"all": [
                        {"field": "Region", "op": "eq", "value": "AMER"},
                        {"field": "Amount", "op": "lt", "value": 100}
                    ]}
                ]},
                {"not": {"any": [{"field": "StageName", "op": "eq", "value": "Lost"}]}}
            ]}));
            let mut f = serde_json::Map::new();
            if let Some(s) = stage { f.insert("StageName".into(), json!(s)); }
            if let Some(a) = amount { f.insert("Amount".into(), json!(a)); }
            if let Some(r) = region { f.insert("Region".into(), json!(r)); }
            let f = fields(Value::Object(f));
            let p = fields(was.map_or(json!({}), |w| json!({"StageName": w})));
            let record = Record { fields: &f, previous: Previous::Sent(&p) };
            let expected: Vec<String> = c
                .explain(&record, Mode::Full, "conditions")
                .failures()
                .iter()
                .filter_map(|e| e.reason.clone())
                .collect();
            proptest::prop_assert_eq!(c.failure_reasons(&record, Mode::Full), expected);
        }
    }
}
