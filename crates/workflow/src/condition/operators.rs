//! The operators and value types a leaf may name, and its typed literals.

use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::text::fold;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    In,
    NotIn,
    Contains,
    StartsWith,
    Gt,
    Gte,
    Lt,
    Lte,
    IsEmpty,
    IsNotEmpty,
    Changed,
    ChangedTo,
    ChangedFrom,
}

pub(super) const OPS: [(&str, Op); 15] = [
    ("eq", Op::Eq),
    ("ne", Op::Ne),
    ("in", Op::In),
    ("not_in", Op::NotIn),
    ("contains", Op::Contains),
    ("starts_with", Op::StartsWith),
    ("gt", Op::Gt),
    ("gte", Op::Gte),
    ("lt", Op::Lt),
    ("lte", Op::Lte),
    ("is_empty", Op::IsEmpty),
    ("is_not_empty", Op::IsNotEmpty),
    ("changed", Op::Changed),
    ("changed_to", Op::ChangedTo),
    ("changed_from", Op::ChangedFrom),
];

/// What an operator takes as `value`.
pub(super) enum Operand {
    None,
    One,
    List,
}

impl Op {
    pub fn parse(s: &str) -> Option<Op> {
        OPS.iter().find(|(name, _)| *name == s).map(|(_, op)| *op)
    }

    pub fn as_str(self) -> &'static str {
        OPS.iter()
            .find(|(_, op)| *op == self)
            .map_or("?", |(name, _)| name)
    }

    pub(super) fn is_ordering(self) -> bool {
        matches!(self, Op::Gt | Op::Gte | Op::Lt | Op::Lte)
    }

    /// Operators that look at the previous value.
    pub fn is_change(self) -> bool {
        matches!(self, Op::Changed | Op::ChangedTo | Op::ChangedFrom)
    }

    pub(super) fn operand(self) -> Operand {
        match self {
            Op::IsEmpty | Op::IsNotEmpty | Op::Changed => Operand::None,
            Op::In | Op::NotIn => Operand::List,
            _ => Operand::One,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Text,
    Number,
    Boolean,
    Date,
    DateTime,
}

impl ValueType {
    pub fn parse(s: &str) -> Option<ValueType> {
        Some(match s {
            "text" => ValueType::Text,
            "number" => ValueType::Number,
            "boolean" => ValueType::Boolean,
            "date" => ValueType::Date,
            "datetime" => ValueType::DateTime,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::Text => "text",
            ValueType::Number => "number",
            ValueType::Boolean => "boolean",
            ValueType::Date => "date",
            ValueType::DateTime => "datetime",
        }
    }

    pub(super) fn orders(self) -> bool {
        matches!(
            self,
            ValueType::Number | ValueType::Date | ValueType::DateTime
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed literal, prepared for comparison (text is case-folded once, when parsed).
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Text { text: String, folded: String },
    Number(Decimal),
    Boolean(bool),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Literal {
    pub fn text(text: impl Into<String>) -> Literal {
        let text = text.into();
        let folded = fold(&text).into_owned();
        Literal::Text { text, folded }
    }

    pub(super) fn value_type(&self) -> ValueType {
        match self {
            Literal::Text { .. } => ValueType::Text,
            Literal::Number(_) => ValueType::Number,
            Literal::Boolean(_) => ValueType::Boolean,
            Literal::Date(_) => ValueType::Date,
            Literal::DateTime(_) => ValueType::DateTime,
        }
    }
}
