//! Deactivating at once the users the CRM says are inactive: a trigger on `crm_identities`
//! notifies [`INACTIVE_CHANNEL`] whenever a mapped CRM user becomes due (ingest recording the
//! CRM's user event, a directory lookup, an admin mapping such a user), and every replica
//! listening runs a pass. Notifications reach only listeners connected at commit, so a pass
//! also runs after every (re)connect and now and then; passes running at once on several
//! replicas deactivate each user once (see [`deactivate_inactive_in_crm`]).

use std::time::Duration;

use crm_sync_outbox::Outbox;
use crm_sync_store::crm_user_status::INACTIVE_CHANNEL;
use crm_sync_store::listen::{self, OnChange, Resync};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Topics, deactivate_inactive_in_crm};

/// Safety net: how often a pass runs without being notified.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How soon a pass runs again after one failed or left users due.
const RETRY_AFTER: Duration = Duration::from_secs(2);

pub struct CrmInactive {
    pool: PgPool,
    outbox: Outbox,
    users_topic: String,
    activities_topic: String,
}

impl CrmInactive {
    pub fn new(
        pool: PgPool,
        outbox: Outbox,
        users_topic: String,
        activities_topic: String,
    ) -> CrmInactive {
        CrmInactive {
            pool,
            outbox,
            users_topic,
            activities_topic,
        }
    }

    /// Until shutdown; reconnects with backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let pool = self.pool.clone();
        listen::listen(&pool, &[INACTIVE_CHANNEL], &mut self, &shutdown).await;
    }

    /// One pass; returns when to run again unprompted.
    async fn pass(&self) -> Duration {
        let topics = Topics {
            users: &self.users_topic,
            activities: &self.activities_topic,
        };
        match deactivate_inactive_in_crm(&self.pool, &self.outbox, topics).await {
            Ok(pass) if pass.more => RETRY_AFTER,
            Ok(_) => SWEEP_INTERVAL,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "deactivating users the CRM says are inactive failed; retrying");
                RETRY_AFTER
            }
        }
    }
}

impl OnChange for CrmInactive {
    async fn resync(&mut self, _why: Resync) -> Option<Duration> {
        Some(self.pass().await)
    }

    async fn changed(&mut self, _integrations: Vec<String>) -> Option<Duration> {
        // A pass takes every integration's due users: one for the whole burst.
        Some(self.pass().await)
    }
}
