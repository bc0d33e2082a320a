//! A `WorkflowOutcome` validated once, when it is decoded, and the rules that decide what it
//! does to an activity. Pure: nothing here touches the database, so the rules are unit-tested.

use chrono::{DateTime, Utc};
use crm_sync_proto::Message as _;
use crm_sync_proto::announce::datetime;
use crm_sync_proto::v1::{OutcomeKind, WorkflowOutcome};
use rust_decimal::Decimal;
use uuid::Uuid;

/// Namespace of provisioner-derived ids (activities, change ids, provisioning event ids).
const NAMESPACE: Uuid = Uuid::from_u128(0x3b9d_7e21_55c4_4a0e_b1f6_2d8c_9e07_a4f3);

/// A stable id derived from `parts` (the same parts give the same id on every replica).
pub fn derived_id(parts: &[&str]) -> Uuid {
    Uuid::new_v5(&NAMESPACE, parts.join("\u{1f}").as_bytes())
}

/// Why an outcome can never be applied (it is dead-lettered with this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: &'static str,
    pub detail: String,
}

impl Invalid {
    fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Invalid {
            reason,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Matched,
    Retracted,
}

/// The CRM user an outcome names as the record's owner, with what the event says of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub crm_user_id: String,
    pub name: String,
    pub email: String,
}

/// A workflow outcome whose ids, value and times are known to be well formed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub outcome_id: String,
    pub event_id: String,
    pub kind: Kind,
    pub integration_id: Uuid,
    pub workflow_id: Uuid,
    pub object_type: String,
    pub record_id: String,
    pub activity_type: String,
    pub value: Decimal,
    /// The workflow's date field, else the time of the CRM change.
    pub activity_date: DateTime<Utc>,
    /// When the CRM change happened: what orders changes of one record.
    pub occurred_at: DateTime<Utc>,
    /// None when the outcome names no owner (deletes of an evaluator without record state).
    pub owner: Option<Owner>,
}

impl Outcome {
    /// Decodes and validates a `crm_sync.v1.WorkflowOutcome`.
    pub fn decode(payload: &[u8]) -> Result<Outcome, Invalid> {
        let o = WorkflowOutcome::decode(payload).map_err(|e| {
            Invalid::new(
                "undecodable",
                format!("not a crm_sync.v1.WorkflowOutcome: {e}"),
            )
        })?;
        Outcome::try_from(o)
    }

    /// The id of the activity of this outcome's (workflow, record).
    pub fn activity_id(&self) -> Uuid {
        derived_id(&["activity", &self.workflow_id.to_string(), &self.record_id])
    }

    /// The owner's name and email as the event carries them, when it names `crm_user_id`
    /// (empty otherwise).
    pub fn details_of(&self, crm_user_id: &str) -> (&str, &str) {
        self.owner
            .as_ref()
            .filter(|u| u.crm_user_id == crm_user_id)
            .map(|u| (u.name.as_str(), u.email.as_str()))
            .unwrap_or_default()
    }
}

impl TryFrom<WorkflowOutcome> for Outcome {
    type Error = Invalid;

    fn try_from(o: WorkflowOutcome) -> Result<Outcome, Invalid> {
        let kind = match o.kind() {
            OutcomeKind::Matched => Kind::Matched,
            OutcomeKind::Retracted => Kind::Retracted,
            OutcomeKind::Unspecified => {
                return Err(Invalid::new(
                    "invalid_outcome",
                    "outcome kind is unspecified",
                ));
            }
        };
        if o.outcome_id.is_empty() || o.record_id.is_empty() {
            return Err(Invalid::new(
                "invalid_outcome",
                "outcome_id and record_id are required",
            ));
        }
        let uuid = |name: &str, v: &str| {
            Uuid::parse_str(v)
                .map_err(|_| Invalid::new("invalid_outcome", format!("{name} {v:?} is not a UUID")))
        };
        let value = o
            .value
            .parse::<Decimal>()
            .map_err(|e| Invalid::new("invalid_outcome", format!("value {:?}: {e}", o.value)))?;
        let occurred_at = o
            .occurred_at
            .as_ref()
            .and_then(datetime)
            .unwrap_or_else(Utc::now);
        let activity_date = o
            .activity_date
            .as_ref()
            .and_then(datetime)
            .unwrap_or(occurred_at);
        let owner = o
            .owner
            .filter(|u| !u.crm_user_id.is_empty())
            .map(|u| Owner {
                crm_user_id: u.crm_user_id,
                name: u.name,
                email: u.email,
            });
        Ok(Outcome {
            integration_id: uuid("integration_id", &o.integration_id)?,
            workflow_id: uuid("workflow_id", &o.workflow_id)?,
            outcome_id: o.outcome_id,
            event_id: o.event_id,
            kind,
            object_type: o.object_type,
            record_id: o.record_id,
            activity_type: o.activity_type,
            value,
            activity_date,
            occurred_at,
            owner,
        })
    }
}

