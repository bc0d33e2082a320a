//! The stored JSON form of a condition: parsing with validation, and writing it back.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::operators::{OPS, Operand};
use super::values::{iso_date, parse_bool, parse_decimal};
use super::{Comparison, Condition, ConditionError, Literal, Op, ValueType, err};

impl Comparison {
    /// The literal(s) as written.
    pub(crate) fn raw_value(&self) -> Option<&Value> {
        self.raw_value.as_ref()
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("field".into(), Value::String(self.field.clone()));
        m.insert("op".into(), Value::String(self.op.as_str().into()));
        if let Some(value) = &self.raw_value {
            m.insert("value".into(), value.clone());
        }
        if let Some(t) = self.raw_type {
            m.insert("type".into(), Value::String(t.as_str().into()));
        }
        if self.case_sensitive {
            m.insert("case_sensitive".into(), Value::Bool(true));
        }
        Value::Object(m)
    }
}

pub(super) fn parse(value: &Value, path: &str) -> Result<Condition, ConditionError> {
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
    parse_leaf(map, path).map(Condition::Compare)
}

fn parse_leaf(map: &Map<String, Value>, path: &str) -> Result<Comparison, ConditionError> {
    check_leaf_keys(map, path)?;
    let field = leaf_field(map, path)?;
    let op = leaf_op(map, path)?;
    let raw_type = leaf_type(map, path)?;
    let case_sensitive = leaf_case_sensitive(map, path)?;
    let value_path = format!("{path}/value");
    let raw_value = map.get("value").cloned();
    let (value_type, values) = leaf_values(op, raw_type, raw_value.as_ref(), path)?;
    check_operand(op, value_type, &values, &value_path)?;
    Ok(Comparison {
        field,
        op,
        value_type,
        values,
        case_sensitive,
        raw_value,
        raw_type,
    })
}

fn check_leaf_keys(map: &Map<String, Value>, path: &str) -> Result<(), ConditionError> {
    for key in map.keys() {
        if !matches!(
            key.as_str(),
            "field" | "op" | "value" | "type" | "case_sensitive"
        ) {
            return Err(err(
                &format!("{path}/{key}"),
                format!(
                    "unknown key `{key}` (a condition has field, op, value, type, case_sensitive; a group is all, any or not)"
                ),
            ));
        }
    }
    Ok(())
}

fn leaf_field(map: &Map<String, Value>, path: &str) -> Result<String, ConditionError> {
    match map.get("field") {
        Some(Value::String(f)) if !f.trim().is_empty() => Ok(f.clone()),
        Some(_) => Err(err(
            &format!("{path}/field"),
            "expected a non-empty field name",
        )),
        None => Err(err(path, "missing `field`")),
    }
}

fn leaf_op(map: &Map<String, Value>, path: &str) -> Result<Op, ConditionError> {
    let op_path = format!("{path}/op");
    match map.get("op") {
        Some(Value::String(o)) => Op::parse(o).ok_or_else(|| {
            let names: Vec<&str> = OPS.iter().map(|(n, _)| *n).collect();
            err(
                &op_path,
                format!(
                    "unknown operator `{o}` (expected one of {})",
                    names.join(", ")
                ),
            )
        }),
        Some(_) => Err(err(&op_path, "expected an operator name")),
        None => Err(err(path, "missing `op`")),
    }
}

fn leaf_type(map: &Map<String, Value>, path: &str) -> Result<Option<ValueType>, ConditionError> {
    match map.get("type") {
        None => Ok(None),
        Some(Value::String(t)) => Ok(Some(ValueType::parse(t).ok_or_else(|| {
            err(
                &format!("{path}/type"),
                format!(
                    "unknown type `{t}` (expected one of text, number, boolean, date, datetime)"
                ),
            )
        })?)),
        Some(_) => Err(err(&format!("{path}/type"), "expected a type name")),
    }
}

fn leaf_case_sensitive(map: &Map<String, Value>, path: &str) -> Result<bool, ConditionError> {
    match map.get("case_sensitive") {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(err(
            &format!("{path}/case_sensitive"),
            "expected true or false",
        )),
    }
}

