//! A workflow: which object and changes it reacts to, its conditions, and where the activity's
//! user, value and date come from.

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmUser};
use crm_sync_proto::view::ValueRef;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::condition::{
    Condition, ConditionError, EachTime, FieldLookup, Leaves, Mode, Record, Verdict, When,
    is_blank, parse_when, read_number, read_text,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Created,
    Updated,
    Deleted,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Created => "created",
            Trigger::Updated => "updated",
            Trigger::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Trigger> {
        match s {
            "created" => Some(Trigger::Created),
            "updated" => Some(Trigger::Updated),
            "deleted" => Some(Trigger::Deleted),
            _ => None,
        }
    }

    fn of(change: ChangeType) -> Option<Trigger> {
        match change {
            ChangeType::Created => Some(Trigger::Created),
            ChangeType::Updated => Some(Trigger::Updated),
            ChangeType::Deleted => Some(Trigger::Deleted),
            ChangeType::Unspecified => None,
        }
    }
}

/// What an admin configures, independent of storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub name: String,
    /// The CRM object, e.g. `Opportunity` (compared ignoring ASCII case, as Salesforce does).
    pub object_type: String,
    pub triggers: Vec<Trigger>,
    #[serde(default = "Condition::always")]
    pub conditions: Condition,
    /// The field naming the responsible CRM user, e.g. `OwnerId`.
    pub user_field: String,
    /// The field holding the activity's value, e.g. `Amount`; none counts 1 per record.
    #[serde(default)]
    pub value_field: Option<String>,
    /// The field holding the activity's date, e.g. `CloseDate`; none uses the event time.
    #[serde(default)]
    pub date_field: Option<String>,
    pub activity_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Condition(#[from] ConditionError),
}

/// The longest name a workflow's text fields take: the leaderboard looks activity types up by
/// at most this much, and longer values would not fit the activities' indexes.
pub const MAX_NAME_CHARS: usize = 200;

/// A name fit to store and to show: not over [`MAX_NAME_CHARS`], no control characters.
fn storable(field: &'static str, value: &str) -> Result<(), SpecError> {
    let message = if value.chars().count() > MAX_NAME_CHARS {
        format!("is longer than {MAX_NAME_CHARS} characters")
    } else if value.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(SpecError::Field { field, message })
}

impl WorkflowSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        let need = |field: &'static str, value: &str| {
            if value.trim().is_empty() {
                return Err(SpecError::Field {
                    field,
                    message: "must not be empty".into(),
                });
            }
            storable(field, value)
        };
        need("name", &self.name)?;
        need("object_type", &self.object_type)?;
        need("user_field", &self.user_field)?;
        need("activity_type", &self.activity_type)?;
        if self.triggers.is_empty() {
            return Err(SpecError::Field {
                field: "triggers",
                message: "name at least one of created, updated, deleted".into(),
            });
        }
        for (field, value) in [
            ("value_field", &self.value_field),
            ("date_field", &self.date_field),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(SpecError::Field {
                    field,
                    message: "must be omitted or name a field".into(),
                });
            }
            value.as_deref().map_or(Ok(()), |v| storable(field, v))?;
        }
        // Re-parse the canonical JSON so a spec built in code gets the same checks as a stored one.
        Condition::from_json(&self.conditions.to_json())?;
        Ok(())
    }

    /// Decides what this workflow makes of one event, judged on the event alone.
    pub fn decide(&self, event: &CrmEvent) -> Decision {
        self.decide_view(&RecordView::of_event(event))
    }

    /// Decides what this workflow makes of a change to a record:
    ///
    /// - another object, or a created/updated change that is not among the triggers: nothing;
    /// - conditions definitely true: matched (value and date from the workflow's fields);
    /// - an update whose record definitely no longer satisfies the conditions' state (see
    ///   [`Mode::State`]): retracted;
    /// - a delete: retracted, the record is gone; unless `deleted` is a trigger and the
    ///   conditions hold on the record's values, then the deletion itself matches;
    /// - anything else (unknown fields, type mismatches, an unmet "changed" on an update whose
    ///   state still holds, a created record that does not match): nothing, with the reason.
    pub fn decide_view(&self, view: &RecordView<'_>) -> Decision {
        self.decide_with(view, &mut EachTime)
    }

    /// [`WorkflowSpec::decide_view`], with the verdicts of leaves `leaves` already knows (those
    /// other workflows share with this one).
    pub fn decide_with<L: Leaves>(&self, view: &RecordView<'_>, leaves: &mut L) -> Decision {
        if !view.object_type.eq_ignore_ascii_case(&self.object_type) {
            return Decision::NoMatch(NoMatch::OtherObject);
        }
        let Some(trigger) = Trigger::of(view.change) else {
            return Decision::NoMatch(NoMatch::OtherTrigger);
        };
        let record = &view.record;
        if trigger == Trigger::Deleted {
            if self.triggers.contains(&Trigger::Deleted)
                && self.conditions.evaluate_with(record, Mode::Full, leaves) == Verdict::Match
                && let decision @ Decision::Matched(_) = self.matched(view)
            {
                return decision;
            }
            return Decision::Retracted(self.retraction(view, RetractReason::Deleted));
        }
        if !self.triggers.contains(&trigger) {
            return Decision::NoMatch(NoMatch::OtherTrigger);
        }
        let full = self.conditions.evaluate_with(record, Mode::Full, leaves);
        if full == Verdict::Match {
            return self.matched(view);
        }
        let state = if self.conditions.uses_changes() {
            self.conditions.evaluate_with(record, Mode::State, leaves)
        } else {
            full
        };
        if trigger == Trigger::Updated && state == Verdict::NoMatch {
            return Decision::Retracted(self.retraction(view, RetractReason::NoLongerMatches));
        }
        Decision::NoMatch(match full {
            Verdict::TypeMismatch => NoMatch::TypeMismatch,
            Verdict::Unknown => NoMatch::Unknown,
            _ if state != Verdict::NoMatch => NoMatch::NoChange,
            _ => NoMatch::Conditions,
        })
    }

    /// Every field the workflow reads: its conditions', the user, value and date fields.
    pub fn needed_fields(&self) -> Vec<&str> {
        let mut fields = Vec::new();
        self.conditions.collect_fields(&mut fields);
        fields.push(self.user_field.as_str());
        fields.extend(self.value_field.as_deref());
        fields.extend(self.date_field.as_deref());
        fields.sort_unstable();
        fields.dedup();
        fields
    }

    fn owner(&self, view: &RecordView<'_>) -> Option<String> {
        field_text(view.record.fields, &self.user_field)
            .or_else(|| view.owner.map(|o| o.crm_user_id.clone()))
            .filter(|o| !o.is_empty())
    }

    fn retraction(&self, view: &RecordView<'_>, reason: RetractReason) -> Retraction {
        Retraction {
            owner_crm_user_id: self.owner(view),
            reason,
        }
    }

    /// What the activity would be (value, date, owner) if the record matched now.
    pub fn matched(&self, view: &RecordView<'_>) -> Decision {
        let fields = view.record.fields;
        let value = match &self.value_field {
            None => Decimal::ONE,
            Some(field) => match fields.get(field) {
                None | Some(ValueRef::Unset | ValueRef::Null(_)) => {
                    return Decision::NoMatch(NoMatch::MissingValue);
                }
                Some(ValueRef::Text(t)) if is_blank(t) => {
                    return Decision::NoMatch(NoMatch::MissingValue);
                }
                Some(value) => match read_number(value) {
                    Some(v) => v,
                    None => return Decision::NoMatch(NoMatch::TypeMismatch),
                },
            },
        };
        let activity_date = match &self.date_field {
            None => None,
            Some(field) => match field_text(fields, field) {
                Some(text) => match parse_date(&text) {
                    Some(date) => Some(date),
                    None => return Decision::NoMatch(NoMatch::TypeMismatch),
                },
                None => None,
            },
        };
        Decision::Matched(Match {
            owner_crm_user_id: self.owner(view),
            value,
            activity_date,
        })
    }
}

