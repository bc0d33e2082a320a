//! Conditions on a record's fields, stored as JSON:
//!
//! ```json
//! {"all": [
//!   {"field": "StageName", "op": "eq", "value": "Closed Won"},
//!   {"field": "Amount", "op": "gte", "value": 1000}
//! ]}
//! ```
//!
//! Groups: `{"all": [...]}`, `{"any": [...]}`, `{"not": {...}}`. Leaves compare one field with a
//! literal; the literal's JSON type decides how the field's text is read (a number literal reads
//! the field as an exact decimal). Text comparison ignores case unless `"case_sensitive": true`,
//! since CRM picklist values differ in case between orgs and API versions.

use std::collections::HashMap;
use std::str::FromStr;

use crm_sync_proto::v1::FieldValue;
use crm_sync_proto::v1::field_value::Kind;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare(Comparison),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: String,
    pub op: Op,
    pub value: Literal,
    pub case_sensitive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        Some(match s {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "gte" => Op::Gte,
            "lt" => Op::Lt,
            "lte" => Op::Lte,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
        }
    }

    fn is_ordering(self) -> bool {
        matches!(self, Op::Gt | Op::Gte | Op::Lt | Op::Lte)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text(String),
    Number(Decimal),
    Bool(bool),
    Null,
}

/// A condition that cannot be evaluated, with a JSON-pointer-like path to the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("conditions{path}: {message}")]
pub struct ConditionError {
    pub path: String,
    pub message: String,
}

fn err(path: &str, message: impl Into<String>) -> ConditionError {
    ConditionError {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Condition {
    /// Parses and validates the stored JSON form.
    pub fn from_json(value: &Value) -> Result<Condition, ConditionError> {
        parse(value, "")
    }

    pub fn to_json(&self) -> Value {
        match self {
            Condition::All(c) => {
                json!({ "all": c.iter().map(Condition::to_json).collect::<Vec<_>>() })
            }
            Condition::Any(c) => {
                json!({ "any": c.iter().map(Condition::to_json).collect::<Vec<_>>() })
            }
            Condition::Not(c) => json!({ "not": c.to_json() }),
            Condition::Compare(c) => {
                let mut m = Map::new();
                m.insert("field".into(), Value::String(c.field.clone()));
                m.insert("op".into(), Value::String(c.op.as_str().into()));
                m.insert(
                    "value".into(),
                    match &c.value {
                        Literal::Text(t) => Value::String(t.clone()),
                        // Numbers are written as JSON numbers from their exact decimal text.
                        Literal::Number(n) => serde_json::from_str(&n.to_string())
                            .unwrap_or_else(|_| Value::String(n.to_string())),
                        Literal::Bool(b) => Value::Bool(*b),
                        Literal::Null => Value::Null,
                    },
                );
                if c.case_sensitive {
                    m.insert("case_sensitive".into(), Value::Bool(true));
                }
                Value::Object(m)
            }
        }
    }

    /// An always-true condition (a workflow that matches every record of its object).
    pub fn always() -> Condition {
        Condition::All(Vec::new())
    }

    pub fn evaluate(&self, record: &HashMap<String, FieldValue>) -> Verdict {
        match self {
            Condition::All(items) => {
                let mut verdict = Verdict::Match;
                for item in items {
                    match item.evaluate(record) {
                        Verdict::Match => {}
                        other => verdict = other,
                    }
                    if verdict != Verdict::Match {
                        return verdict;
                    }
                }
                verdict
            }
            Condition::Any(items) => {
                let mut verdict = Verdict::NoMatch;
                for item in items {
                    match item.evaluate(record) {
                        Verdict::Match => return Verdict::Match,
                        Verdict::TypeMismatch => verdict = Verdict::TypeMismatch,
                        Verdict::NoMatch => {}
                    }
                }
                verdict
            }
            Condition::Not(inner) => match inner.evaluate(record) {
                Verdict::Match => Verdict::NoMatch,
                Verdict::NoMatch => Verdict::Match,
                // A record we cannot read never matches, negated or not.
                Verdict::TypeMismatch => Verdict::TypeMismatch,
            },
            Condition::Compare(c) => c.evaluate(record),
        }
    }
}

/// The result of evaluating a condition on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Match,
    NoMatch,
    /// A field could not be read as the literal's type: no match, and counted.
    TypeMismatch,
}

impl Comparison {
    fn evaluate(&self, record: &HashMap<String, FieldValue>) -> Verdict {
        let field = record.get(&self.field).and_then(|f| f.kind.as_ref());
        let is_null = matches!(field, None | Some(Kind::NullValue(_)));
        if let Literal::Null = self.value {
            let equal = is_null;
            return bool_verdict(if self.op == Op::Ne { !equal } else { equal });
        }
        // A field the record does not carry (or carries as null) satisfies no comparison with a
        // value: "Amount != 0" on a record without an amount is not a match.
        let Some(field) = field.filter(|_| !is_null) else {
            return Verdict::NoMatch;
        };
        match &self.value {
            Literal::Number(expected) => {
                let Some(actual) = read_number(field) else {
                    return Verdict::TypeMismatch;
                };
                bool_verdict(compare(self.op, actual.cmp(expected)))
            }
            Literal::Bool(expected) => {
                let Some(actual) = read_bool(field) else {
                    return Verdict::TypeMismatch;
                };
                bool_verdict(compare(self.op, actual.cmp(expected)))
            }
            Literal::Text(expected) => {
                let actual = read_text(field);
                let equal = if self.case_sensitive {
                    actual == *expected
                } else {
                    actual.to_lowercase() == expected.to_lowercase()
                };
                bool_verdict(if self.op == Op::Ne { !equal } else { equal })
            }
            Literal::Null => Verdict::NoMatch,
        }
    }
}

fn compare(op: Op, ordering: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ordering == Equal,
        Op::Ne => ordering != Equal,
        Op::Gt => ordering == Greater,
        Op::Gte => ordering != Less,
        Op::Lt => ordering == Less,
        Op::Lte => ordering != Greater,
    }
}

