//! Per integration, whether its data is flowing: the last webhook, the last webhook request
//! refused, the last reconciliation and how many missed webhooks pulls have made up for. Each
//! writer touches only its own columns.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// An object a reconciliation could not read while it went on with the others, and why (the
/// CRM's answer, e.g. an `INVALID_FIELD` for a field the API user may not read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectNotRead {
    pub object: String,
    pub error: String,
}

/// How the last reconciliation ended, as the sync status tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconciliationOutcome {
    /// Every object was read.
    Succeeded,
    /// The run went through; the CRM refused some objects (the others were reconciled).
    Partial,
    /// The run failed as a whole (no or refused credentials, the CRM or Kafka unavailable).
    Failed,
}

impl ReconciliationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReconciliationOutcome::Succeeded => "succeeded",
            ReconciliationOutcome::Partial => "partial",
            ReconciliationOutcome::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct SyncStatus {
    pub integration_id: Uuid,
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub last_refused_webhook_at: Option<DateTime<Utc>>,
    /// Its status, code and message, e.g. `401 invalid_signature: …`.
    pub last_webhook_refusal: Option<String>,
    pub last_reconciliation_at: Option<DateTime<Utc>>,
    pub last_reconciliation_job: Option<Uuid>,
    pub last_reconciliation_scanned: i64,
    pub last_reconciliation_published: i64,
    pub last_reconciliation_api_calls: i64,
    /// Why the last reconciliation failed as a whole, if it did.
    pub last_reconciliation_error: Option<String>,
    /// The objects the last reconciliation could not read while it reconciled the others.
    #[sqlx(json)]
    pub last_reconciliation_objects_not_read: Vec<ObjectNotRead>,
    pub missed_webhooks_fixed: i64,
    pub last_fixed_at: Option<DateTime<Utc>>,
}

impl SyncStatus {
    /// How the last reconciliation ended; None before the first one.
    pub fn reconciliation_outcome(&self) -> Option<ReconciliationOutcome> {
        self.last_reconciliation_at?;
        Some(if self.last_reconciliation_error.is_some() {
            ReconciliationOutcome::Failed
        } else if self.last_reconciliation_objects_not_read.is_empty() {
            ReconciliationOutcome::Succeeded
        } else {
            ReconciliationOutcome::Partial
        })
    }
}

/// A webhook of the integration arrived at `at`. Rows younger than `precision_secs` are left
/// alone, so a busy integration costs one write per that many seconds, not one per request.
pub async fn record_webhook(
    pool: &PgPool,
    integration_id: Uuid,
    at: DateTime<Utc>,
    precision_secs: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO integration_sync_status (integration_id, last_webhook_at)
         SELECT id, $2 FROM integrations WHERE id = $1
         ON CONFLICT (integration_id) DO UPDATE
         SET last_webhook_at = EXCLUDED.last_webhook_at, updated_at = now()
         WHERE integration_sync_status.last_webhook_at IS NULL
            OR integration_sync_status.last_webhook_at
               < EXCLUDED.last_webhook_at - $3::float8 * interval '1 second'",
    )
    .bind(integration_id)
    .bind(at)
    .bind(precision_secs)
    .execute(pool)
    .await?;
    Ok(())
}

/// The longest refusal kept: a malformed body's parse error may quote much of it.
const MAX_REFUSAL_BYTES: usize = 1000;

/// A webhook request of the integration was refused at `at` (`refusal`: its status, code and
/// message, which never hold a secret). Throttled like [`record_webhook`].
pub async fn record_webhook_refusal(
    pool: &PgPool,
    integration_id: Uuid,
    at: DateTime<Utc>,
    refusal: &str,
    precision_secs: f64,
) -> Result<(), sqlx::Error> {
    let mut end = refusal.len().min(MAX_REFUSAL_BYTES);
    while !refusal.is_char_boundary(end) {
        end -= 1;
    }
    sqlx::query(
        "INSERT INTO integration_sync_status
             (integration_id, last_refused_webhook_at, last_webhook_refusal)
         SELECT id, $2, $3 FROM integrations WHERE id = $1
         ON CONFLICT (integration_id) DO UPDATE
         SET last_refused_webhook_at = EXCLUDED.last_refused_webhook_at,
             last_webhook_refusal = EXCLUDED.last_webhook_refusal, updated_at = now()
         WHERE integration_sync_status.last_refused_webhook_at IS NULL
            OR integration_sync_status.last_refused_webhook_at
               < EXCLUDED.last_refused_webhook_at - $4::float8 * interval '1 second'",
    )
    .bind(integration_id)
    .bind(at)
    .bind(refusal[..end].replace('\0', ""))
    .bind(precision_secs)
    .execute(pool)
    .await?;
    Ok(())
}