/// A CRM identity as stored: whom it is mapped to, whether its name and email are known, and
/// whether an admin unmapped it (held: auto-sync leaves it alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Option<Uuid>,
    pub named: bool,
    pub has_email: bool,
    pub held: bool,
}

impl Identity {
    /// Whether recording the outcome's view of `crm_user_id` could change the identity: it is
    /// missing, or the event carries a name or email it lacks. Skipping the no-op upsert
    /// matters beyond its round trip: an upsert locks the row even when it changes nothing, and
    /// that lock would be held until the batch commits, where another partition's batch may
    /// want it (deadlock-prone).
    pub fn needs_write(stored: Option<&Identity>, outcome: &Outcome, crm_user_id: &str) -> bool {
        let Some(stored) = stored else {
            return true;
        };
        let (name, email) = outcome.details_of(crm_user_id);
        (!stored.named && !name.is_empty()) || (!stored.has_email && !email.is_empty())
    }

    /// The identity after the outcome's name and email were recorded on it (a missing one is
    /// created unmapped).
    pub fn after_write(
        stored: Option<&Identity>,
        outcome: &Outcome,
        crm_user_id: &str,
    ) -> Identity {
        let (name, email) = outcome.details_of(crm_user_id);
        let before = stored.copied().unwrap_or(Identity {
            user_id: None,
            named: false,
            has_email: false,
            held: false,
        });
        Identity {
            named: before.named || !name.is_empty(),
            has_email: before.has_email || !email.is_empty(),
            ..before
        }
    }

    /// Whether applying a matched outcome to this identity takes its row lock: to create (or
    /// link) the account with auto-sync on, or to record the identity or its name and email.
    pub fn locks_for(
        stored: Option<&Identity>,
        auto_sync: bool,
        outcome: &Outcome,
        crm_user_id: &str,
    ) -> bool {
        stored.and_then(|i| i.user_id).is_none()
            && (auto_sync || Identity::needs_write(stored, outcome, crm_user_id))
    }

    /// Whether auto-sync creates (or links) an account for this unmapped identity: an identity
    /// an admin unmapped waits unmapped even with auto-sync on.
    pub fn provisions(stored: Option<&Identity>, auto_sync: bool) -> bool {
        auto_sync && !stored.is_some_and(|i| i.held)
    }
}

/// An activity row's state as far as the rules are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub recorded: bool,
    pub last_event_at: DateTime<Utc>,
}

/// What an outcome does to its (workflow, record)'s activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Matched: recorded anew (there was no activity).
    Recorded,
    /// Matched: an existing activity updated (or re-activated).
    Updated,
    /// Retracted: the activity no longer counts.
    Retracted,
    /// Retracted again: the activity keeps its state, but remembers the newer change.
    AlreadyRetracted,
    /// Retracted, but there is no activity: nothing to do.
    NothingToRetract,
    /// Older than the change the activity holds (arrived late): nothing to do.
    Stale,
}

impl Change {
    /// The rule: an older change arriving late never overwrites a newer one (a change at the
    /// same instant does, so a replay of the last change is idempotent).
    pub fn of(kind: Kind, current: Option<Current>, occurred_at: DateTime<Utc>) -> Change {
        match (kind, current) {
            (_, Some(c)) if c.last_event_at > occurred_at => Change::Stale,
            (Kind::Matched, None) => Change::Recorded,
            (Kind::Matched, Some(_)) => Change::Updated,
            (Kind::Retracted, None) => Change::NothingToRetract,
            (Kind::Retracted, Some(c)) if c.recorded => Change::Retracted,
            (Kind::Retracted, Some(_)) => Change::AlreadyRetracted,
        }
    }

    /// Whether the activity row is written.
    pub fn writes(self) -> bool {
        !matches!(self, Change::NothingToRetract | Change::Stale)
    }

    /// Whether downstream hears of it (when the activity has a user).
    pub fn announced(self) -> bool {
        matches!(self, Change::Recorded | Change::Updated | Change::Retracted)
    }

    /// The label of a retraction's result in `crm_sync_provisioner_retractions_total`.
    pub fn retraction_result(self) -> &'static str {
        match self {
            Change::Retracted => "retracted",
            Change::AlreadyRetracted => "already_retracted",
            Change::NothingToRetract => "nothing_to_retract",
            Change::Stale | Change::Recorded | Change::Updated => "stale",
        }
    }
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
