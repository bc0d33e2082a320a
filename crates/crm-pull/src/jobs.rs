//! Running a leased pull job: each object's pass page by page, every page published whole (a
//! Kafka transaction) before the checkpoint moves past it, the checkpoint and lease fenced by
//! the lease owner.
//!
//! A replica killed between publishing a page and saving the checkpoint leaves that page to be
//! published again by whoever resumes the job: with the same event ids (they derive from record
//! id and modification stamp), which the pipeline deduplicates. Nothing is skipped: the
//! checkpoint only ever names pages already published.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::CrmEvent;
use crm_sync_retry::Backoff;
use crm_sync_store::sync_jobs::{self, Job, JobKind, Outcome, Progress};
use crm_sync_store::sync_status::ObjectNotRead;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metric_definitions::OBJECT_ERRORS;
use crate::{Cursor, PullClient, PullError, Scope};
use crm_sync_crm_directory::LookupError;

mod schedule;

/// Where pulled events go: all of a page or none of it. Returns how many were published; the
/// others were refused, as ingest refuses such values in webhooks, and dead-lettered.
pub trait Sink: Send + Sync {
    fn publish(&self, events: Vec<CrmEvent>) -> impl Future<Output = Result<usize, String>> + Send;
}

#[derive(Debug, Clone)]
pub struct JobConfig {
    /// How long a lease lasts without renewal (renewed while each page is read and published).
    pub lease: Duration,
    /// Reconciliation: time between runs.
    pub reconcile_every: Duration,
    /// Reconciliation: each run starts this long before the newest change the previous run saw,
    /// so changes the CRM stamps late (clock skew, long transactions) are not missed.
    pub overlap: Duration,
    /// First wait after a transient failure (doubled per attempt, at most an hour).
    pub retry_backoff: Duration,
    /// Cancelled when the replica shuts down: a running job ends its turn after the page in
    /// hand (published and checkpointed) and hands its lease back.
    pub shutdown: CancellationToken,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            lease: Duration::from_secs(60),
            reconcile_every: Duration::from_secs(15 * 60),
            overlap: Duration::from_secs(5 * 60),
            retry_backoff: Duration::from_secs(30),
            shutdown: CancellationToken::new(),
        }
    }
}

/// One object's pass in the job's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectProgress {
    pub cursor: Option<Cursor>,
    pub done: bool,
    pub newest: Option<DateTime<Utc>>,
    /// Where this object's pass starts, when a schedule's previous run set it (else the job's
    /// `since`): each object moves on with its own changes, so a quiet one holds no other back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// When the pass's first page was asked for: a pass that saw nothing newer has seen every
    /// change made before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// The change-tracking position the pass ended at, kept for the next run of a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// Why the CRM refused this object's pass (a field the API user cannot read, an object it
    /// has no list of): the pass ends there and the job's other objects go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a turn's passes ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Every pass reached its end.
    Done,
    Cancelled,
    /// The replica is shutting down; the checkpoint names every page published.
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("another replica holds the job's lease now")]
    LeaseLost,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Runs a job this replica has claimed (`owner` holds its lease) until it ends, fails, is
/// cancelled or the lease is lost, and records the outcome.
pub async fn run<S: Sink>(
    pool: &PgPool,
    owner: &str,
    config: &JobConfig,
    job: &Job,
    client: &PullClient,
    scopes: &[Scope],
    sink: &S,
) -> Result<Outcome, RunError> {
    let mut checkpoint: Map<String, Value> = match &job.checkpoint {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let lease = Leased {
        pool,
        owner,
        config,
        job,
    };
    let outcome = match run_passes(&lease, client, scopes, sink, &mut checkpoint).await? {
        Ok(Turn::Cancelled) => Outcome::Cancelled,
        Ok(Turn::Stopped) => Outcome::Released,
        Ok(Turn::Done) => {
            let not_read = refused_objects(&checkpoint);
            let refused = (!not_read.is_empty()).then(|| {
                format!(
                    "integration {}: {}",
                    job.integration_id,
                    in_words(&not_read)
                )
            });
            match (job.kind, refused) {
                (JobKind::Backfill, None) => Outcome::Succeeded,
                // The other objects were pulled; the backfill says which could not be.
                (JobKind::Backfill, Some(refused)) => Outcome::Failed(refused),
                (JobKind::Reconciliation, error) => {
                    let (since, carry) = schedule::next_run(job, &checkpoint, config.overlap);
                    Outcome::Reschedule {
                        since,
                        run_after: Utc::now() + chrono_duration(config.reconcile_every),
                        carry,
                        error,
                        objects_not_read: not_read,
                    }
                }
            }
        }
        Err(error) => failed(job, config, &error),
    };
    if !sync_jobs::finish(pool, job.id, owner, &outcome).await? {
        return Err(RunError::LeaseLost);
    }
    Ok(outcome)
}

/// Ends the turn of a claimed job that could not start (no API credentials, refused or
/// incomplete ones): the error is recorded in the job, which is retried (or, for a backfill that
/// can never work, stopped) like a run that failed.
pub async fn fail(
    pool: &PgPool,
    owner: &str,
    config: &JobConfig,
    job: &Job,
    error: &PullError,
) -> Result<Outcome, RunError> {
    let outcome = failed(job, config, error);
    if !sync_jobs::finish(pool, job.id, owner, &outcome).await? {
        return Err(RunError::LeaseLost);
    }
    Ok(outcome)
}

/// A job this replica holds the lease of, with what its turn runs with.
struct Leased<'a> {
    pool: &'a PgPool,
    owner: &'a str,
    config: &'a JobConfig,
    job: &'a Job,
}