/// The figures of a reconciliation run that ended at `at`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReconciliationRun {
    pub job_id: Uuid,
    pub scanned: i64,
    pub published: i64,
    pub api_calls: i64,
    /// Why the run failed as a whole, if it did.
    pub error: Option<String>,
    /// The objects the CRM refused while the run went on with the others.
    pub objects_not_read: Vec<ObjectNotRead>,
}

pub async fn record_reconciliation(
    pool: &PgPool,
    integration_id: Uuid,
    at: DateTime<Utc>,
    run: &ReconciliationRun,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO integration_sync_status
             (integration_id, last_reconciliation_at, last_reconciliation_job,
              last_reconciliation_scanned, last_reconciliation_published,
              last_reconciliation_api_calls, last_reconciliation_error,
              last_reconciliation_objects_not_read)
         SELECT id, $2, $3, $4, $5, $6, $7, $8 FROM integrations WHERE id = $1
         ON CONFLICT (integration_id) DO UPDATE
         SET last_reconciliation_at = EXCLUDED.last_reconciliation_at,
             last_reconciliation_job = EXCLUDED.last_reconciliation_job,
             last_reconciliation_scanned = EXCLUDED.last_reconciliation_scanned,
             last_reconciliation_published = EXCLUDED.last_reconciliation_published,
             last_reconciliation_api_calls = EXCLUDED.last_reconciliation_api_calls,
             last_reconciliation_error = EXCLUDED.last_reconciliation_error,
             last_reconciliation_objects_not_read =
                 EXCLUDED.last_reconciliation_objects_not_read,
             updated_at = now()",
    )
    .bind(integration_id)
    .bind(at)
    .bind(run.job_id)
    .bind(run.scanned)
    .bind(run.published)
    .bind(run.api_calls)
    .bind(&run.error)
    .bind(sqlx::types::Json(&run.objects_not_read))
    .execute(pool)
    .await?;
    Ok(())
}

/// Adds to each integration's count of missed webhooks that pulls made up for. Integrations that
/// no longer exist are skipped.
pub async fn add_missed_webhooks_fixed(
    pool: &PgPool,
    counts: &[(Uuid, i64)],
    at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    if counts.is_empty() {
        return Ok(());
    }
    let (ids, fixed): (Vec<Uuid>, Vec<i64>) = counts.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO integration_sync_status (integration_id, missed_webhooks_fixed, last_fixed_at)
         SELECT i.id, c.fixed, $3
         FROM unnest($1::uuid[], $2::int8[]) AS c(id, fixed) JOIN integrations i ON i.id = c.id
         ON CONFLICT (integration_id) DO UPDATE
         SET missed_webhooks_fixed = integration_sync_status.missed_webhooks_fixed
                                     + EXCLUDED.missed_webhooks_fixed,
             last_fixed_at = EXCLUDED.last_fixed_at, updated_at = now()",
    )
    .bind(&ids)
    .bind(&fixed)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The integration's status, if it belongs to `company_id` (an empty status when nothing was
/// recorded yet).
pub async fn get(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
) -> Result<Option<SyncStatus>, sqlx::Error> {
    let row: Option<SyncStatus> = sqlx::query_as(
        "SELECT i.id AS integration_id, s.last_webhook_at, s.last_refused_webhook_at,
                s.last_webhook_refusal, s.last_reconciliation_at,
                s.last_reconciliation_job,
                coalesce(s.last_reconciliation_scanned, 0) AS last_reconciliation_scanned,
                coalesce(s.last_reconciliation_published, 0) AS last_reconciliation_published,
                coalesce(s.last_reconciliation_api_calls, 0) AS last_reconciliation_api_calls,
                s.last_reconciliation_error,
                coalesce(s.last_reconciliation_objects_not_read, '[]'::jsonb)
                    AS last_reconciliation_objects_not_read,
                coalesce(s.missed_webhooks_fixed, 0) AS missed_webhooks_fixed, s.last_fixed_at
         FROM integrations i LEFT JOIN integration_sync_status s ON s.integration_id = i.id
         WHERE i.id = $1 AND i.company_id = $2",
    )
    .bind(integration_id)
    .bind(company_id)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}
