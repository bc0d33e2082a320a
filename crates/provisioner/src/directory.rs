//! Real names and emails for the accounts auto-sync creates, from the CRM's own user directory.
//!
//! [`Directory::prepare`] runs before a batch's database transaction (a slow CRM must never hold
//! row locks): the CRM users the batch is about to create accounts for without a name or email
//! are looked up together, concurrently and for a bounded time (see `prepare`), and what the CRM
//! says is stored on the CRM identity, where account creation picks it up. A lookup that fails,
//! or does not answer in time, never holds the outcomes back: the account is created with what
//! is known (the CRM user id as its name), the identity is marked `pending`, and
//! [`Directory::complete_pending`] looks it up again in the background with growing intervals,
//! then completes the account and announces it with a second `UserProvisioned` (same user, its
//! own event id).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use crm_sync_crm_directory::{Config, Crm, DirectoryClient, DirectoryUser, LookupError};
use crm_sync_proto::Message as _;
use crm_sync_proto::announce::{UserFacts, user_provisioned, user_status};
use crm_sync_runtime::Settings;

use crm_sync_outbox::{Outbox, Pending, Staged};
use crm_sync_store::credentials::{self, SecretKey};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Namespace of the ids of completion announcements.
const NAMESPACE: Uuid = Uuid::from_u128(0x8d2f_41c6_0b7e_4a59_9c3d_e15a_7f20_b6c4);
/// Credentials are re-read this often, so changed API credentials take effect.
const CLIENT_TTL: Duration = Duration::from_secs(300);
/// Background lookups of one identity stop after this many attempts (state `failed`).
const MAX_ATTEMPTS: i32 = 40;
/// Identities completed per background round.
const BATCH: i64 = 100;

mod prepare;
mod recheck;

/// Per integration: when its credentials were read, and its client (None: no API credentials).
type Clients = HashMap<Uuid, (Instant, Option<Arc<DirectoryClient>>)>;

pub struct Directory {
    pool: PgPool,
    outbox: Outbox,
    users_topic: String,
    key: SecretKey,
    config: Config,
    inline_attempts: u32,
    /// How long a batch waits for its lookups at most (`directory.inline_deadline_ms`).
    inline_deadline: Duration,
    interval: Duration,
    /// How long a mapped user's directory answer is trusted (zero: never asked again).
    recheck: Duration,
    clients: Mutex<Clients>,
}

impl Directory {
    /// None when no `secrets.encryption_key` is configured: API credentials cannot be read, so
    /// accounts keep the names the events carry.
    pub fn from_settings(
        pool: PgPool,
        outbox: Outbox,
        settings: &Settings,
    ) -> anyhow::Result<Option<Arc<Directory>>> {
        let Some(key) = SecretKey::from_settings(&settings.secrets)? else {
            tracing::warn!(
                "no secrets.encryption_key configured: CRM users are not looked up through the CRMs' APIs"
            );
            return Ok(None);
        };
        let d = &settings.directory;
        Ok(Some(Arc::new(Directory {
            pool,
            outbox,
            users_topic: settings.topics.users.clone(),
            key,
            config: Config {
                timeout: Duration::from_millis(d.timeout_ms),
                cache_ttl: Duration::from_secs(d.cache_ttl_secs),
                egress: crm_sync_store::credentials::egress_from_settings(d),
                ..Config::default()
            },
            inline_attempts: d.inline_attempts.max(1),
            inline_deadline: Duration::from_millis(d.inline_deadline_ms),
            interval: Duration::from_secs(d.completion_interval_secs),
            recheck: Duration::from_secs(d.recheck_interval_secs),
            clients: Mutex::new(HashMap::new()),
        })))
    }

