//! Turning `auto_sync_users` on attaches what is already waiting, as it promises: every CRM
//! identity of the integration that has unmapped, recorded activities gets its account at once,
//! instead of at that CRM user's next event, which may never come.
//!
//! The provisioner owns account creation, so it does this too, on the same race-free path as
//! events ([`Provisioner::provision_identity`]): the identity row is locked, only the first
//! transaction to find it unmapped creates (or links by email) the account, stages
//! `UserProvisioned` and the attached activities' `ActivityChanged` in the outbox, and any other
//! replica or concurrent event then finds it mapped and changes nothing. Running this twice, or on
//! every replica at once, therefore creates each account exactly once.
//!
//! What triggers it: a database trigger notifies [`CHANNEL`] with the integration id whenever an
//! integration is inserted with auto-sync on or updated from off to on, in the writing
//! transaction (admin-api, `crm-sync apply`, anything). Notifications reach only listeners
//! connected at commit, so every replica also sweeps all auto-syncing integrations when it starts
//! listening (start-up and every reconnect), and again now and then to retry what failed.

use std::time::Duration;

use crm_sync_kafka::Failure;
use crm_sync_store::listen::{self, OnChange, Resync};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::Provisioner;

/// Notified (payload: the integration id) by the `integrations_auto_sync_enabled_*` triggers.
pub const CHANNEL: &str = "crm_sync_auto_sync_enabled";
/// Safety net: how often every replica sweeps all auto-syncing integrations anyway.
const SWEEP_INTERVAL: Duration = Duration::from_secs(300);
/// How soon a sweep retries after an identity could not be provisioned.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Waiting identities read per query.
const BATCH: i64 = 200;

pub struct AutoSync {
    provisioner: Provisioner,
}

/// One CRM identity waiting for an account.
#[derive(sqlx::FromRow)]
struct Waiting {
    company_id: Uuid,
    integration_id: Uuid,
    crm_user_id: String,
}

impl AutoSync {
    /// `provisioner` is a second handle on the consumer's resources (pool, publisher, directory).
    pub fn new(provisioner: Provisioner) -> AutoSync {
        AutoSync { provisioner }
    }