/// The leaf's literals as its operator takes them, and the type they are compared as.
fn leaf_values(
    op: Op,
    raw_type: Option<ValueType>,
    raw_value: Option<&Value>,
    path: &str,
) -> Result<(ValueType, Vec<Literal>), ConditionError> {
    let value_path = format!("{path}/value");
    match (op.operand(), raw_value) {
        (Operand::None, Some(_)) => Err(err(&value_path, format!("`{op}` takes no value"))),
        (Operand::None, None) => Ok((raw_type.unwrap_or(ValueType::Text), Vec::new())),
        (_, None) => Err(err(path, "missing `value`")),
        (Operand::One, Some(Value::Null)) => {
            if !matches!(op, Op::Eq | Op::Ne) || raw_type.is_some() {
                return Err(err(
                    &value_path,
                    format!(
                        "`{op}` needs a value; to test for an empty field use is_empty / is_not_empty"
                    ),
                ));
            }
            Ok((ValueType::Text, Vec::new()))
        }
        (Operand::One, Some(value)) => {
            let literal = literal(value, raw_type, op, &value_path)?;
            let blank = matches!(&literal, Literal::Text { text, .. } if text.trim().is_empty());
            let value_type = literal.value_type();
            if blank && matches!(op, Op::Eq | Op::Ne) {
                // Blank text is how some CRMs say "empty": compare emptiness, as for null.
                Ok((value_type, Vec::new()))
            } else {
                Ok((value_type, vec![literal]))
            }
        }
        (Operand::List, Some(Value::Array(items))) => {
            if items.is_empty() {
                return Err(err(
                    &value_path,
                    format!("an `{op}` list needs at least one value"),
                ));
            }
            let mut values: Vec<Literal> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{value_path}/{i}");
                if item.is_null() {
                    return Err(err(
                        &item_path,
                        "null cannot be listed; combine with is_empty in an `any` group",
                    ));
                }
                let literal = literal(item, raw_type, op, &item_path)?;
                if let Some(first) = values.first()
                    && first.value_type() != literal.value_type()
                {
                    return Err(err(
                        &item_path,
                        format!(
                            "every value of a list has the same type: expected {}, got {}",
                            first.value_type(),
                            literal.value_type()
                        ),
                    ));
                }
                values.push(literal);
            }
            let value_type = values.first().map_or(ValueType::Text, Literal::value_type);
            Ok((value_type, values))
        }
        (Operand::List, Some(_)) => Err(err(
            &value_path,
            format!("`{op}` takes a list of values, e.g. [\"Closed Won\", \"Closed Lost\"]"),
        )),
    }
}

/// Orderings take numbers and dates, `contains` and `starts_with` non-empty text.
fn check_operand(
    op: Op,
    value_type: ValueType,
    values: &[Literal],
    value_path: &str,
) -> Result<(), ConditionError> {
    if op.is_ordering() && !value_type.orders() {
        return Err(err(
            value_path,
            format!(
                "operator `{op}` compares numbers and dates: expected a number, a date (YYYY-MM-DD) or a date-time literal, got {value_type}"
            ),
        ));
    }
    if matches!(op, Op::Contains | Op::StartsWith) {
        match values.first() {
            Some(Literal::Text { text, .. }) if !text.is_empty() => {}
            Some(Literal::Text { .. }) => {
                return Err(err(value_path, format!("`{op}` needs non-empty text")));
            }
            _ => {
                return Err(err(
                    value_path,
                    format!("`{op}` compares text: expected a text literal, got {value_type}"),
                ));
            }
        }
    }
    Ok(())
}

/// A JSON literal as `wanted` (or, without it, as its JSON type says).
fn literal(
    value: &Value,
    wanted: Option<ValueType>,
    op: Op,
    path: &str,
) -> Result<Literal, ConditionError> {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    let date = |s: &str| iso_date(s.trim());
    let datetime = |s: &str| {
        DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|d| d.with_timezone(&Utc))
    };
    match (wanted, value) {
        // Orderings compare numbers and dates only, so an ISO date string can only mean a date.
        (None, Value::String(s)) if op.is_ordering() => {
            if let Some(d) = date(s) {
                Ok(Literal::Date(d))
            } else if let Some(t) = datetime(s) {
                Ok(Literal::DateTime(t))
            } else {
                Err(err(
                    path,
                    format!("operator `{op}` compares numbers and dates: expected a number, a date (YYYY-MM-DD) or a date-time literal, got text {s:?}"),
                ))
            }
        }
        (None | Some(ValueType::Text), Value::String(s)) => Ok(Literal::text(s.clone())),
        (Some(ValueType::Text), Value::Number(n)) => Ok(Literal::text(n.to_string())),
        (None | Some(ValueType::Number), Value::Number(n)) => parse_decimal(&n.to_string())
            .map(Literal::Number)
            .ok_or_else(|| err(path, format!("number {n} is out of range"))),
        (Some(ValueType::Number), Value::String(s)) => parse_decimal(s)
            .map(Literal::Number)
            .ok_or_else(|| err(path, format!("expected a number, got {s:?}"))),
        (None | Some(ValueType::Boolean), Value::Bool(b)) => Ok(Literal::Boolean(*b)),
        (Some(ValueType::Boolean), Value::String(s)) => parse_bool(s)
            .map(Literal::Boolean)
            .ok_or_else(|| err(path, format!("expected true or false, got {s:?}"))),
        (Some(ValueType::Date), Value::String(s)) => date(s)
            .map(Literal::Date)
            .ok_or_else(|| err(path, format!("expected a date YYYY-MM-DD, got {s:?}"))),
        (Some(ValueType::DateTime), Value::String(s)) => datetime(s)
            .map(Literal::DateTime)
            .ok_or_else(|| {
                err(
                    path,
                    format!("expected an ISO 8601 date-time with a time zone, e.g. 2026-11-20T17:00:00Z, got {s:?}"),
                )
            }),
        (Some(t), _) => Err(err(path, format!("expected a {t} literal, got {kind}"))),
        (None, _) => Err(err(
            path,
            format!("expected a text, number or boolean literal, got {kind}"),
        )),
    }
}
