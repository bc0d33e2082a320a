//! Re-announcing activities downstream: when an admin or the CRM changes what a user's recorded
//! activities count for (a team membership, a deactivation, a merge), each activity is announced
//! again as an `ActivityChanged`, which the writer stages in the outbox inside the transaction
//! that made the change.

use crm_sync_proto::Message as _;
use crm_sync_proto::announce::{ActivityFacts, activity_changed};
use crm_sync_proto::v1::ActivityState;
use uuid::Uuid;

use crate::admin::activities::ActivityRow;
use crate::outbox::Pending;

/// Where one change's announcements go and how their ids are derived.
#[derive(Debug, Clone, Copy)]
pub struct Announcements<'a> {
    /// The outbox batch of the change.
    pub batch: &'a str,
    /// The writer's namespace for the `change_id`s, derived from the activity and the batch (so
    /// that each change announces each activity under an id of its own).
    pub namespace: Uuid,
    pub topic: &'a str,
    pub company_id: Uuid,
}

impl Announcements<'_> {
    /// An `ActivityChanged` in `state` for each activity attributed to a user (unmapped ones
    /// have nobody downstream to count for), `visible` on leaderboards or not.
    pub fn activities_changed(
        &self,
        activities: &[ActivityRow],
        state: ActivityState,
        visible: bool,
    ) -> Vec<Pending> {
        let mut messages = Vec::with_capacity(activities.len());
        for a in activities {
            let Some(user_id) = a.user_id else {
                continue;
            };
            let change_id = Uuid::new_v5(
                &self.namespace,
                format!("{}\u{1f}{}", a.id, self.batch).as_bytes(),
            );
            let change = activity_changed(
                change_id,
                &facts(a, self.company_id, user_id),
                state,
                visible,
            );
            messages.push(Pending {
                topic: self.topic.to_owned(),
                key: format!("{}/{user_id}", self.company_id),
                message_id: change.change_id.clone(),
                payload: change.encode_to_vec(),
            });
        }
        messages
    }
}

fn facts(a: &ActivityRow, company_id: Uuid, user_id: Uuid) -> ActivityFacts<'_> {
    ActivityFacts {
        activity_id: a.id,
        company_id,
        user_id,
        integration_id: a.integration_id,
        workflow_id: a.workflow_id,
        activity_type: &a.activity_type,
        value: a.value.to_string(),
        activity_date: a.activity_date,
        object_type: &a.object_type,
        record_id: &a.record_id,
        source_event_id: &a.last_event_id,
    }
}