/// How the passes ended; the inner error is the CRM's.
async fn run_passes<S: Sink>(
    lease: &Leased<'_>,
    client: &PullClient,
    scopes: &[Scope],
    sink: &S,
    checkpoint: &mut Map<String, Value>,
) -> Result<Result<Turn, PullError>, RunError> {
    let Leased {
        pool,
        owner,
        config,
        job,
    } = *lease;
    for scope in scopes {
        let mut progress: ObjectProgress = checkpoint
            .get(&scope.object)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        while !progress.done {
            if config.shutdown.is_cancelled() {
                return Ok(Ok(Turn::Stopped));
            }
            if cancel_requested(pool, job).await? {
                return Ok(Ok(Turn::Cancelled));
            }
            let cursor = progress.cursor.clone().unwrap_or_else(|| Cursor {
                delta: progress.delta.clone(),
                ..Cursor::start(progress.since.unwrap_or(job.since))
            });
            progress.started.get_or_insert_with(Utc::now);
            let fetched = holding_lease(pool, job, owner, config.lease, async {
                client.changes(scope, &cursor).await
            });
            let page = match fetched.await? {
                Ok(page) => page,
                Err(error) if refuses_object(&error) => {
                    refused(job, scope, &error);
                    progress.error = Some(error.to_string());
                    progress.done = true;
                    save(lease, checkpoint, &scope.object, &progress, 0, 0).await?;
                    continue;
                }
                Err(error) => return Ok(Err(error)),
            };
            let count = page.events.len() as i64;
            let events = of_job(job, page.events);
            let published = holding_lease(pool, job, owner, config.lease, sink.publish(events));
            let published = match published.await? {
                Ok(published) => published as i64,
                // Nothing of the page counts as done: it is pulled and published again.
                Err(error) => return Ok(Err(publish_failed(&error))),
            };
            progress.newest = progress.newest.max(page.newest);
            if page.delta.is_some() {
                progress.delta = page.delta;
            }
            progress.done = page.next.is_none();
            progress.cursor = page.next;
            save(
                lease,
                checkpoint,
                &scope.object,
                &progress,
                count,
                published,
            )
            .await?;
        }
    }
    Ok(Ok(Turn::Done))
}

/// Saves an object's progress after a page (one API call) and renews the lease.
async fn save(
    lease: &Leased<'_>,
    checkpoint: &mut Map<String, Value>,
    object: &str,
    progress: &ObjectProgress,
    scanned: i64,
    published: i64,
) -> Result<(), RunError> {
    let Leased {
        pool,
        owner,
        config,
        job,
    } = *lease;
    checkpoint.insert(
        object.to_owned(),
        serde_json::to_value(progress).unwrap_or(Value::Null),
    );
    let saved = Progress {
        checkpoint: Value::Object(checkpoint.clone()),
        scanned,
        published,
        api_calls: 1,
    };
    if !sync_jobs::checkpoint(pool, job.id, owner, &saved).await?
        || !sync_jobs::renew(pool, job.id, owner, config.lease).await?
    {
        return Err(RunError::LeaseLost);
    }
    Ok(())
}

/// Whether the CRM refused this object rather than the integration: an answer no retry changes
/// (a field or object the API user cannot read, an object with no list, an answer that cannot
/// be read)
/// while the credentials were taken. Refused or missing credentials, and whatever may pass
/// (unavailable, a daily limit), end the turn as before.
fn refuses_object(error: &PullError) -> bool {
    match error {
        PullError::Api(LookupError::Unexpected(_) | LookupError::NotFound(_))
        | PullError::Garbage { .. }
        | PullError::Invalid(_) => true,
        PullError::Api(_) | PullError::ApiLimit(_) => false,
    }
}

