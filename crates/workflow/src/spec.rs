//! A workflow: which object and changes it reacts to, its conditions, and where the activity's
//! user, value and date come from.

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::field_value::Kind;
use crm_sync_proto::v1::{ChangeType, CrmEvent};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::condition::{
    Condition, ConditionError, Fields, Mode, Record, Verdict, When, parse_when, read_number,
    read_text,
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

impl WorkflowSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        let need = |field: &'static str, value: &str| {
            if value.trim().is_empty() {
                Err(SpecError::Field {
                    field,
                    message: "must not be empty".into(),
                })
            } else {
                Ok(())
            }
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
        }
        // Re-parse the canonical JSON so a spec built in code gets the same checks as a stored one.
        Condition::from_json(&self.conditions.to_json())?;
        Ok(())
    }

    /// Decides what this workflow makes of one event:
    ///
    /// - another object, or a created/updated event whose change is not among the triggers:
    ///   nothing;
    /// - conditions definitely true: matched (value and date from the workflow's fields);
    /// - an update whose record definitely no longer satisfies the conditions' state (see
    ///   [`Mode::State`]): retracted;
    /// - a delete: retracted, the record is gone; unless `deleted` is a trigger and the
    ///   conditions hold on the values the delete carries, then the deletion itself matches;
    /// - anything else (unknown fields, type mismatches, an unmet "changed" on an update whose
    ///   state still holds, a created record that does not match): nothing, with the reason.
    pub fn decide(&self, event: &CrmEvent) -> Decision {
        if !event.object_type.eq_ignore_ascii_case(&self.object_type) {
            return Decision::NoMatch(NoMatch::OtherObject);
        }
        let Some(trigger) = Trigger::of(event.change_type()) else {
            return Decision::NoMatch(NoMatch::OtherTrigger);
        };
        let record = Record::of_event(event);
        if trigger == Trigger::Deleted {
            if self.triggers.contains(&Trigger::Deleted)
                && self.conditions.evaluate_record(&record, Mode::Full) == Verdict::Match
                && let decision @ Decision::Matched(_) = self.matched(event)
            {
                return decision;
            }
            return Decision::Retracted(self.retraction(event, RetractReason::Deleted));
        }
        if !self.triggers.contains(&trigger) {
            return Decision::NoMatch(NoMatch::OtherTrigger);
        }
        let full = self.conditions.evaluate_record(&record, Mode::Full);
        if full == Verdict::Match {
            return self.matched(event);
        }
        let state = if self.conditions.uses_changes() {
            self.conditions.evaluate_record(&record, Mode::State)
        } else {
            full
        };
        if trigger == Trigger::Updated && state == Verdict::NoMatch {
            return Decision::Retracted(self.retraction(event, RetractReason::NoLongerMatches));
        }
        Decision::NoMatch(match full {
            Verdict::TypeMismatch => NoMatch::TypeMismatch,
            Verdict::Unknown => NoMatch::Unknown,
            _ if state != Verdict::NoMatch => NoMatch::NoChange,
            _ => NoMatch::Conditions,
        })
    }

    fn owner(&self, event: &CrmEvent) -> Option<String> {
        field_text(&event.fields, &self.user_field)
            .or_else(|| event.owner.as_ref().map(|o| o.crm_user_id.clone()))
            .filter(|o| !o.is_empty())
    }

    fn retraction(&self, event: &CrmEvent, reason: RetractReason) -> Retraction {
        Retraction {
            owner_crm_user_id: self.owner(event),
            reason,
        }
    }

    fn matched(&self, event: &CrmEvent) -> Decision {
        let value = match &self.value_field {
            None => Decimal::ONE,
            Some(field) => match event.fields.get(field).and_then(|f| f.kind.as_ref()) {
                None | Some(Kind::NullValue(_)) => {
                    return Decision::NoMatch(NoMatch::MissingValue);
                }
                Some(Kind::Text(t)) if t.trim().is_empty() => {
                    return Decision::NoMatch(NoMatch::MissingValue);
                }
                Some(kind) => match read_number(kind) {
                    Some(v) => v,
                    None => return Decision::NoMatch(NoMatch::TypeMismatch),
                },
            },
        };
        let activity_date = match &self.date_field {
            None => None,
            Some(field) => match field_text(&event.fields, field) {
                Some(text) => match parse_date(&text) {
                    Some(date) => Some(date),
                    None => return Decision::NoMatch(NoMatch::TypeMismatch),
                },
                None => None,
            },
        };
        Decision::Matched(Match {
            owner_crm_user_id: self.owner(event),
            value,
            activity_date,
        })
    }
}