fn bool_verdict(matched: bool) -> Verdict {
    if matched {
        Verdict::Match
    } else {
        Verdict::NoMatch
    }
}

pub(crate) fn read_number(field: &Kind) -> Option<Decimal> {
    match field {
        Kind::Number(n) | Kind::Text(n) => {
            let t = n.trim();
            Decimal::from_str(t)
                .or_else(|_| Decimal::from_scientific(t))
                .ok()
        }
        _ => None,
    }
}

fn read_bool(field: &Kind) -> Option<bool> {
    match field {
        Kind::Boolean(b) => Some(*b),
        Kind::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn read_text(field: &Kind) -> String {
    match field {
        Kind::Text(t) | Kind::Number(t) => t.clone(),
        Kind::Boolean(b) => b.to_string(),
        Kind::NullValue(_) => String::new(),
    }
}

fn parse(value: &Value, path: &str) -> Result<Condition, ConditionError> {
    let Value::Object(map) = value else {
        return Err(err(
            path,
            "expected an object: {\"all\"|\"any\": [...]}, {\"not\": {...}} or {\"field\", \"op\", \"value\"}",
        ));
    };
    for group in ["all", "any"] {
        if let Some(items) = map.get(group) {
            if map.len() != 1 {
                return Err(err(path, format!("a `{group}` group takes no other keys")));
            }
            let Value::Array(items) = items else {
                return Err(err(
                    &format!("{path}/{group}"),
                    "expected a list of conditions",
                ));
            };
            let parsed = items
                .iter()
                .enumerate()
                .map(|(i, item)| parse(item, &format!("{path}/{group}/{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(if group == "all" {
                Condition::All(parsed)
            } else {
                if parsed.is_empty() {
                    return Err(err(
                        &format!("{path}/any"),
                        "an `any` group needs at least one condition",
                    ));
                }
                Condition::Any(parsed)
            });
        }
    }
    if let Some(inner) = map.get("not") {
        if map.len() != 1 {
            return Err(err(path, "a `not` group takes no other keys"));
        }
        return Ok(Condition::Not(Box::new(parse(
            inner,
            &format!("{path}/not"),
        )?)));
    }
    for key in map.keys() {
        if !matches!(key.as_str(), "field" | "op" | "value" | "case_sensitive") {
            return Err(err(
                &format!("{path}/{key}"),
                format!("unknown key `{key}`"),
            ));
        }
    }
    let field = match map.get("field") {
        Some(Value::String(f)) if !f.trim().is_empty() => f.clone(),
        Some(_) => {
            return Err(err(
                &format!("{path}/field"),
                "expected a non-empty field name",
            ));
        }
        None => return Err(err(path, "missing `field`")),
    };
    let op = match map.get("op") {
        Some(Value::String(o)) => Op::parse(o).ok_or_else(|| {
            err(
                &format!("{path}/op"),
                format!("unknown operator `{o}` (expected one of eq, ne, gt, gte, lt, lte)"),
            )
        })?,
        Some(_) => return Err(err(&format!("{path}/op"), "expected an operator name")),
        None => return Err(err(path, "missing `op`")),
    };
    let literal = match map.get("value") {
        Some(Value::String(s)) => Literal::Text(s.clone()),
        Some(Value::Number(n)) => Literal::Number(
            Decimal::from_str(&n.to_string())
                .or_else(|_| Decimal::from_scientific(&n.to_string()))
                .map_err(|e| {
                    err(
                        &format!("{path}/value"),
                        format!("number out of range: {e}"),
                    )
                })?,
        ),
        Some(Value::Bool(b)) => Literal::Bool(*b),
        Some(Value::Null) => Literal::Null,
        Some(_) => {
            return Err(err(
                &format!("{path}/value"),
                "expected a text, number, boolean or null literal",
            ));
        }
        None => return Err(err(path, "missing `value`")),
    };
    let case_sensitive = match map.get("case_sensitive") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(err(
                &format!("{path}/case_sensitive"),
                "expected true or false",
            ));
        }
    };
    if op.is_ordering() && !matches!(literal, Literal::Number(_)) {
        return Err(err(
            &format!("{path}/value"),
            format!(
                "operator `{}` compares numbers: expected a number literal",
                op.as_str()
            ),
        ));
    }
    if matches!(literal, Literal::Null | Literal::Bool(_)) && op.is_ordering() {
        return Err(err(
            &format!("{path}/op"),
            "null and booleans support only eq and ne",
        ));
    }
    Ok(Condition::Compare(Comparison {
        field,
        op,
        value: literal,
        case_sensitive,
    }))
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Condition::from_json(&value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, Kind)]) -> HashMap<String, FieldValue> {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    FieldValue {
                        kind: Some(v.clone()),
                    },
                )
            })
            .collect()
    }

    fn text(s: &str) -> Kind {
        Kind::Text(s.to_owned())
    }

    fn cond(v: Value) -> Condition {
        Condition::from_json(&v).unwrap()
    }

    #[test]
    fn table_of_comparisons() {
        let r = record(&[
            ("StageName", text("Closed Won")),
            ("Amount", text("1250.50")),
            ("IsClosed", text("true")),
            ("Name", text("Ærø deal")),
            ("Empty", Kind::NullValue(true)),
        ]);
        let cases = [
            (
                json!({"field": "StageName", "op": "eq", "value": "closed won"}),
                Verdict::Match,
            ),
            (
                json!({"field": "StageName", "op": "eq", "value": "closed won", "case_sensitive": true}),
                Verdict::NoMatch,
            ),
            (
                json!({"field": "StageName", "op": "ne", "value": "Closed Lost"}),
                Verdict::Match,
            ),
            (
                json!({"field": "Amount", "op": "gte", "value": 1250.5}),
                Verdict::Match,
            ),
            (
                json!({"field": "Amount", "op": "gt", "value": 1250.5}),
                Verdict::NoMatch,
            ),
            (
                json!({"field": "Amount", "op": "lt", "value": 2000}),
                Verdict::Match,
            ),
            (
                json!({"field": "Amount", "op": "lte", "value": 1250.49}),
                Verdict::NoMatch,
            ),
            (
                json!({"field": "Amount", "op": "eq", "value": 1250.5}),
                Verdict::Match,
            ),
            (
                json!({"field": "StageName", "op": "gt", "value": 3}),
                Verdict::TypeMismatch,
            ),
            (
                json!({"field": "IsClosed", "op": "eq", "value": true}),
                Verdict::Match,
            ),
            (
                json!({"field": "Name", "op": "eq", "value": "ÆRØ DEAL"}),
                Verdict::Match,
            ),
            (
                json!({"field": "Missing", "op": "eq", "value": "x"}),
                Verdict::NoMatch,
            ),
            (
                json!({"field": "Missing", "op": "ne", "value": "x"}),
                Verdict::NoMatch,
            ),
            (
                json!({"field": "Missing", "op": "eq", "value": null}),
                Verdict::Match,
            ),
            (
                json!({"field": "Empty", "op": "eq", "value": null}),
                Verdict::Match,
            ),
            (
                json!({"field": "StageName", "op": "ne", "value": null}),
                Verdict::Match,
            ),
        ];
        for (c, expected) in cases {
            assert_eq!(cond(c.clone()).evaluate(&r), expected, "{c}");
        }
    }

    #[test]
    fn money_is_exact() {
        let r = record(&[("Amount", Kind::Number("0.3".into()))]);
        // 0.1 + 0.2 in binary floating point is not 0.3; in decimals it is.
        assert_eq!(
            cond(json!({"field": "Amount", "op": "eq", "value": 0.3})).evaluate(&r),
            Verdict::Match
        );
    }

    #[test]
    fn groups_combine() {
        let r = record(&[("StageName", text("Closed Won")), ("Amount", text("500"))]);
        let won = json!({"field": "StageName", "op": "eq", "value": "Closed Won"});
        let big = json!({"field": "Amount", "op": "gte", "value": 1000});
        assert_eq!(
            cond(json!({"all": [won, big]})).evaluate(&r),
            Verdict::NoMatch
        );
        assert_eq!(
            cond(json!({"any": [won, big]})).evaluate(&r),
            Verdict::Match
        );
        assert_eq!(cond(json!({"not": big})).evaluate(&r), Verdict::Match);
        assert_eq!(cond(json!({"all": []})).evaluate(&r), Verdict::Match);
    }

    #[test]
    fn invalid_conditions_point_at_the_offending_part() {
        let cases = [
            (
                json!({"all": [{"field": "A", "op": "like", "value": "x"}]}),
                "conditions/all/0/op",
            ),
            (
                json!({"field": "A", "op": "gt", "value": "x"}),
                "conditions/value",
            ),
            (json!({"any": []}), "conditions/any"),
            (
                json!({"field": "", "op": "eq", "value": 1}),
                "conditions/field",
            ),
            (json!({"field": "A", "op": "eq"}), "conditions:"),
            (
                json!({"not": {"field": "A", "op": "eq", "value": 1, "extra": 1}}),
                "conditions/not/extra",
            ),
            (json!([1]), "conditions:"),
        ];
        for (c, path) in cases {
            let e = Condition::from_json(&c).unwrap_err().to_string();
            assert!(e.starts_with(path), "{c} -> {e}");
        }
    }

    #[test]
    fn json_round_trips() {
        let c = json!({"all": [
            {"field": "StageName", "op": "eq", "value": "Closed Won", "case_sensitive": true},
            {"not": {"field": "Amount", "op": "lt", "value": 1000.25}},
            {"any": [{"field": "X", "op": "eq", "value": null}, {"field": "Y", "op": "ne", "value": false}]}
        ]});
        assert_eq!(cond(c.clone()).to_json(), c);
    }
}