/// Says, in the log and the metrics, which object the CRM refused and why.
fn refused(job: &Job, scope: &Scope, error: &PullError) {
    tracing::warn!(
        job = %job.id,
        integration_id = %job.integration_id,
        kind = job.kind.as_str(),
        object = %scope.object,
        error = %error,
        "the CRM refused to pull an object; the job's other objects go on"
    );
    metrics::counter!(
        OBJECT_ERRORS,
        "integration_id" => job.integration_id.to_string(),
        "kind" => job.kind.as_str(),
        "object" => scope.object.clone(),
    )
    .increment(1);
}

/// The objects the CRM refused in this pass and why, in the checkpoint's order.
fn refused_objects(checkpoint: &Map<String, Value>) -> Vec<ObjectNotRead> {
    checkpoint
        .iter()
        .filter_map(|(object, progress)| {
            let progress = serde_json::from_value::<ObjectProgress>(progress.clone()).ok()?;
            Some(ObjectNotRead {
                object: object.clone(),
                error: progress.error?,
            })
        })
        .collect()
}

/// The refused objects as the job's last error says them, e.g. `Quote not pulled: the CRM
/// API …`.
fn in_words(not_read: &[ObjectNotRead]) -> String {
    not_read
        .iter()
        .map(|o| format!("{} not pulled: {}", o.object, o.error))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A page's records, named as pulled by this job.
fn of_job(job: &Job, events: Vec<CrmEvent>) -> Vec<CrmEvent> {
    let delivery = delivery_id(job);
    events
        .into_iter()
        .map(|mut e| {
            e.source_delivery_id.clone_from(&delivery);
            e
        })
        .collect()
}

/// A page that could not be published, as the job's error: the CRM answered, Kafka did not.
fn publish_failed(error: &str) -> PullError {
    PullError::Api(crm_sync_crm_directory::LookupError::Unavailable(format!(
        "publishing pulled records: {error}"
    )))
}

/// Runs `work` (a CRM page that is slow to come, a Kafka transaction that is slow to commit)
/// renewing the lease every third of its length meanwhile: a lease that lapsed mid-page would let
/// another replica pull and publish the same page again. A renewal refused (the lease was taken
/// over) lets the work end, then reports the loss.
async fn holding_lease<F: Future>(
    pool: &PgPool,
    job: &Job,
    owner: &str,
    lease: Duration,
    work: F,
) -> Result<F::Output, RunError> {
    let mut work = std::pin::pin!(work);
    let mut renewals = tokio::time::interval(lease / 3);
    renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    renewals.tick().await;
    let mut lost = false;
    loop {
        tokio::select! {
            output = &mut work => {
                return if lost { Err(RunError::LeaseLost) } else { Ok(output) };
            }
            _ = renewals.tick(), if !lost => {
                lost = !sync_jobs::renew(pool, job.id, owner, lease).await?;
            }
        }
    }
}

/// What pulled events name as their delivery: the job's kind and id, e.g.
/// `reconciliation:<uuid>`, so that the evaluator can tell what a reconciliation made up for.
pub fn delivery_id(job: &Job) -> String {
    format!("{}:{}", job.kind.as_str(), job.id)
}

async fn cancel_requested(pool: &PgPool, job: &Job) -> Result<bool, sqlx::Error> {
    let current = sync_jobs::get(pool, job.id).await?;
    Ok(current.is_none_or(|j| j.cancel_requested))
}

fn failed(job: &Job, config: &JobConfig, error: &PullError) -> Outcome {
    let message = format!("integration {}: {error}", job.integration_id);
    tracing::warn!(job = %job.id, kind = job.kind.as_str(), error = %message, "pull job failed");
    // A backfill that can never work stops; a schedule keeps its turn, and says why it fails.
    if !error.is_transient() && job.kind == JobKind::Backfill {
        return Outcome::Failed(message);
    }
    let failures_before = u32::try_from(job.attempts.max(1) - 1).unwrap_or(0);
    let wait =
        Backoff::new(config.retry_backoff, Duration::from_secs(3600)).delay_after(failures_before);
    let wait = match error {
        // The CRM said when it answers again: any earlier try meets the same limit.
        PullError::Api(LookupError::RateLimited { wait, .. }) => *wait,
        // The configured share of a daily API limit does not free up within a backoff: each
        // early retry would spend one more of the org's requests to learn so again.
        PullError::ApiLimit(_) => wait.max(config.reconcile_every),
        _ if error.is_transient() => wait,
        _ => wait.max(config.reconcile_every),
    };
    Outcome::Retry {
        error: message,
        retry_at: Utc::now() + chrono_duration(wait),
    }
}

pub(crate) fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::days(365))
}