fn field_text(fields: &Fields, name: &str) -> Option<String> {
    match fields.get(name)?.kind.as_ref()? {
        Kind::NullValue(_) => None,
        kind => Some(read_text(kind)).filter(|t| !t.trim().is_empty()),
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
mod tests {
    use super::*;
    use crm_sync_proto::v1::{CrmUser, FieldValue};
    use serde_json::json;

    fn workflow(triggers: &[Trigger], conditions: serde_json::Value) -> WorkflowSpec {
        WorkflowSpec {
            name: "Won".into(),
            object_type: "Opportunity".into(),
            triggers: triggers.to_vec(),
            conditions: Condition::from_json(&conditions).unwrap(),
            user_field: "OwnerId".into(),
            value_field: Some("Amount".into()),
            date_field: Some("CloseDate".into()),
            activity_type: "deal_won".into(),
        }
    }

    fn won_workflow() -> WorkflowSpec {
        workflow(
            &[Trigger::Created, Trigger::Updated],
            json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
        )
    }

    fn to_fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    FieldValue {
                        kind: Some(Kind::Text(v.to_string())),
                    },
                )
            })
            .collect()
    }

    fn event(change: ChangeType, fields: &[(&str, &str)]) -> CrmEvent {
        let mut e = CrmEvent {
            object_type: "opportunity".into(),
            fields: to_fields(fields),
            ..Default::default()
        };
        e.set_change_type(change);
        e
    }

    fn retracted(reason: RetractReason, owner: Option<&str>) -> Decision {
        Decision::Retracted(Retraction {
            owner_crm_user_id: owner.map(str::to_owned),
            reason,
        })
    }

    #[test]
    fn a_won_opportunity_matches_with_value_date_and_owner() {
        let e = event(
            ChangeType::Updated,
            &[
                ("StageName", "Closed Won"),
                ("Amount", "1250.50"),
                ("CloseDate", "2026-11-20"),
                ("OwnerId", "005A"),
            ],
        );
        let Decision::Matched(m) = won_workflow().decide(&e) else {
            panic!()
        };
        assert_eq!(m.owner_crm_user_id.as_deref(), Some("005A"));
        assert_eq!(m.value.to_string(), "1250.50");
        assert_eq!(
            m.activity_date.unwrap().to_rfc3339(),
            "2026-11-20T00:00:00+00:00"
        );
    }

    #[test]
    fn without_value_and_date_fields_a_match_counts_one_at_the_event_time() {
        let mut w = won_workflow();
        w.value_field = None;
        w.date_field = None;
        let mut e = event(ChangeType::Created, &[("StageName", "Closed Won")]);
        e.owner = Some(CrmUser {
            crm_user_id: "005B".into(),
            ..Default::default()
        });
        let Decision::Matched(m) = w.decide(&e) else {
            panic!()
        };
        assert_eq!(m.value, Decimal::ONE);
        assert_eq!(m.activity_date, None);
        assert_eq!(m.owner_crm_user_id.as_deref(), Some("005B"));
    }

    #[test]
    fn triggers_objects_and_values_gate_the_match() {
        let w = won_workflow();
        let fields = [
            ("StageName", "Closed Won"),
            ("Amount", "10"),
            ("OwnerId", "005A"),
        ];
        let mut other = event(ChangeType::Updated, &fields);
        other.object_type = "Lead".into();
        assert_eq!(w.decide(&other), Decision::NoMatch(NoMatch::OtherObject));
        let created_only = workflow(
            &[Trigger::Created],
            json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
        );
        assert_eq!(
            created_only.decide(&event(ChangeType::Updated, &fields)),
            Decision::NoMatch(NoMatch::OtherTrigger)
        );
        let no_amount = event(ChangeType::Updated, &[("StageName", "Closed Won")]);
        assert_eq!(
            w.decide(&no_amount),
            Decision::NoMatch(NoMatch::MissingValue)
        );
        let bad_amount = event(
            ChangeType::Updated,
            &[("StageName", "Closed Won"), ("Amount", "lots")],
        );
        assert_eq!(
            w.decide(&bad_amount),
            Decision::NoMatch(NoMatch::TypeMismatch)
        );
        let bad_date = event(
            ChangeType::Updated,
            &[
                ("StageName", "Closed Won"),
                ("Amount", "1"),
                ("CloseDate", "soon"),
            ],
        );
        assert_eq!(
            w.decide(&bad_date),
            Decision::NoMatch(NoMatch::TypeMismatch)
        );
    }

    #[test]
    fn an_update_that_no_longer_matches_retracts_and_a_created_one_does_not() {
        let w = won_workflow();
        let open = [("StageName", "Prospecting"), ("OwnerId", "005A")];
        assert_eq!(
            w.decide(&event(ChangeType::Updated, &open)),
            retracted(RetractReason::NoLongerMatches, Some("005A"))
        );
        assert_eq!(
            w.decide(&event(ChangeType::Created, &open)),
            Decision::NoMatch(NoMatch::Conditions)
        );
        // A partial update without the condition's field says nothing about it.
        assert_eq!(
            w.decide(&event(ChangeType::Updated, &[("Amount", "5")])),
            Decision::NoMatch(NoMatch::Unknown)
        );
        // A field that cannot be read is counted, never retracted on.
        let typed = workflow(
            &[Trigger::Updated],
            json!({"field": "Amount", "op": "gte", "value": 1000}),
        );
        assert_eq!(
            typed.decide(&event(ChangeType::Updated, &[("Amount", "n/a")])),
            Decision::NoMatch(NoMatch::TypeMismatch)
        );
    }

    #[test]
    fn a_delete_retracts_unless_the_deletion_itself_is_what_counts() {
        let w = won_workflow();
        assert_eq!(
            w.decide(&event(ChangeType::Deleted, &[])),
            retracted(RetractReason::Deleted, None)
        );
        // Even a delete carrying matching values: the workflow does not list `deleted`.
        let won = [("StageName", "Closed Won"), ("Amount", "3")];
        assert_eq!(
            w.decide(&event(ChangeType::Deleted, &won)),
            retracted(RetractReason::Deleted, None)
        );
        let counts_deletes = workflow(
            &[Trigger::Deleted],
            json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
        );
        assert!(matches!(
            counts_deletes.decide(&event(ChangeType::Deleted, &won)),
            Decision::Matched(_)
        ));
        assert_eq!(
            counts_deletes.decide(&event(ChangeType::Deleted, &[])),
            retracted(RetractReason::Deleted, None)
        );
    }

    #[test]
    fn changed_to_matches_the_change_and_retracts_only_on_the_state() {
        // "StageName changed to Closed Won and Amount ≥ 1000".
        let w = workflow(
            &[Trigger::Created, Trigger::Updated],
            json!({"all": [
                {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
                {"field": "Amount", "op": "gte", "value": 1000}
            ]}),
        );
        let update = |now: &[(&str, &str)], before: &[(&str, &str)]| {
            let mut e = event(ChangeType::Updated, now);
            e.previous_fields = to_fields(before);
            w.decide(&e)
        };
        let won = [("StageName", "Closed Won"), ("Amount", "1500")];
        assert!(matches!(
            update(&won, &[("StageName", "Negotiation")]),
            Decision::Matched(_)
        ));
        // Amount edited later: no new match, no retraction (whether or not the CRM resends the
        // unchanged stage).
        assert_eq!(
            update(&won, &[("Amount", "1200")]),
            Decision::NoMatch(NoMatch::Unknown)
        );
        assert_eq!(
            update(&won, &[("StageName", "Closed Won"), ("Amount", "1200")]),
            Decision::NoMatch(NoMatch::NoChange)
        );
        assert_eq!(
            update(
                &[("StageName", "Negotiation"), ("Amount", "1500")],
                &[("StageName", "Closed Won")]
            ),
            retracted(RetractReason::NoLongerMatches, None)
        );
        assert_eq!(
            update(
                &[("StageName", "Closed Won"), ("Amount", "900")],
                &[("Amount", "1500")]
            ),
            retracted(RetractReason::NoLongerMatches, None)
        );
        // No previous values at all (e.g. Salesforce Outbound Messages): not known to be a change.
        assert_eq!(update(&won, &[]), Decision::NoMatch(NoMatch::Unknown));
        // Created as won: it changed from nothing to Closed Won.
        assert!(matches!(
            w.decide(&event(ChangeType::Created, &won)),
            Decision::Matched(_)
        ));
    }

    #[test]
    fn dates_parse_in_every_form_crms_send() {
        assert_eq!(
            parse_date("2026-11-25T23:30:00.000+0100")
                .unwrap()
                .to_rfc3339(),
            "2026-11-25T22:30:00+00:00"
        );
        assert_eq!(
            parse_date("2026-11-25T23:30:00").unwrap().to_rfc3339(),
            "2026-11-25T23:30:00+00:00"
        );
        assert_eq!(
            parse_date("1763596800000").unwrap().to_rfc3339(),
            "2025-11-20T00:00:00+00:00"
        );
        assert!(parse_date("yesterday").is_none());
    }

    #[test]
    fn validation_names_the_field() {
        let mut w = won_workflow();
        w.triggers.clear();
        assert!(
            w.validate()
                .unwrap_err()
                .to_string()
                .starts_with("triggers:")
        );
        let mut w = won_workflow();
        w.user_field = " ".into();
        assert!(
            w.validate()
                .unwrap_err()
                .to_string()
                .starts_with("user_field:")
        );
        let bad: Result<WorkflowSpec, _> = serde_json::from_value(json!({
            "name": "x", "object_type": "Opportunity", "triggers": ["updated"],
            "conditions": {"all": [{"field": "CloseDate", "op": "gt", "value": 5, "type": "date"}]},
            "user_field": "OwnerId", "activity_type": "deal_won"
        }));
        let e = bad.unwrap_err().to_string();
        assert!(
            e.contains("conditions/all/0/value: expected a date literal"),
            "{e}"
        );
    }
}