/// A change to a record as a workflow judges it: the record's fields (an event's alone, or the
/// record's whole known state), what is known of their previous values, the kind of change and
/// the owner the source named.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub object_type: &'a str,
    pub change: ChangeType,
    pub record: Record<'a>,
    pub owner: Option<&'a CrmUser>,
}

impl<'a> RecordView<'a> {
    pub fn of_event(event: &'a CrmEvent) -> RecordView<'a> {
        RecordView {
            object_type: &event.object_type,
            change: event.change_type(),
            record: Record::of_event(event),
            owner: event.owner.as_ref(),
        }
    }
}

fn field_text(fields: &dyn FieldLookup, name: &str) -> Option<String> {
    match fields.get(name)? {
        ValueRef::Unset | ValueRef::Null(_) => None,
        value => Some(read_text(value)).filter(|t| !is_blank(t)),
    }
}

/// ISO 8601 date (taken as midnight UTC), date-time (with an offset, or UTC without one), or
/// Unix epoch milliseconds.
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    parse_when(text).map(|w| match w {
        When::Date(d) => d.and_time(chrono::NaiveTime::MIN).and_utc(),
        When::Instant(t) => t,
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Matched(Match),
    Retracted(Retraction),
    NoMatch(NoMatch),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Retraction {
    /// The responsible CRM user if the event names one (deletes usually do not).
    pub owner_crm_user_id: Option<String>,
    pub reason: RetractReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetractReason {
    /// An update whose record no longer satisfies the conditions.
    NoLongerMatches,
    /// The record was deleted.
    Deleted,
}

impl RetractReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RetractReason::NoLongerMatches => "no_longer_matches",
            RetractReason::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Match {
    /// None when neither the user field nor the event's owner names one.
    pub owner_crm_user_id: Option<String>,
    pub value: Decimal,
    /// None: use the event time.
    pub activity_date: Option<DateTime<Utc>>,
}

/// Why an event did not match, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoMatch {
    OtherObject,
    OtherTrigger,
    /// The conditions are definitely false (on a created record, or on an update of a record
    /// that did not match before either, as far as the event tells).
    Conditions,
    /// An update whose "changed" conditions are not met while the rest still holds: the
    /// activity, if any, stays as it is.
    NoChange,
    /// The conditions depend on what the event does not say: a field it does not carry, or a
    /// previous value it did not send.
    Unknown,
    TypeMismatch,
    MissingValue,
}

impl NoMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            NoMatch::OtherObject => "other_object",
            NoMatch::OtherTrigger => "other_trigger",
            NoMatch::Conditions => "conditions",
            NoMatch::NoChange => "no_change",
            NoMatch::Unknown => "unknown",
            NoMatch::TypeMismatch => "type_mismatch",
            NoMatch::MissingValue => "missing_value",
        }
    }
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
