//! The messages crm-sync announces downstream (`ActivityChanged`, `UserProvisioned`), built in
//! one place for every writer (the provisioner and admin-api), and the conversions between
//! chrono's `DateTime<Utc>` and protobuf's `Timestamp` they need.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Timestamp;
use crate::v1::{ActivityChanged, ActivityState, UserProvisioned, UserStatus};

/// The protobuf form of an instant.
pub fn timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        // Below 10^9 by construction; a leap second's extra nanoseconds would still fit.
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The instant a protobuf `Timestamp` names; None when it is out of chrono's range or its
/// nanoseconds are negative.
pub fn datetime(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// An activity as downstream learns of it, attributed to a platform user.
#[derive(Debug, Clone)]
pub struct ActivityFacts<'a> {
    pub activity_id: Uuid,
    pub company_id: Uuid,
    pub user_id: Uuid,
    pub integration_id: Uuid,
    pub workflow_id: Uuid,
    pub activity_type: &'a str,
    /// The exact decimal, as text.
    pub value: String,
    pub activity_date: DateTime<Utc>,
    pub object_type: &'a str,
    pub record_id: &'a str,
    /// The event of the CRM change that last changed the activity.
    pub source_event_id: &'a str,
}

/// The `ActivityChanged` announcing `activity` in `state`, counting on leaderboards or not
/// (`visible`), under its own `change_id` (stable for the change, so consumers can deduplicate).
pub fn activity_changed(
    change_id: Uuid,
    activity: &ActivityFacts<'_>,
    state: ActivityState,
    visible: bool,
) -> ActivityChanged {
    ActivityChanged {
        change_id: change_id.to_string(),
        activity_id: activity.activity_id.to_string(),
        company_id: activity.company_id.to_string(),
        user_id: activity.user_id.to_string(),
        integration_id: activity.integration_id.to_string(),
        workflow_id: activity.workflow_id.to_string(),
        activity_type: activity.activity_type.to_owned(),
        value: activity.value.clone(),
        activity_date: Some(timestamp(activity.activity_date)),
        state: state as i32,
        visible,
        object_type: activity.object_type.to_owned(),
        record_id: activity.record_id.to_owned(),
        source_event_id: activity.source_event_id.to_owned(),
        changed_at: Some(timestamp(Utc::now())),
    }
}

/// A platform user as downstream learns of it.
#[derive(Debug, Clone)]
pub struct UserFacts<'a> {
    pub company_id: Uuid,
    pub user_id: Uuid,
    /// The CRM identity it was provisioned for (None: an admin's change to a user without one).
    pub integration_id: Option<Uuid>,
    pub crm_user_id: &'a str,
    pub display_name: &'a str,
    pub email: Option<&'a str>,
    pub status: UserStatus,
    /// Whether the identity was linked to an account that existed already (or accounts were
    /// merged into it).
    pub linked_existing_user: bool,
    pub merged_user_ids: &'a [Uuid],
}

/// The `UserProvisioned` announcing `user` as it now is, under its own `event_id`.
pub fn user_provisioned(event_id: Uuid, user: &UserFacts<'_>) -> UserProvisioned {
    UserProvisioned {
        event_id: event_id.to_string(),
        company_id: user.company_id.to_string(),
        user_id: user.user_id.to_string(),
        integration_id: user
            .integration_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        crm_user_id: user.crm_user_id.to_owned(),
        display_name: user.display_name.to_owned(),
        email: user.email.unwrap_or_default().to_owned(),
        status: user.status as i32,
        linked_existing_user: user.linked_existing_user,
        provisioned_at: Some(timestamp(Utc::now())),
        merged_user_ids: user.merged_user_ids.iter().map(Uuid::to_string).collect(),
    }
}

/// A user's status as announced: deactivated users are inactive whatever their stored status;
/// otherwise `active` is active and anything else (`pending`) pending.
pub fn user_status(status: &str, deactivated: bool) -> UserStatus {
    match (deactivated, status) {
        (true, _) => UserStatus::Inactive,
        (false, "active") => UserStatus::Active,
        (false, _) => UserStatus::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_nanosecond() {
        let at = DateTime::from_timestamp(1_764_633_600, 123_456_789).unwrap();
        let ts = timestamp(at);
        assert_eq!((ts.seconds, ts.nanos), (1_764_633_600, 123_456_789));
        assert_eq!(datetime(&ts), Some(at));
    }

    #[test]
    fn a_negative_nanosecond_count_is_no_instant() {
        let ts = Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(datetime(&ts), None);
    }

    #[test]
    fn deactivation_wins_over_the_stored_status() {
        assert_eq!(user_status("active", true), UserStatus::Inactive);
        assert_eq!(user_status("active", false), UserStatus::Active);
        assert_eq!(user_status("pending", false), UserStatus::Pending);
    }

    #[test]
    fn an_activity_change_carries_every_fact() {
        let at = DateTime::from_timestamp(1_764_633_600, 0).unwrap();
        let id = |n: u128| Uuid::from_u128(n);
        let facts = ActivityFacts {
            activity_id: id(1),
            company_id: id(2),
            user_id: id(3),
            integration_id: id(4),
            workflow_id: id(5),
            activity_type: "deal_won",
            value: "1250.50".into(),
            activity_date: at,
            object_type: "Opportunity",
            record_id: "006A",
            source_event_id: "evt-1",
        };
        let change = activity_changed(id(9), &facts, ActivityState::Retracted, true);
        assert_eq!(change.change_id, id(9).to_string());
        assert_eq!(change.activity_id, id(1).to_string());
        assert_eq!(change.user_id, id(3).to_string());
        assert_eq!(change.value, "1250.50");
        assert_eq!(change.state, ActivityState::Retracted as i32);
        assert!(change.visible);
        assert_eq!(change.activity_date, Some(timestamp(at)));
        assert_eq!(change.source_event_id, "evt-1");
    }
}
