//! Visibility changes forwarded downstream. An activity counts on leaderboards only while its
//! user is on a team (only team members are shown on the platform); when a membership change flips that, every recorded
//! activity of the user is re-announced as `ActivityChanged` with the new `visible` flag. The
//! messages are staged in the outbox inside the transaction that changes the membership, and
//! published after commit, so a crash or a Kafka outage delays them but never loses them.
//! Changes an admin makes to a user (rename, deactivate, merge, unmap) are announced the same
//! way, as a `UserProvisioned` carrying the user's current state.

use std::time::Duration;

use crm_sync_outbox::{Outbox, Pending, Staged, Sweep};
use crm_sync_proto::Message;
use crm_sync_proto::announce::{UserFacts, user_provisioned, user_status};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::admin::activities::ActivityRow;
use crm_sync_store::admin::users::UserRow;
use crm_sync_store::announce::Announcements;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::AppState;

/// Outbox batch ids of admin-api start with this, so its relay takes only its own leftovers.
pub const BATCH_PREFIX: &str = "admin-api/";
/// Namespace of the `change_id`s admin-api derives.
const NAMESPACE: Uuid = Uuid::from_u128(0x8c41_2f0e_6b7d_4c19_a3e5_1d20_7f9b_c6a8);

/// The messages of one change (one request), staged together and published together.
pub struct Batch {
    pub id: String,
    staged: Staged,
}

impl Batch {
    pub fn new() -> Self {
        Batch {
            id: format!("{BATCH_PREFIX}{}", Uuid::new_v4()),
            staged: Staged::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Stages an `ActivityChanged` for each activity, inside the caller's transaction.
    pub async fn stage_activities(
        &mut self,
        conn: &mut PgConnection,
        topic: &str,
        company_id: Uuid,
        activities: &[ActivityRow],
        visible: bool,
        state: ActivityState,
    ) -> Result<(), sqlx::Error> {
        let announcements = Announcements {
            batch: &self.id,
            namespace: NAMESPACE,
            topic,
            company_id,
        };
        let rows = announcements
            .activities_changed(activities, state, visible)
            .into_iter()
            .map(|message| (0, self.id.as_str(), message))
            .collect();
        self.staged.stage_all(conn, rows).await
    }

    /// Stages a `UserProvisioned` announcing the user as it now is (read inside the caller's
    /// transaction, after the change), naming the accounts merged into it, if any.
    pub async fn stage_user(
        &mut self,
        conn: &mut PgConnection,
        topic: &str,
        user: &UserRow,
        merged_user_ids: &[Uuid],
    ) -> Result<(), sqlx::Error> {
        let company_id = user.company_id;
        let event_id = Uuid::new_v5(
            &NAMESPACE,
            format!("{}\u{1f}{}", user.id, self.id).as_bytes(),
        );
        let change = user_provisioned(
            event_id,
            &UserFacts {
                company_id,
                user_id: user.id,
                integration_id: user.identity_integration_ids.first().copied(),
                crm_user_id: user
                    .identity_crm_user_ids
                    .first()
                    .map_or("", String::as_str),
                display_name: &user.display_name,
                email: user.email.as_deref(),
                status: user_status(&user.status, user.deactivated_at.is_some()),
                linked_existing_user: !merged_user_ids.is_empty(),
                merged_user_ids,
            },
        );
        self.staged
            .stage(
                conn,
                &self.id,
                Pending {
                    topic: topic.to_owned(),
                    key: format!("{company_id}/{}", user.id),
                    message_id: change.event_id.clone(),
                    payload: change.encode_to_vec(),
                },
            )
            .await
    }

    /// Publishes the batch after its transaction committed. A failure is logged, not returned:
    /// the change itself is committed, and the relay publishes the batch later.
    pub async fn publish(self, state: &AppState) {
        if self.is_empty() {
            return;
        }
        match state.outbox.publish(self.staged).await {
            Ok(n) => {
                count_published(n);
                tracing::debug!(batch = %self.id, messages = n, "published visibility changes")
            }
            Err(error) => tracing::warn!(
                batch = %self.id,
                error = format!("{:#}", anyhow::Error::new(error)),
                "publishing visibility changes failed; the outbox relay will retry"
            ),
        }
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

/// Publishes admin-api batches left in the outbox for longer than a few seconds, at start-up
/// and then every few seconds, until shutdown.
pub async fn relay_leftovers(outbox: Outbox, shutdown: CancellationToken) {
    outbox
        .relay_leftovers(
            Sweep {
                batch_prefix: BATCH_PREFIX,
                abandoned_after: Duration::from_secs(10),
                limit: 500,
                interval: Duration::from_secs(5),
                on_relayed: count_published,
            },
            shutdown,
        )
        .await;
}

fn count_published(n: usize) {
    metrics::counter!(crate::metric_definitions::VISIBILITY_CHANGES_PUBLISHED).increment(n as u64);
}
