//! Conditions on a record's fields, stored as JSON (YAML in a tenants file):
//!
//! ```json
//! {"all": [
//!   {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
//!   {"field": "Amount", "op": "gte", "value": 1000},
//!   {"field": "CloseDate", "op": "gte", "value": "2026-01-01", "type": "date"}
//! ]}
//! ```
//!
//! Groups: `{"all": [...]}`, `{"any": [...]}` (at least one item), `{"not": {...}}`, nested
//! freely. A leaf compares one field with a literal: `{"field", "op", "value", "type",
//! "case_sensitive"}`.
//!
//! **Types.** `type` is `text`, `number`, `boolean`, `date` or `datetime`; without it the JSON
//! literal decides (a string is text, a number is a number, `true`/`false` a boolean), except that
//! `gt`/`gte`/`lt`/`lte` read an ISO date (`2026-11-20`) or date-time string as one. The type says
//! how the field's text is read: numbers as exact decimals (`1250.50`, never binary floats),
//! booleans from `true`/`false`, dates and date-times from ISO 8601 or Unix epoch milliseconds.
//!
//! **Time zones.** A date-time literal must carry its offset (`Z` or `±hh:mm`). Dates are UTC
//! calendar dates: a date-time field compared with a date literal counts as the UTC date of its
//! instant; a date-only field compared with a date-time literal stands for midnight UTC at the
//! start of that day; a field date-time without offset is taken as UTC.
//!
//! **Text.** Text comparison ignores case unless `"case_sensitive": true`, since CRM picklist
//! values differ in case between orgs and API versions; case is folded with full Unicode case
//! folding after canonical decomposition (`STRASSE` equals `straße`, a decomposed `é` equals a
//! composed one).
//!
//! **Empty and missing fields.** A field is *empty* when it is null or blank text. Empty
//! equals nothing: `eq`, `in`, `contains`, `starts_with` and the orderings are false on it, `ne`
//! and `not_in` true. A field the event does not carry at all is *unknown* (partial updates
//! send only some fields): it satisfies no comparison, negated or not, and so never causes a
//! retraction. Only `is_empty` (and the older `eq null`) treat a missing field as empty.
//!
//! **Changes.** `changed`, `changed_to` and `changed_from` compare the field with its previous
//! value, read as the leaf's type. The previous value is known on a *created* event (nothing: a
//! field with a value there has changed from empty) and on an *updated* event that carries the
//! field in `previous_fields`. A field absent from `previous_fields` was not sent, so whether it
//! changed is unknown: the leaf neither matches nor fails (an `all` with another false leaf is
//! still false). Deleted events know no previous values.
//!
//! Evaluation is three-valued (plus a type-mismatch flag): a workflow matches a record only when
//! its conditions are definitely true, and a retraction needs them definitely false.

mod evaluate;
mod leaves;
mod operators;
mod parse;
mod text;
mod values;
mod verdict;

use std::collections::BTreeMap;

use crm_sync_proto::v1::FieldValue;
use crm_sync_proto::view::ValueRef;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use leaves::{EachTime, Leaves};
pub use operators::{Literal, Op, ValueType};
pub(crate) use text::is_blank;
pub(crate) use values::{When, parse_when, read_number, read_text};
pub use verdict::{Mode, Previous, Record, Verdict};

/// A record's fields by the CRM's native names.
pub type Fields = BTreeMap<String, FieldValue>;

/// Where conditions read a record's values from, by the CRM's native field names: a map, or a
/// view over stored state that need not be copied into one for every event. Values are
/// borrowed from wherever they are held, a message's bytes included.
pub trait FieldLookup: std::fmt::Debug + Sync {
    fn get(&self, name: &str) -> Option<ValueRef<'_>>;
}

impl FieldLookup for Fields {
    fn get(&self, name: &str) -> Option<ValueRef<'_>> {
        BTreeMap::get(self, name).map(ValueRef::of)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    Compare(Comparison),
}