    /// Stores a lookup's result on the identity (creating the row if need be). `attempts` is how
    /// many were made before this one.
    async fn record(
        &self,
        company_id: Uuid,
        integration_id: Uuid,
        crm_user_id: &str,
        attempts: i32,
        result: &Result<DirectoryUser, LookupError>,
    ) -> Result<(), sqlx::Error> {
        let attempts = attempts + 1;
        let active = result.as_ref().ok().and_then(|user| user.active);
        let (name, email, state, next, error) = match result {
            Ok(user) => (
                user.name.clone(),
                user.email.clone(),
                "complete",
                None,
                None,
            ),
            Err(LookupError::NotFound(_)) => {
                (None, None, "not_found", None, Some(result_text(result)))
            }
            Err(_) if attempts >= MAX_ATTEMPTS => {
                (None, None, "failed", None, Some(result_text(result)))
            }
            Err(e) => (
                None,
                None,
                "pending",
                Some(Utc::now() + retry_delay(self.interval, attempts, e)),
                Some(result_text(result)),
            ),
        };
        sqlx::query(
            "INSERT INTO crm_identities (company_id, integration_id, crm_user_id, display_name, email, directory_email,
                                         directory_state, directory_attempts, directory_next_attempt_at, directory_error, crm_active,
                                         crm_active_at)
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, CASE WHEN $10::boolean IS NOT NULL THEN now() END)
             ON CONFLICT (integration_id, crm_user_id) DO UPDATE SET
                 display_name = COALESCE(crm_identities.display_name, EXCLUDED.display_name),
                 email = COALESCE(crm_identities.email, EXCLUDED.email),
                 directory_email = COALESCE(EXCLUDED.directory_email, crm_identities.directory_email),
                 directory_state = EXCLUDED.directory_state,
                 directory_attempts = EXCLUDED.directory_attempts,
                 directory_next_attempt_at = EXCLUDED.directory_next_attempt_at,
                 directory_error = EXCLUDED.directory_error,
                 crm_active = COALESCE(EXCLUDED.crm_active, crm_identities.crm_active),
                 -- The directory answers as of now: newer than any user event received so far.
                 crm_active_at = COALESCE(EXCLUDED.crm_active_at, crm_identities.crm_active_at),
                 directory_checked_at = CASE WHEN EXCLUDED.directory_state = 'complete' THEN now()
                                             ELSE crm_identities.directory_checked_at END,
                 -- Active again in the CRM: a later inactive word applies anew.
                 crm_inactive_applied_at = CASE WHEN EXCLUDED.crm_active THEN NULL
                                                ELSE crm_identities.crm_inactive_applied_at END,
                 updated_at = now()",
        )
        .bind(company_id)
        .bind(integration_id)
        .bind(crm_user_id)
        .bind(name)
        .bind(email)
        .bind(state)
        .bind(attempts)
        .bind(next)
        .bind(error)
        .bind(active)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The integration's directory client, or None when it has no API credentials.
    async fn client(
        &self,
        integration_id: Uuid,
        crm: &str,
    ) -> anyhow::Result<Option<Arc<DirectoryClient>>> {
        if let Some((at, client)) = self.lock().get(&integration_id)
            && at.elapsed() < CLIENT_TTL
        {
            return Ok(client.clone());
        }
        let client = match Crm::from_name(crm) {
            None => None,
            Some(crm) => {
                let secrets =
                    credentials::load(&self.pool, integration_id, Some(&self.key)).await?;
                match secrets.and_then(|s| s.api) {
                    None => None,
                    Some(api) => match DirectoryClient::new(crm, api.into(), self.config.clone()) {
                        // Rotated refresh tokens are stored as soon as the CRM issues them.
                        Ok(client) => Some(Arc::new(client.keeping_rotated_tokens(Arc::new(
                            credentials::StoredRefreshToken {
                                pool: self.pool.clone(),
                                key: self.key.clone(),
                                integration_id,
                            },
                        )))),
                        Err(e) => {
                            tracing::warn!(%integration_id, error = %e, "the integration's API credentials cannot be used");
                            None
                        }
                    },
                }
            }
        };
        self.lock()
            .insert(integration_id, (Instant::now(), client.clone()));
        Ok(client)
    }

    /// Refused credentials are read again at the next lookup: an admin, or another client
    /// storing its rotated refresh token, may have changed them.
    fn forget_refused(&self, integration_id: Uuid, result: &Result<DirectoryUser, LookupError>) {
        if matches!(result, Err(LookupError::Unauthorized(_))) {
            self.lock().remove(&integration_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Clients> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Until shutdown: every `directory.completion_interval_secs`, looks up the identities whose
    /// lookup failed and completes their accounts, and re-checks mapped users (what the lookups
    /// say about users being inactive is acted on by `crate::people::CrmInactive`, notified).
    pub async fn complete_pending(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
            match self.complete_round().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(identities = n, "completed CRM users looked up again"),
                Err(e) => tracing::warn!(error = %e, "completing CRM users failed; retrying later"),
            }
            if let Err(e) = self.recheck_round().await {
                tracing::warn!(error = %format!("{e:#}"), "re-checking mapped CRM users failed; retrying later");
            }
        }
    }

    /// One round; returns how many identities got their name and email.
    pub async fn complete_round(&self) -> anyhow::Result<usize> {
        let due: Vec<(Uuid, Uuid, String, i32, String)> = sqlx::query_as(
            "SELECT ci.company_id, ci.integration_id, ci.crm_user_id, ci.directory_attempts, i.crm
             FROM crm_identities ci JOIN integrations i ON i.id = ci.integration_id
             WHERE ci.directory_state = 'pending' AND ci.directory_next_attempt_at <= now()
             ORDER BY ci.directory_next_attempt_at LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(&self.pool)
        .await?;
        let mut completed = 0;
        for (company_id, integration_id, crm_user_id, attempts, crm) in due {
            let Some(client) = self.client(integration_id, &crm).await? else {
                continue;
            };
            let result = client.lookup(&crm_user_id).await;
            self.forget_refused(integration_id, &result);
            self.record(company_id, integration_id, &crm_user_id, attempts, &result)
                .await?;
            match result {
                Ok(user) => {
                    if self
                        .complete_account(company_id, integration_id, &crm_user_id, &user)
                        .await?
                    {
                        completed += 1;
                    }
                    metrics::counter!(crate::metric_definitions::DIRECTORY_COMPLETIONS, "result" => "completed").increment(1);
                }
                Err(e) => {
                    let label = if e.is_transient() { "retry" } else { "gave_up" };
                    metrics::counter!(crate::metric_definitions::DIRECTORY_COMPLETIONS, "result" => label)
                        .increment(1);
                    tracing::info!(%integration_id, crm_user_id, error = %e, "the CRM user is still not known");
                }
            }
        }
        Ok(completed)
    }

    /// Fills the name and email of the account created for the identity (only where it still has
    /// the placeholder), announces it, and says whether anything changed.
    async fn complete_account(
        &self,
        company_id: Uuid,
        integration_id: Uuid,
        crm_user_id: &str,
        user: &DirectoryUser,
    ) -> anyhow::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let account: Option<(Uuid, String, Option<String>, String)> = sqlx::query_as(
            "SELECT u.id, u.display_name, u.email, u.status FROM crm_identities ci
             JOIN users u ON u.id = ci.user_id
             WHERE ci.integration_id = $1 AND ci.crm_user_id = $2 AND u.source = 'auto_sync'
             FOR UPDATE OF u",
        )
        .bind(integration_id)
        .bind(crm_user_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, display_name, email, status)) = account else {
            return Ok(false);
        };
        let new_name = user
            .name
            .clone()
            .filter(|_| display_name == crm_user_id || display_name.trim().is_empty());
        let mut new_email = user.email.clone().filter(|_| email.is_none());
        // One account per email in a company: an address another account has stays off.
        if let Some(candidate) = &new_email
            && email_taken(&mut tx, company_id, candidate, user_id).await?
        {
            tracing::warn!(%user_id, "the CRM user's email belongs to another account; left unset");
            new_email = None;
        }
        if new_name.is_none() && new_email.is_none() {
            return Ok(false);
        }
        fill_account(&mut tx, user_id, new_name.as_deref(), new_email.as_deref()).await?;
        let event_id = Uuid::new_v5(
            &NAMESPACE,
            format!("user-completed\u{1f}{integration_id}\u{1f}{crm_user_id}").as_bytes(),
        );
        let display_name = new_name.unwrap_or(display_name);
        let email = new_email.or(email);
        let announcement = user_provisioned(
            event_id,
            &UserFacts {
                company_id,
                user_id,
                integration_id: Some(integration_id),
                crm_user_id,
                display_name: &display_name,
                email: email.as_deref(),
                status: user_status(&status, false),
                linked_existing_user: false,
                merged_user_ids: &[],
            },
        );
        let event_id = event_id.to_string();
        let mut staged = Staged::default();
        staged
            .stage(
                &mut tx,
                &event_id,
                Pending {
                    topic: self.users_topic.clone(),
                    key: format!("{company_id}/{user_id}"),
                    message_id: event_id.clone(),
                    payload: announcement.encode_to_vec(),
                },
            )
            .await?;
        tx.commit().await?;
        self.outbox.publish(staged).await?;
        tracing::info!(%user_id, %integration_id, crm_user_id, "completed the account's name and email from the CRM");
        Ok(true)
    }
}