    /// Listens for integrations whose auto-sync was turned on and provisions their waiting
    /// identities, until shutdown; reconnects with backoff and sweeps after every (re)connect.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let pool = self.provisioner.pool.clone();
        listen::listen(&pool, &[CHANNEL], &mut self, &shutdown).await;
    }

    /// Sweeps every auto-syncing integration; returns when to sweep next.
    async fn sweep(&self, why: Resync) -> Duration {
        tracing::debug!(
            ?why,
            "sweeping auto-syncing integrations for waiting CRM identities"
        );
        match self.provision_logged(None).await {
            Ok(()) => SWEEP_INTERVAL,
            Err(()) => RETRY_AFTER,
        }
    }

    async fn provision_logged(&self, integration: Option<Uuid>) -> Result<(), ()> {
        match self.provision_waiting(integration).await {
            Ok(Outcome {
                provisioned,
                failed,
            }) => {
                if provisioned > 0 {
                    tracing::info!(
                        ?integration,
                        identities = provisioned,
                        "auto-sync provisioned the CRM identities that were waiting"
                    );
                }
                if failed > 0 { Err(()) } else { Ok(()) }
            }
            Err(error) => {
                tracing::warn!(
                    ?integration,
                    error = format!("{error:#}"),
                    "auto-sync could not read the waiting CRM identities; retrying"
                );
                Err(())
            }
        }
    }

    /// Provisions the waiting identities of `integration` (of every auto-syncing integration
    /// with None). One failing identity does not hold the others back; it is counted and left
    /// for the next sweep.
    pub async fn provision_waiting(&self, integration: Option<Uuid>) -> anyhow::Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut after: Option<(Uuid, String)> = None;
        loop {
            let (after_integration, after_user) = after.clone().unzip();
            let batch: Vec<Waiting> = sqlx::query_as(
                "SELECT ci.company_id, ci.integration_id, ci.crm_user_id
                 FROM crm_identities ci JOIN integrations i ON i.id = ci.integration_id
                 WHERE i.auto_sync_users AND ci.user_id IS NULL AND ci.unmapped_at IS NULL
                   AND ($1::uuid IS NULL OR ci.integration_id = $1)
                   AND ($2::uuid IS NULL OR (ci.integration_id, ci.crm_user_id) > ($2, $3))
                   AND EXISTS (SELECT 1 FROM activities a
                               WHERE a.integration_id = ci.integration_id AND a.crm_user_id = ci.crm_user_id
                                 AND a.user_id IS NULL AND a.state = 'recorded')
                 ORDER BY ci.integration_id, ci.crm_user_id
                 LIMIT $4",
            )
            .bind(integration)
            .bind(after_integration)
            .bind(after_user)
            .bind(BATCH)
            .fetch_all(&self.provisioner.pool)
            .await?;
            let full = batch.len() as i64 == BATCH;
            for w in &batch {
                match self.provision_one(w).await {
                    Ok(()) => {
                        outcome.provisioned += 1;
                        metrics::counter!(crate::metric_definitions::AUTO_SYNC_IDENTITIES, "result" => "provisioned").increment(1);
                    }
                    Err(error) => {
                        outcome.failed += 1;
                        metrics::counter!(crate::metric_definitions::AUTO_SYNC_IDENTITIES, "result" => "failed").increment(1);
                        tracing::warn!(integration_id = %w.integration_id, crm_user_id = w.crm_user_id, error = format!("{error:#}"), "auto-sync could not provision a waiting CRM identity; retrying later");
                    }
                }
            }
            match batch.last() {
                Some(last) if full => {
                    after = Some((last.integration_id, last.crm_user_id.clone()));
                }
                _ => return Ok(outcome),
            }
        }
    }

    async fn provision_one(&self, w: &Waiting) -> anyhow::Result<()> {
        let p = &self.provisioner;
        // Outside the transaction, like for events: a slow CRM API must not hold row locks.
        if let Some(directory) = &p.directory
            && let Err(error) = directory
                .look_up_for_new_account(w.integration_id, &w.crm_user_id)
                .await
        {
            tracing::warn!(integration_id = %w.integration_id, crm_user_id = w.crm_user_id, error = format!("{error:#}"), "directory lookup before auto-sync failed; the account keeps the names known so far");
        }
        // Unique per attempt: only the replica whose transaction staged the messages publishes
        // them (a replica that lost the race on the identity staged nothing, and must not publish
        // the winner's rows a second time while the winner does). Rows left by a crash between
        // commit and publish are sent by the outbox relay, and the messages' own ids are derived
        // per identity, so consumers can tell a replay.
        let staged_under = format!(
            "auto-sync/{}/{}/{}",
            w.integration_id,
            w.crm_user_id,
            Uuid::new_v4()
        );
        let identity = crate::provision::IdentityRef {
            company_id: w.company_id,
            integration_id: w.integration_id,
            crm_user_id: &w.crm_user_id,
        };
        p.provision_waiting_identity(identity, &staged_under)
            .await
            .map_err(into_anyhow)?;
        Ok(())
    }
}

impl OnChange for AutoSync {
    async fn resync(&mut self, why: Resync) -> Option<Duration> {
        Some(self.sweep(why).await)
    }

    async fn changed(&mut self, integrations: Vec<String>) -> Option<Duration> {
        let mut retry = None;
        for integration in integrations {
            let Ok(id) = Uuid::parse_str(&integration) else {
                tracing::warn!(payload = %integration, "ignoring a malformed auto-sync notification");
                continue;
            };
            if self.provision_logged(Some(id)).await.is_err() {
                retry = Some(RETRY_AFTER);
            }
        }
        retry
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Identities now mapped (created, linked by email, or found mapped by a concurrent writer).
    pub provisioned: usize,
    /// Identities left for the next sweep.
    pub failed: usize,
}

fn into_anyhow(failure: Failure) -> anyhow::Error {
    match failure {
        Failure::Transient(error) => error,
        Failure::Permanent(dead) => anyhow::anyhow!("{}: {}", dead.reason, dead.detail),
    }
}