/// One leaf: a field, an operator and the literal(s) it is compared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub field: String,
    pub op: Op,
    /// How the field (and its previous value) is read.
    pub value_type: ValueType,
    /// None for `is_empty`, `is_not_empty`, `changed` and `eq`/`ne` with null or blank text (an
    /// emptiness test); one for most operators; one or more for `in` / `not_in`.
    pub values: Vec<Literal>,
    pub case_sensitive: bool,
    /// `value` and `type` as written, so that a saved workflow stores what its admin wrote.
    raw_value: Option<Value>,
    raw_type: Option<ValueType>,
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
        parse::parse(value, "")
    }

    pub fn to_json(&self) -> Value {
        match self {
            Condition::All(c) => group_json("all", c),
            Condition::Any(c) => group_json("any", c),
            Condition::Not(c) => {
                let mut m = Map::new();
                m.insert("not".into(), c.to_json());
                Value::Object(m)
            }
            Condition::Compare(c) => c.to_json(),
        }
    }

    /// An always-true condition (a workflow that matches every record of its object).
    pub fn always() -> Condition {
        Condition::All(Vec::new())
    }

    /// Evaluates against bare fields (no previous values known).
    pub fn evaluate(&self, fields: &Fields) -> Verdict {
        self.evaluate_record(&Record::of_fields(fields), Mode::Full)
    }

    pub fn evaluate_record(&self, record: &Record<'_>, mode: Mode) -> Verdict {
        self.evaluate_with(record, mode, &mut EachTime)
    }

    /// [`Condition::evaluate_record`], with the verdicts of leaves `leaves` already knows.
    pub fn evaluate_with<L: Leaves>(
        &self,
        record: &Record<'_>,
        mode: Mode,
        leaves: &mut L,
    ) -> Verdict {
        match self {
            Condition::All(items) => {
                let mut verdict = Verdict::Match;
                for item in items {
                    verdict = verdict.and(item.evaluate_with(record, mode, leaves));
                    if verdict == Verdict::NoMatch {
                        return verdict;
                    }
                }
                verdict
            }
            Condition::Any(items) => {
                // any = not(all(not …)), which keeps the same precedence of mismatch over unknown.
                let mut verdict = Verdict::NoMatch;
                for item in items {
                    verdict = verdict
                        .not()
                        .and(item.evaluate_with(record, mode, leaves).not())
                        .not();
                    if verdict == Verdict::Match {
                        return verdict;
                    }
                }
                verdict
            }
            Condition::Not(inner) => inner.evaluate_with(record, mode, leaves).not(),
            Condition::Compare(c) => leaves.verdict(c, mode, || c.evaluate(record, mode)),
        }
    }

    /// The number of leaves (comparisons), e.g. for throughput figures.
    pub fn leaf_count(&self) -> usize {
        match self {
            Condition::All(c) | Condition::Any(c) => c.iter().map(Condition::leaf_count).sum(),
            Condition::Not(c) => c.leaf_count(),
            Condition::Compare(_) => 1,
        }
    }

    /// Every leaf, in order.
    pub fn for_each_leaf<'a>(&'a self, f: &mut impl FnMut(&'a Comparison)) {
        match self {
            Condition::All(c) | Condition::Any(c) => {
                c.iter().for_each(|item| item.for_each_leaf(f))
            }
            Condition::Not(c) => c.for_each_leaf(f),
            Condition::Compare(c) => f(c),
        }
    }

    /// Appends the name of every field a leaf reads.
    pub fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Condition::All(c) | Condition::Any(c) => {
                c.iter().for_each(|item| item.collect_fields(out))
            }
            Condition::Not(c) => c.collect_fields(out),
            Condition::Compare(c) => out.push(c.field.as_str()),
        }
    }

    /// True when some leaf looks at previous values.
    pub fn uses_changes(&self) -> bool {
        match self {
            Condition::All(c) | Condition::Any(c) => c.iter().any(Condition::uses_changes),
            Condition::Not(c) => c.uses_changes(),
            Condition::Compare(c) => c.op.is_change(),
        }
    }
}

fn group_json(name: &str, items: &[Condition]) -> Value {
    let mut m = Map::new();
    m.insert(
        name.into(),
        Value::Array(items.iter().map(Condition::to_json).collect()),
    );
    Value::Object(m)
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
mod tests;