/// Whether another account of the company has the email.
async fn email_taken(
    tx: &mut PgConnection,
    company_id: Uuid,
    email: &str,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let (taken,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE company_id = $1 AND lower(email) = lower($2) AND id <> $3)",
    )
    .bind(company_id)
    .bind(email)
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(taken)
}

/// Sets the name and the email given; an email from the CRM's directory is no longer one taken
/// from a payload.
async fn fill_account(
    tx: &mut PgConnection,
    user_id: Uuid,
    name: Option<&str>,
    email: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET display_name = COALESCE($2, display_name), email = COALESCE($3, email),
                          email_from_payload = email_from_payload AND $3 IS NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(user_id)
    .bind(name)
    .bind(email)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn result_text(result: &Result<DirectoryUser, LookupError>) -> String {
    match result {
        Ok(_) => String::new(),
        Err(e) => e.to_string().chars().take(500).collect(),
    }
}

/// The completion interval, then doubling (30 s, 1 min, 2 min, … by default), capped at an hour;
/// refused credentials wait the hour at once (an admin has to fix them).
fn retry_delay(base: Duration, attempts: i32, error: &LookupError) -> chrono::Duration {
    if !error.is_transient() {
        return chrono::Duration::hours(1);
    }
    let exponent = (attempts - 1).clamp(0, 12) as u32;
    let base = i64::try_from(base.as_secs()).unwrap_or(3600).max(1);
    let backoff = base.saturating_mul(1_i64 << exponent).min(3600);
    // A CRM that said how long its limit lasts is not asked again before then: a look-up
    // sooner would only spend the next window's allowance on another refusal.
    let asked = match error {
        LookupError::RateLimited { wait, .. } => i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        _ => 0,
    };
    chrono::Duration::seconds(backoff.max(asked).min(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        let transient = LookupError::Unavailable("503".into());
        let base = Duration::from_secs(30);
        let secs = |n| retry_delay(base, n, &transient).num_seconds();
        assert_eq!((secs(1), secs(2), secs(3)), (30, 60, 120));
        assert_eq!(secs(20), 3600);
        let limited = LookupError::RateLimited {
            message: "daily allowance spent".into(),
            wait: Duration::from_secs(7_200),
        };
        assert_eq!(retry_delay(base, 1, &limited).num_seconds(), 7_200);
        assert_eq!(
            retry_delay(base, 1, &LookupError::Unauthorized("401".into())).num_seconds(),
            3600
        );
        assert_eq!(
            retry_delay(Duration::from_secs(1), 2, &transient).num_seconds(),
            2
        );
    }
}
