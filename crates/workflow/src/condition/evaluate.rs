//! How one leaf is evaluated against a record.

use std::cmp::Ordering;

use crm_sync_proto::view::ValueRef;

use super::text::{contains_folded, equals_folded, fold, is_blank};
use super::values::{Typed, read};
use super::{Comparison, Literal, Mode, Op, Previous, Record, Verdict};

/// A field's value as far as comparisons care.
#[derive(Clone, Copy)]
enum State<'a> {
    Empty,
    Value(ValueRef<'a>),
}

impl<'a> State<'a> {
    fn of(value: ValueRef<'a>) -> State<'a> {
        match value {
            ValueRef::Unset | ValueRef::Null(_) => State::Empty,
            ValueRef::Text(t) if is_blank(t) => State::Empty,
            value => State::Value(value),
        }
    }
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
                Some(State::Value(value)) => self.compare(value),
            },
        }
    }

    fn compare(&self, value: ValueRef<'_>) -> Verdict {
        let Some(actual) = read(value, self.value_type) else {
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
            State::Value(value) => match (read(value, self.value_type), self.values.first()) {
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
}

fn ordering(actual: &Typed<'_>, literal: &Literal) -> Option<Ordering> {
    Some(match (actual, literal) {
        (Typed::Number(a), Literal::Number(b)) => a.cmp(b),
        (Typed::Date(a), Literal::Date(b)) => a.cmp(b),
        (Typed::DateTime(a), Literal::DateTime(b)) => a.cmp(b),
        _ => return None,
    })
}
