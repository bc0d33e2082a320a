//! A workflow: which object and changes it reacts to, its conditions, and where the activity's
//! user, value and date come from.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use crm_sync_proto::v1::{ChangeType, CrmEvent, FieldValue};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::condition::{Condition, ConditionError, Verdict, read_number, read_text};

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

    /// Decides what this workflow makes of one event.
    pub fn decide(&self, event: &CrmEvent) -> Decision {
        if !event.object_type.eq_ignore_ascii_case(&self.object_type) {
            return Decision::NoMatch(NoMatch::OtherObject);
        }
        let Some(trigger) = Trigger::of(event.change_type()) else {
            return Decision::NoMatch(NoMatch::OtherTrigger);
        };
        if !self.triggers.contains(&trigger) {
            return Decision::NoMatch(NoMatch::OtherTrigger);
        }
        match self.conditions.evaluate(&event.fields) {
            Verdict::Match => {}
            Verdict::NoMatch => return Decision::NoMatch(NoMatch::Conditions),
            Verdict::TypeMismatch => return Decision::NoMatch(NoMatch::TypeMismatch),
        }
        let owner = field_text(&event.fields, &self.user_field)
            .or_else(|| event.owner.as_ref().map(|o| o.crm_user_id.clone()))
            .filter(|o| !o.is_empty());
        let value = match &self.value_field {
            None => Decimal::ONE,
            Some(field) => match event.fields.get(field).and_then(|f| f.kind.as_ref()) {
                Some(kind) => match read_number(kind) {
                    Some(v) => v,
                    None => return Decision::NoMatch(NoMatch::TypeMismatch),
                },
                None => return Decision::NoMatch(NoMatch::MissingValue),
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
            owner_crm_user_id: owner,
            value,
            activity_date,
        })
    }
}

fn field_text(
    fields: &std::collections::HashMap<String, FieldValue>,
    name: &str,
) -> Option<String> {
    use crm_sync_proto::v1::field_value::Kind;
    match fields.get(name)?.kind.as_ref()? {
        Kind::NullValue(_) => None,
        kind => Some(read_text(kind)).filter(|t| !t.trim().is_empty()),
    }
}

/// ISO 8601 date (taken as midnight UTC) or date-time with an offset.
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc));
    }
    // Salesforce writes e.g. 2026-11-25T10:00:00.000+0000 (no colon in the offset).
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(dt.with_timezone(&Utc));
    }
    NaiveDate::from_str(t)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Matched(Match),
    NoMatch(NoMatch),
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
    Conditions,
    TypeMismatch,
    MissingValue,
}

impl NoMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            NoMatch::OtherObject => "other_object",
            NoMatch::OtherTrigger => "other_trigger",
            NoMatch::Conditions => "conditions",
            NoMatch::TypeMismatch => "type_mismatch",
            NoMatch::MissingValue => "missing_value",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crm_sync_proto::v1::field_value::Kind;
    use serde_json::json;

    fn won_workflow() -> WorkflowSpec {
        WorkflowSpec {
            name: "Won".into(),
            object_type: "Opportunity".into(),
            triggers: vec![Trigger::Created, Trigger::Updated],
            conditions: Condition::from_json(
                &json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
            )
            .unwrap(),
            user_field: "OwnerId".into(),
            value_field: Some("Amount".into()),
            date_field: Some("CloseDate".into()),
            activity_type: "deal_won".into(),
        }
    }

    fn event(change: ChangeType, fields: &[(&str, &str)]) -> CrmEvent {
        let mut e = CrmEvent {
            object_type: "opportunity".into(),
            fields: fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        FieldValue {
                            kind: Some(Kind::Text(v.to_string())),
                        },
                    )
                })
                .collect(),
            ..Default::default()
        };
        e.set_change_type(change);
        e
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
    fn triggers_objects_and_values_gate_the_match() {
        let w = won_workflow();
        let fields = [
            ("StageName", "Closed Won"),
            ("Amount", "10"),
            ("OwnerId", "005A"),
        ];
        assert_eq!(
            w.decide(&event(ChangeType::Deleted, &fields)),
            Decision::NoMatch(NoMatch::OtherTrigger)
        );
        let mut other = event(ChangeType::Updated, &fields);
        other.object_type = "Lead".into();
        assert_eq!(w.decide(&other), Decision::NoMatch(NoMatch::OtherObject));
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
        let open = event(
            ChangeType::Updated,
            &[("StageName", "Prospecting"), ("Amount", "10")],
        );
        assert_eq!(w.decide(&open), Decision::NoMatch(NoMatch::Conditions));
    }

    #[test]
    fn salesforce_datetimes_parse() {
        assert_eq!(
            parse_date("2026-11-25T23:30:00.000+0100")
                .unwrap()
                .to_rfc3339(),
            "2026-11-25T22:30:00+00:00"
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
    }
}
