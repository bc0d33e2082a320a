//! Jobs that pull from the CRMs' APIs, leased through PostgreSQL so that each runs on one
//! replica at a time.
//!
//! A replica [`claim`]s a runnable job: one whose lease is free or expired. While it works it
//! [`renew`]s the lease and saves the job's [`checkpoint`] after every published page; both are
//! fenced by the lease owner, so a replica whose lease was taken over (it stalled past the
//! expiry) learns so at its next write and stops. A killed replica's job is claimed again once
//! its lease expires and resumes from the last checkpoint; a replica shutting down releases
//! its jobs' leases after their last checkpoint, so they are resumed at once.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

pub mod backfills;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Backfill,
    Reconciliation,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backfill => "backfill",
            JobKind::Reconciliation => "reconciliation",
        }
    }
}

impl TryFrom<String> for JobKind {
    type Error = String;

    fn try_from(text: String) -> Result<JobKind, String> {
        match text.as_str() {
            "backfill" => Ok(JobKind::Backfill),
            "reconciliation" => Ok(JobKind::Reconciliation),
            other => Err(format!("unknown job kind {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub company_id: Uuid,
    pub integration_id: Uuid,
    #[sqlx(try_from = "String")]
    pub kind: JobKind,
    pub state: String,
    pub since: DateTime<Utc>,
    pub objects: Vec<String>,
    pub checkpoint: Value,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub records_scanned: i64,
    pub records_published: i64,
    pub api_calls: i64,
    pub records_expected: Option<i64>,
    pub requested_by: String,
    pub last_error: Option<String>,
    pub cancel_requested: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, company_id, integration_id, kind, state, since, objects, checkpoint, \
    lease_owner, lease_expires_at, attempts, records_scanned, records_published, api_calls, \
    records_expected, requested_by, last_error, cancel_requested, created_at, started_at, finished_at";

/// A new pending job of an integration (its company taken from the integration).
pub async fn create(
    pool: &PgPool,
    integration_id: Uuid,
    kind: JobKind,
    since: DateTime<Utc>,
    objects: &[String],
) -> Result<Option<Job>, sqlx::Error> {
    let row: Option<Job> = sqlx::query_as(&format!(
        "INSERT INTO sync_jobs (id, company_id, integration_id, kind, since, objects)
         SELECT $1, company_id, id, $3, $4, $5 FROM integrations WHERE id = $2
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(integration_id)
    .bind(kind.as_str())
    .bind(since)
    .bind(objects)
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Job>, sqlx::Error> {
    let row: Option<Job> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM sync_jobs WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row)
}

/// Takes the lease of the runnable job waiting longest, if any: pending or running (a running
/// one whose lease expired was abandoned), due, and not leased by anyone else.
pub async fn claim(
    pool: &PgPool,
    owner: &str,
    lease: std::time::Duration,
) -> Result<Option<Job>, sqlx::Error> {
    let row: Option<Job> = sqlx::query_as(&format!(
        "UPDATE sync_jobs SET lease_owner = $1, lease_expires_at = now() + $2::float8 * interval '1 second',
                state = 'running', attempts = attempts + 1, started_at = coalesce(started_at, now()),
                updated_at = now()
         WHERE id = (
             SELECT id FROM sync_jobs
             WHERE state IN ('pending', 'running') AND run_after <= now()
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY run_after
             FOR UPDATE SKIP LOCKED
             LIMIT 1)
         RETURNING {COLUMNS}"
    ))
    .bind(owner)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(row)
}

/// Extends the lease; false when `owner` no longer holds it (it must stop working on the job).
pub async fn renew(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    lease: std::time::Duration,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET lease_expires_at = now() + $3::float8 * interval '1 second', updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND lease_expires_at >= now() AND state = 'running'",
    )
    .bind(id)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Progress after a published page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// The whole checkpoint (per object cursors).
    pub checkpoint: Value,
    pub scanned: i64,
    pub published: i64,
    pub api_calls: i64,
}

/// Saves the checkpoint and adds the counts; false when `owner` no longer holds the lease (the
/// page was published but another replica now runs the job: it republishes from the previous
/// checkpoint, with the same event ids).
pub async fn checkpoint(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    progress: &Progress,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET checkpoint = $3, records_scanned = records_scanned + $4,
                records_published = records_published + $5, api_calls = api_calls + $6,
                last_error = NULL, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND lease_expires_at >= now() AND state = 'running'",
    )
    .bind(id)
    .bind(owner)
    .bind(&progress.checkpoint)
    .bind(progress.scanned)
    .bind(progress.published)
    .bind(progress.api_calls)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How a lease holder ends its turn on a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// Stopped for good (bad credentials, bad scope): the error says why.
    Failed(String),
    /// To be tried again after `retry_at` (a transient error), from the checkpoint.
    Retry {
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// The next run of a periodic job: from `since`, with a fresh checkpoint.
    Reschedule {
        since: DateTime<Utc>,
        run_after: DateTime<Utc>,
        /// What the next run's checkpoint starts with (positions a CRM's change tracking keeps
        /// between runs); `{}` for none.
        carry: serde_json::Value,
        /// What this run could not pull (objects the CRM refused), shown as the job's last
        /// error until a run without one.
        error: Option<String>,
        /// The same objects one by one, for the integration's sync status.
        objects_not_read: Vec<crate::sync_status::ObjectNotRead>,
    },
    Cancelled,
    /// Handed back at shutdown after its last checkpoint: still running, its lease freed so that
    /// another replica resumes it at once instead of when the lease would have expired.
    Released,
}

/// What [`finish`] writes: state, error, run_after, since, and the checkpoint a new run starts
/// from (none: the checkpoint stays).
type Update<'a> = (
    &'a str,
    Option<&'a str>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<&'a serde_json::Value>,
);

/// Ends the turn and frees the lease; false when `owner` no longer held it.
pub async fn finish(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let (state, error, run_after, since, restart): Update<'_> = match outcome {
        Outcome::Succeeded => ("succeeded", None, None, None, None),
        Outcome::Failed(e) => ("failed", Some(e.as_str()), None, None, None),
        Outcome::Retry { error, retry_at } => {
            ("running", Some(error.as_str()), Some(*retry_at), None, None)
        }
        Outcome::Reschedule {
            since,
            run_after,
            carry,
            error,
            ..
        } => (
            "pending",
            error.as_deref(),
            Some(*run_after),
            Some(*since),
            Some(carry),
        ),
        Outcome::Cancelled => ("cancelled", None, None, None, None),
        Outcome::Released => ("running", None, None, None, None),
    };
    let finished = matches!(state, "succeeded" | "failed" | "cancelled");
    let done = sqlx::query(
        // A new run of a schedule says what it could not pull, or that it pulled everything.
        "UPDATE sync_jobs SET state = $3,
                last_error = CASE WHEN $7::jsonb IS NOT NULL THEN $4 ELSE coalesce($4, last_error) END,
                run_after = coalesce($5, run_after), since = coalesce($6, since),
                checkpoint = coalesce($7::jsonb, checkpoint),
                attempts = CASE WHEN $7::jsonb IS NOT NULL OR $3 = 'succeeded' THEN 0 ELSE attempts END,
                finished_at = CASE WHEN $8 THEN now() ELSE finished_at END,
                lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
         WHERE id = $1 AND lease_owner = $2",
    )
    .bind(id)
    .bind(owner)
    .bind(state)
    .bind(error)
    .bind(run_after)
    .bind(since)
    .bind(restart.map(sqlx::types::Json))
    .bind(finished)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Asks the job to stop; a pending one stops at once. False when no such job of the company is
/// still running or pending.
pub async fn cancel<'e>(
    db: impl sqlx::PgExecutor<'e>,
    company_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET cancel_requested = true,
                state = CASE WHEN state = 'pending' THEN 'cancelled' ELSE state END,
                finished_at = CASE WHEN state = 'pending' THEN now() ELSE finished_at END,
                updated_at = now()
         WHERE id = $1 AND company_id = $2 AND state IN ('pending', 'running')",
    )
    .bind(id)
    .bind(company_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// An integration's jobs, newest first.
pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
) -> Result<Vec<Job>, sqlx::Error> {
    let rows: Vec<Job> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM sync_jobs WHERE company_id = $1 AND integration_id = $2
         ORDER BY created_at DESC LIMIT 100"
    ))
    .bind(company_id)
    .bind(integration_id)
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Records how many records the job's passes are expected to scan (as the CRM counted them), for
/// its progress and ETA; fenced by the lease like the checkpoint.
pub async fn set_expected(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    expected: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET records_expected = $3, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(owner)
    .bind(expected)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Starts pulling for integrations that got API credentials and have no reconciliation schedule
/// yet: their schedule (first run one interval from now, from `overlap` ago) and, when
/// `backfill_days` > 0, a backfill of that many days. Found in the scheduler rather than where
/// credentials are written, so that every writer (admin API, CLI, a token the CRM rotated) and
/// credentials stored before pulls existed are covered; the one-schedule-per-integration index
/// makes concurrent replicas create each pair once, the one-active-backfill index keeps an
/// admin's simultaneous start from making a second backfill. Returns the jobs created.
pub async fn schedule_connected(
    pool: &PgPool,
    reconcile_every: std::time::Duration,
    overlap: std::time::Duration,
    backfill_days: u32,
) -> Result<Vec<Job>, sqlx::Error> {
    let rows: Vec<Job> = sqlx::query_as(&format!(
        "WITH reconciliation AS (
             INSERT INTO sync_jobs (id, company_id, integration_id, kind, since, objects, run_after)
             SELECT gen_random_uuid(), i.company_id, i.id, 'reconciliation',
                    now() - $2::float8 * interval '1 second', '{{}}',
                    now() + $1::float8 * interval '1 second'
             FROM integrations i JOIN integration_secrets s ON s.integration_id = i.id
             WHERE s.rotated_at ? 'api'
               AND i.crm IN ('salesforce', 'hubspot', 'pipedrive', 'dynamics')
               AND NOT EXISTS (SELECT 1 FROM sync_jobs j
                               WHERE j.integration_id = i.id AND j.kind = 'reconciliation')
             ON CONFLICT (integration_id) WHERE kind = 'reconciliation' DO NOTHING
             RETURNING {COLUMNS}),
         backfill AS (
             INSERT INTO sync_jobs (id, company_id, integration_id, kind, since, objects)
             SELECT gen_random_uuid(), r.company_id, r.integration_id, 'backfill',
                    now() - $3::int * interval '1 day', '{{}}'
             FROM reconciliation r WHERE $3::int > 0
               -- One backfill of an integration at a time: an admin's may have come first,
               -- committed (not exists) or still being inserted (the conflict: this insert
               -- waits for it and then skips its own; admin starts hold the integration's
               -- lock, which this does not take).
               AND NOT EXISTS (SELECT 1 FROM sync_jobs b
                               WHERE b.integration_id = r.integration_id AND b.kind = 'backfill'
                                 AND b.state IN ('pending', 'running'))
             ON CONFLICT (integration_id) WHERE kind = 'backfill' AND state IN ('pending', 'running')
             DO NOTHING
             RETURNING {COLUMNS})
         SELECT * FROM reconciliation UNION ALL SELECT * FROM backfill"
    ))
    .bind(reconcile_every.as_secs_f64())
    .bind(overlap.as_secs_f64())
    .bind(i32::try_from(backfill_days).unwrap_or(i32::MAX))
    .fetch_all(pool)
    .await?;
    Ok(rows)
}

/// Sets the objects a running job pulls (those of the integration's active workflows when its
/// run began); fenced by the lease like the checkpoint.
pub async fn set_objects(
    pool: &PgPool,
    id: Uuid,
    owner: &str,
    objects: &[String],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE sync_jobs SET objects = $3, updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(owner)
    .bind(objects)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}
