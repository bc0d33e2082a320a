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

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use caseless::Caseless;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent, FieldValue};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

/// A record's fields by the CRM's native names.
pub type Fields = HashMap<String, FieldValue>;

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

const OPS: [(&str, Op); 15] = [
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
enum Operand {
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

    fn is_ordering(self) -> bool {
        matches!(self, Op::Gt | Op::Gte | Op::Lt | Op::Lte)
    }

    /// Operators that look at the previous value.
    pub fn is_change(self) -> bool {
        matches!(self, Op::Changed | Op::ChangedTo | Op::ChangedFrom)
    }

    fn operand(self) -> Operand {
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

    fn orders(self) -> bool {
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

    fn value_type(&self) -> ValueType {
        match self {
            Literal::Text { .. } => ValueType::Text,
            Literal::Number(_) => ValueType::Number,
            Literal::Boolean(_) => ValueType::Boolean,
            Literal::Date(_) => ValueType::Date,
            Literal::DateTime(_) => ValueType::DateTime,
        }
    }
}

/// The result of evaluating a condition on one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Match,
    NoMatch,
    /// Depends on what the event did not say (a field it does not carry, a previous value it
    /// did not send): neither a match nor a reason to retract.
    Unknown,
    /// A field could not be read as the condition's type: like `Unknown`, and counted.
    TypeMismatch,
}

impl Verdict {
    fn of(matched: bool) -> Verdict {
        if matched {
            Verdict::Match
        } else {
            Verdict::NoMatch
        }
    }

    pub(crate) fn not(self) -> Verdict {
        match self {
            Verdict::Match => Verdict::NoMatch,
            Verdict::NoMatch => Verdict::Match,
            other => other,
        }
    }

    /// Kleene conjunction; a type mismatch outranks an unknown so that it gets counted.
    pub(crate) fn and(self, other: Verdict) -> Verdict {
        use Verdict::*;
        match (self, other) {
            (NoMatch, _) | (_, NoMatch) => NoMatch,
            (TypeMismatch, _) | (_, TypeMismatch) => TypeMismatch,
            (Unknown, _) | (_, Unknown) => Unknown,
            (Match, Match) => Match,
        }
    }
}

/// What a record's previous values are known to be.
#[derive(Debug, Clone, Copy)]
pub enum Previous<'a> {
    /// A created record: every field was empty before.
    Nothing,
    /// An update: the fields in the map had these values; the others were not sent.
    Sent(&'a Fields),
    /// Nothing is known (deletes, or a bare record).
    Unknown,
}

/// A record as conditions see it: current fields and what is known of the previous ones.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub fields: &'a Fields,
    pub previous: Previous<'a>,
}

impl<'a> Record<'a> {
    pub fn of_event(event: &'a CrmEvent) -> Record<'a> {
        let previous = match event.change_type() {
            ChangeType::Created => Previous::Nothing,
            ChangeType::Updated => Previous::Sent(&event.previous_fields),
            ChangeType::Deleted | ChangeType::Unspecified => Previous::Unknown,
        };
        Record {
            fields: &event.fields,
            previous,
        }
    }

    pub fn of_fields(fields: &'a Fields) -> Record<'a> {
        Record {
            fields,
            previous: Previous::Unknown,
        }
    }
}

/// Whether the change operators look at the change (`Full`) or only at the record's state
/// (`State`: every "did it change" part is unknown). A retraction needs the state to be false,
/// so that "StageName changed to Closed Won" is not retracted by a later edit of another field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Full,
    State,
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
        match self {
            Condition::All(items) => {
                let mut verdict = Verdict::Match;
                for item in items {
                    verdict = verdict.and(item.evaluate_record(record, mode));
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
                        .and(item.evaluate_record(record, mode).not())
                        .not();
                    if verdict == Verdict::Match {
                        return verdict;
                    }
                }
                verdict
            }
            Condition::Not(inner) => inner.evaluate_record(record, mode).not(),
            Condition::Compare(c) => c.evaluate(record, mode),
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

/// A field's value as far as comparisons care.
#[derive(Clone, Copy)]
enum State<'a> {
    Empty,
    Value(&'a Kind),
}

impl<'a> State<'a> {
    fn of(value: &'a FieldValue) -> State<'a> {
        match value.kind.as_ref() {
            None | Some(Kind::NullValue(_)) => State::Empty,
            Some(Kind::Text(t)) if t.trim().is_empty() => State::Empty,
            Some(kind) => State::Value(kind),
        }
    }
}

/// A field value read as a condition's type.
enum Typed<'a> {
    Text(Cow<'a, str>),
    Number(Decimal),
    Boolean(bool),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
}

impl Comparison {
    pub fn evaluate(&self, record: &Record<'_>, mode: Mode) -> Verdict {
        let current = record.fields.get(&self.field).map(State::of);
        match self.op {
            Op::Changed | Op::ChangedTo | Op::ChangedFrom => {
                self.evaluate_change(record, current, mode)
            }
            Op::IsEmpty => Verdict::of(current.is_none_or(|s| matches!(s, State::Empty))),
            Op::IsNotEmpty => Verdict::of(current.is_some_and(|s| matches!(s, State::Value(_)))),
            Op::Eq if self.values.is_empty() => {
                Verdict::of(current.is_none_or(|s| matches!(s, State::Empty)))
            }
            Op::Ne if self.values.is_empty() => {
                Verdict::of(current.is_some_and(|s| matches!(s, State::Value(_))))
            }
            _ => match current {
                None => Verdict::Unknown,
                Some(State::Empty) => Verdict::of(matches!(self.op, Op::Ne | Op::NotIn)),
                Some(State::Value(kind)) => self.compare(kind),
            },
        }
    }

    fn compare(&self, kind: &Kind) -> Verdict {
        let Some(actual) = read(kind, self.value_type) else {
            return Verdict::TypeMismatch;
        };
        let first = || self.values.first();
        let matched = match self.op {
            Op::Eq => first().is_some_and(|l| self.equals(&actual, l)),
            Op::Ne => !first().is_some_and(|l| self.equals(&actual, l)),
            Op::In => self.values.iter().any(|l| self.equals(&actual, l)),
            Op::NotIn => !self.values.iter().any(|l| self.equals(&actual, l)),
            Op::Contains | Op::StartsWith => match (&actual, first()) {
                (Typed::Text(text), Some(Literal::Text { text: lit, folded })) => {
                    let starts = self.op == Op::StartsWith;
                    if self.case_sensitive {
                        if starts {
                            text.starts_with(lit.as_str())
                        } else {
                            text.contains(lit.as_str())
                        }
                    } else {
                        contains_folded(text, folded, starts)
                    }
                }
                _ => false,
            },
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => {
                match first().and_then(|l| ordering(&actual, l)) {
                    Some(o) => match self.op {
                        Op::Gt => o == Ordering::Greater,
                        Op::Gte => o != Ordering::Less,
                        Op::Lt => o == Ordering::Less,
                        _ => o != Ordering::Greater,
                    },
                    None => return Verdict::TypeMismatch,
                }
            }
            Op::IsEmpty | Op::IsNotEmpty | Op::Changed | Op::ChangedTo | Op::ChangedFrom => false,
        };
        Verdict::of(matched)
    }

    fn equals(&self, actual: &Typed<'_>, literal: &Literal) -> bool {
        match (actual, literal) {
            (Typed::Text(a), Literal::Text { text, folded }) => {
                if self.case_sensitive {
                    a.as_ref() == text.as_str()
                } else {
                    equals_folded(a, folded)
                }
            }
            (Typed::Number(a), Literal::Number(b)) => a == b,
            (Typed::Boolean(a), Literal::Boolean(b)) => a == b,
            (Typed::Date(a), Literal::Date(b)) => a == b,
            (Typed::DateTime(a), Literal::DateTime(b)) => a == b,
            _ => false,
        }
    }

    /// Whether a field state equals the (first) literal: false when empty.
    fn state_equals(&self, state: State<'_>) -> Verdict {
        match state {
            State::Empty => Verdict::NoMatch,
            State::Value(kind) => match (read(kind, self.value_type), self.values.first()) {
                (Some(actual), Some(literal)) => Verdict::of(self.equals(&actual, literal)),
                (None, _) => Verdict::TypeMismatch,
                (Some(_), None) => Verdict::NoMatch,
            },
        }
    }

    fn evaluate_change(
        &self,
        record: &Record<'_>,
        current: Option<State<'_>>,
        mode: Mode,
    ) -> Verdict {
        // "Is it X now" is a fact about the record's state, known in both modes.
        let now = match self.op {
            Op::ChangedTo => current.map_or(Verdict::Unknown, |s| self.state_equals(s)),
            _ => Verdict::Match,
        };
        if mode == Mode::State {
            return now.and(Verdict::Unknown);
        }
        let previous = match record.previous {
            Previous::Nothing => State::Empty,
            Previous::Sent(previous) => match previous.get(&self.field) {
                Some(value) => State::of(value),
                None => return now.and(Verdict::Unknown),
            },
            Previous::Unknown => return now.and(Verdict::Unknown),
        };
        let Some(current) = current else {
            return now.and(Verdict::Unknown);
        };
        let changed = self.differs(previous, current);
        let before = match self.op {
            Op::ChangedFrom => self.state_equals(previous),
            _ => Verdict::Match,
        };
        changed.and(now).and(before)
    }

    fn differs(&self, a: State<'_>, b: State<'_>) -> Verdict {
        match (a, b) {
            (State::Empty, State::Empty) => Verdict::NoMatch,
            (State::Empty, State::Value(_)) | (State::Value(_), State::Empty) => Verdict::Match,
            (State::Value(a), State::Value(b)) => {
                match (read(a, self.value_type), read(b, self.value_type)) {
                    (Some(a), Some(b)) => Verdict::of(!self.same(&a, &b)),
                    _ => Verdict::TypeMismatch,
                }
            }
        }
    }

    fn same(&self, a: &Typed<'_>, b: &Typed<'_>) -> bool {
        match (a, b) {
            (Typed::Text(a), Typed::Text(b)) => {
                if self.case_sensitive {
                    a == b
                } else {
                    equals_folded(a, &fold(b))
                }
            }
            (Typed::Number(a), Typed::Number(b)) => a == b,
            (Typed::Boolean(a), Typed::Boolean(b)) => a == b,
            (Typed::Date(a), Typed::Date(b)) => a == b,
            (Typed::DateTime(a), Typed::DateTime(b)) => a == b,
            _ => false,
        }
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

fn ordering(actual: &Typed<'_>, literal: &Literal) -> Option<Ordering> {
    Some(match (actual, literal) {
        (Typed::Number(a), Literal::Number(b)) => a.cmp(b),
        (Typed::Date(a), Literal::Date(b)) => a.cmp(b),
        (Typed::DateTime(a), Literal::DateTime(b)) => a.cmp(b),
        _ => return None,
    })
}

/// Full Unicode case folding after canonical decomposition; ASCII takes the cheap path.
fn fold(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        Cow::Owned(text.chars().nfd().default_case_fold().nfd().collect())
    }
}

fn equals_folded(actual: &str, folded: &str) -> bool {
    if actual.is_ascii() && folded.is_ascii() {
        actual.eq_ignore_ascii_case(folded)
    } else {
        fold(actual) == folded
    }
}

fn contains_folded(actual: &str, folded: &str, at_start: bool) -> bool {
    if actual.is_ascii() && folded.is_ascii() {
        let (hay, needle) = (actual.as_bytes(), folded.as_bytes());
        if needle.len() > hay.len() {
            return false;
        }
        if at_start {
            return hay[..needle.len()].eq_ignore_ascii_case(needle);
        }
        hay.windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
    } else {
        let actual = fold(actual);
        if at_start {
            actual.starts_with(folded)
        } else {
            actual.contains(folded)
        }
    }
}

/// Reads a field as `value_type`; None when it cannot be (a type mismatch).
fn read(kind: &Kind, value_type: ValueType) -> Option<Typed<'_>> {
    match value_type {
        ValueType::Text => Some(Typed::Text(match kind {
            Kind::Text(t) | Kind::Number(t) => Cow::Borrowed(t.as_str()),
            Kind::Boolean(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Kind::NullValue(_) => Cow::Borrowed(""),
        })),
        ValueType::Number => read_number(kind).map(Typed::Number),
        ValueType::Boolean => match kind {
            Kind::Boolean(b) => Some(Typed::Boolean(*b)),
            Kind::Text(t) => parse_bool(t).map(Typed::Boolean),
            _ => None,
        },
        ValueType::Date => read_datetime(kind).map(|d| {
            Typed::Date(match d {
                When::Date(d) => d,
                When::Instant(t) => t.date_naive(),
            })
        }),
        ValueType::DateTime => read_datetime(kind).map(|d| {
            Typed::DateTime(match d {
                When::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
                When::Instant(t) => t,
            })
        }),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("true") {
        Some(true)
    } else if t.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

pub(crate) fn read_number(field: &Kind) -> Option<Decimal> {
    match field {
        Kind::Number(n) | Kind::Text(n) => parse_decimal(n),
        _ => None,
    }
}

fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .ok()
}

pub(crate) fn read_text(field: &Kind) -> String {
    match field {
        Kind::Text(t) | Kind::Number(t) => t.clone(),
        Kind::Boolean(b) => b.to_string(),
        Kind::NullValue(_) => String::new(),
    }
}

/// A date or an instant, as a field may carry either.
pub(crate) enum When {
    Date(NaiveDate),
    Instant(DateTime<Utc>),
}

fn read_datetime(kind: &Kind) -> Option<When> {
    match kind {
        Kind::Text(t) | Kind::Number(t) => parse_when(t),
        _ => None,
    }
}

/// ISO 8601 date, date-time with offset (`Z`, `+01:00`, or Salesforce's `+0000`), date-time
/// without offset (taken as UTC), or Unix epoch milliseconds (as HubSpot sends dates).
pub(crate) fn parse_when(text: &str) -> Option<When> {
    let t = text.trim();
    if t.len() == 10 {
        return iso_date(t).map(When::Date);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(When::Instant(dt.with_timezone(&Utc)));
    }
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(When::Instant(dt.with_timezone(&Utc)));
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(When::Instant(dt.and_utc()));
    }
    if !t.is_empty() && t.len() <= 15 && t.bytes().all(|b| b.is_ascii_digit()) {
        let millis: i64 = t.parse().ok()?;
        return DateTime::from_timestamp_millis(millis).map(When::Instant);
    }
    None
}

/// `YYYY-MM-DD`, without going through a format-string parser (dates are on the hot path).
fn iso_date(t: &str) -> Option<NaiveDate> {
    let b = t.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(number(0..4)?).ok()?;
    NaiveDate::from_ymd_opt(year, number(5..7)?, number(8..10)?)
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
    parse_leaf(map, path).map(Condition::Compare)
}

fn parse_leaf(map: &Map<String, Value>, path: &str) -> Result<Comparison, ConditionError> {
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
    let op_path = format!("{path}/op");
    let op = match map.get("op") {
        Some(Value::String(o)) => Op::parse(o).ok_or_else(|| {
            let names: Vec<&str> = OPS.iter().map(|(n, _)| *n).collect();
            err(
                &op_path,
                format!(
                    "unknown operator `{o}` (expected one of {})",
                    names.join(", ")
                ),
            )
        })?,
        Some(_) => return Err(err(&op_path, "expected an operator name")),
        None => return Err(err(path, "missing `op`")),
    };
    let raw_type = match map.get("type") {
        None => None,
        Some(Value::String(t)) => Some(ValueType::parse(t).ok_or_else(|| {
            err(
                &format!("{path}/type"),
                format!(
                    "unknown type `{t}` (expected one of text, number, boolean, date, datetime)"
                ),
            )
        })?),
        Some(_) => return Err(err(&format!("{path}/type"), "expected a type name")),
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
    let value_path = format!("{path}/value");
    let raw_value = map.get("value").cloned();
    let (value_type, values) = match (op.operand(), &raw_value) {
        (Operand::None, Some(_)) => {
            return Err(err(&value_path, format!("`{op}` takes no value")));
        }
        (Operand::None, None) => (raw_type.unwrap_or(ValueType::Text), Vec::new()),
        (_, None) => return Err(err(path, "missing `value`")),
        (Operand::One, Some(Value::Null)) => {
            if !matches!(op, Op::Eq | Op::Ne) || raw_type.is_some() {
                return Err(err(
                    &value_path,
                    format!(
                        "`{op}` needs a value; to test for an empty field use is_empty / is_not_empty"
                    ),
                ));
            }
            (ValueType::Text, Vec::new())
        }
        (Operand::One, Some(value)) => {
            let literal = literal(value, raw_type, op, &value_path)?;
            let blank = matches!(&literal, Literal::Text { text, .. } if text.trim().is_empty());
            let value_type = literal.value_type();
            if blank && matches!(op, Op::Eq | Op::Ne) {
                // Blank text is how some CRMs say "empty": compare emptiness, as for null.
                (value_type, Vec::new())
            } else {
                (value_type, vec![literal])
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
            (value_type, values)
        }
        (Operand::List, Some(_)) => {
            return Err(err(
                &value_path,
                format!("`{op}` takes a list of values, e.g. [\"Closed Won\", \"Closed Lost\"]"),
            ));
        }
    };
    if op.is_ordering() && !value_type.orders() {
        return Err(err(
            &value_path,
            format!(
                "operator `{op}` compares numbers and dates: expected a number, a date (YYYY-MM-DD) or a date-time literal, got {value_type}"
            ),
        ));
    }
    if matches!(op, Op::Contains | Op::StartsWith) {
        match values.first() {
            Some(Literal::Text { text, .. }) if !text.is_empty() => {}
            Some(Literal::Text { .. }) => {
                return Err(err(&value_path, format!("`{op}` needs non-empty text")));
            }
            _ => {
                return Err(err(
                    &value_path,
                    format!("`{op}` compares text: expected a text literal, got {value_type}"),
                ));
            }
        }
    }
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
#[path = "condition_tests.rs"]
mod tests;
