//! What evaluation takes (a record and a mode) and gives (a three-valued verdict).

use crm_sync_proto::v1::{ChangeType, CrmEvent};
use serde::Serialize;

use super::FieldLookup;

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
    pub(super) fn of(matched: bool) -> Verdict {
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
    Sent(&'a dyn FieldLookup),
    /// Nothing is known (deletes, or a bare record).
    Unknown,
}

/// A record as conditions see it: current fields and what is known of the previous ones.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub fields: &'a dyn FieldLookup,
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

    pub fn of_fields(fields: &'a dyn FieldLookup) -> Record<'a> {
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
