//! Pull jobs inside ingest replicas: a supervised task that starts schedules for integrations
//! newly given API credentials, claims runnable jobs from `sync_jobs` (leased, so each runs on
//! one replica at a time) and runs up to `pull.max_concurrent_jobs` of them at once.
//!
//! Each run loads the integration's API credentials and pulls the objects of its active
//! workflows with the fields they read. A job that cannot start (no API credentials, refused or
//! incomplete ones) says so in its `last_error` and is retried later. A reconciliation run's
//! figures go into the integration's sync status.
//!
//! At shutdown (SIGTERM) the replica takes no more jobs; each running one ends its turn after the
//! page in hand, checkpointed, and hands its lease back, so another replica resumes it at once
//! rather than once the lease expires. A job that cannot stop within the shutdown grace period is
//! dropped: its lease expires after `pull.lease_secs`, as when a replica is killed.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::Utc;
use crm_sync_crm_directory::Config;
use crm_sync_ingest::Background;
use crm_sync_kafka::AtomicPublisher;
use crm_sync_runtime::pull_settings::PullSettings;
use crm_sync_store::credentials::{self, SecretKey};
use crm_sync_store::sync_jobs::{self, Job, JobKind, Outcome};
use crm_sync_store::sync_status::{self, ReconciliationRun};
use crm_sync_store::workflows::{self, StoredWorkflow};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::credentials::client_for;
use crate::jobs::{self, JobConfig, RunError};
use crate::lag::EvaluatorLag;
use crate::metric_definitions::{API_CALLS, ERRORS, JOB_DURATION, JOBS, SCANNED};
use crate::pace::Paced;
use crate::sink::KafkaSink;
use crate::{PullClient, PullConfig, PullError, Scope};

/// Spawns the pull jobs' task on ingest's supervisor, unless `pull.enabled` is false or no
/// `secrets.encryption_key` is configured (API credentials could not be read).
pub fn start(background: Background<'_>) -> anyhow::Result<()> {
    crate::metric_definitions::describe();
    crm_sync_crm_directory::metric_definitions::describe();
    let settings = background.settings;
    if !settings.pull.enabled {
        tracing::info!("pull.enabled is false: this replica runs no pull jobs");
        return Ok(());
    }
    let Some(key) = SecretKey::from_settings(&settings.secrets)? else {
        tracing::warn!(
            "no secrets.encryption_key configured: API credentials cannot be read, so this replica runs no pull jobs"
        );
        return Ok(());
    };
    let pull = &settings.pull;
    let directory = &settings.directory;
    let defaults = PullConfig::default();
    let shutdown = background.shutdown.clone();
    let worker = Arc::new(Worker {
        pool: background.pool,
        key,
        owner: lease_owner(),
        jobs: JobConfig {
            lease: pull.lease(),
            reconcile_every: Duration::from_secs(pull.reconcile_interval_secs),
            overlap: Duration::from_secs(pull.overlap_secs),
            retry_backoff: Duration::from_secs(pull.retry_backoff_secs),
            shutdown: shutdown.clone(),
        },
        pull: PullConfig {
            api: Config {
                timeout: Duration::from_millis(pull.request_timeout_ms),
                egress: credentials::egress_from_settings(directory),
                ..defaults.api
            },
            page_size: pull.page_size,
            salesforce_max_api_share: pull.salesforce_max_api_share,
        },
        settings: pull.clone(),
        lag: evaluator_lag(settings),
        publisher: background.publisher,
        topic: settings.topics.events.clone(),
        limits: crm_sync_ingest::check::Limits::from_settings(&settings.ingest),
        grace: Duration::from_secs(settings.shutdown.grace_period_secs),
    });
    tracing::info!(owner = %worker.owner, max_concurrent_jobs = pull.max_concurrent_jobs, "running pull jobs");
    let health = crm_sync_kafka::LoopHealth::ready();
    let hydrations = hydrations(settings, &worker, health.clone(), shutdown.clone())?;
    background
        .supervisor
        .spawn("hydration requests", hydrations);
    *background.readiness =
        std::mem::take(background.readiness).with_check("hydration_consumer", move || {
            let health = health.clone();
            async move { health.check() }
        });
    // Awaited at shutdown: the jobs hand their leases back before the process exits.
    background
        .supervisor
        .spawn("pull jobs", async move { worker.run(shutdown).await });
    Ok(())
}

/// The consumer of the evaluator's hydration requests (`topics.hydrations`).
fn hydrations(
    settings: &crm_sync_runtime::Settings,
    worker: &Worker,
    health: crm_sync_kafka::LoopHealth,
    shutdown: CancellationToken,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use rdkafka::consumer::Consumer as _;
    let topic = &settings.topics.hydrations;
    let consumer = crm_sync_kafka::clients::consumer(
        &settings.kafka,
        "ingest-hydrations",
        &settings.kafka.consumer_group,
    )?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic} (topics.hydrations)"))?;
    let handler = crate::hydrate::Hydrator::new(
        worker.pool.clone(),
        worker.key.clone(),
        worker.pull.clone(),
        worker.sink(),
    );
    let dead_letters = crm_sync_kafka::Publisher::new(crm_sync_kafka::clients::producer(
        &settings.kafka,
        "ingest-hydrations",
    )?);
    let consume = crm_sync_kafka::run_consumer(crm_sync_kafka::ConsumeLoop {
        service: "ingest".to_owned(),
        consumer: Arc::new(consumer),
        handler: Arc::new(handler),
        dead_letters,
        health,
        shutdown,
        buffer_per_partition: 64,
    });
    Ok(async move {
        if let Err(e) = consume.await {
            tracing::error!(
                error = format!("{e:#}"),
                "consuming hydration requests failed"
            );
        }
    })
}

/// The evaluator's lag on the events topic, watched by the jobs' pace; none (with a warning)
/// when the client cannot be made.
fn evaluator_lag(settings: &crm_sync_runtime::Settings) -> Option<Arc<EvaluatorLag>> {
    if settings.pull.max_evaluator_lag == 0 {
        return None;
    }
    match EvaluatorLag::new(
        &settings.kafka,
        &settings.pull.evaluator_group,
        &settings.topics.events,
    ) {
        Ok(lag) => Some(Arc::new(lag)),
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "the evaluator's lag cannot be watched: pull jobs keep to their fixed pace only"
            );
            None
        }
    }
}

/// Names this process in job leases: the pod's host name where there is one, and a random part
/// so that a restarted process never mistakes its predecessor's lease for its own.
fn lease_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "ingest".to_owned());
    format!("{host}-{}", uuid::Uuid::new_v4().simple())
}

struct Worker {
    pool: PgPool,
    key: SecretKey,
    owner: String,
    jobs: JobConfig,
    pull: PullConfig,
    settings: PullSettings,
    lag: Option<Arc<EvaluatorLag>>,
    publisher: AtomicPublisher,
    topic: String,
    /// ingest's limits on an event, which pulled records are held to as well.
    limits: crm_sync_ingest::check::Limits,
    /// How long running jobs get to hand their leases back at shutdown.
    grace: Duration,
}

/// What a job needs to run, once its credentials and workflows are read.
struct Prepared {
    job: Job,
    client: PullClient,
    scopes: Vec<Scope>,
}

impl Worker {
    /// Where the worker's pulled records go.
    fn sink(&self) -> KafkaSink {
        KafkaSink {
            publisher: self.publisher.clone(),
            topic: self.topic.as_str().into(),
            limits: self.limits,
            pool: self.pool.clone(),
        }
    }

    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut running: JoinSet<()> = JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => self.schedule().await,
                // A job ended: its place goes to the next runnable one at once.
                Some(ended) = running.join_next() => {
                    if let Err(e) = ended {
                        tracing::error!(error = %e, "a pull job's task failed");
                    }
                }
            }
            // Until Kafka transactions are initialized (at start, or while a fenced producer is
            // replaced) a claimed job's first page could not be published: the job would record
            // that as its error and wait out a retry backoff, and whoever ran it next would pull
            // that page again.
            while running.len() < self.settings.max_concurrent_jobs
                && !shutdown.is_cancelled()
                && self.publisher.ready()
            {
                match sync_jobs::claim(&self.pool, &self.owner, self.jobs.lease).await {
                    Ok(Some(job)) => {
                        let worker = self.clone();
                        running.spawn(async move { worker.run_job(job).await });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming a pull job failed; trying again later");
                        break;
                    }
                }
            }
        }
        // The jobs saw the same token: each ends its turn after the page in hand and releases
        // its lease. One that does not within the grace period is dropped; its lease expires
        // and another replica resumes it from its last checkpoint.
        let drained = tokio::time::timeout(self.grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                jobs = running.len(),
                "pull jobs did not stop within the grace period; their leases expire"
            );
            running.abort_all();
        }
    }

    /// Schedules for integrations newly given API credentials.
    async fn schedule(&self) {
        let created = sync_jobs::schedule_connected(
            &self.pool,
            self.jobs.reconcile_every,
            self.jobs.overlap,
            self.settings.backfill_on_connect_days,
        )
        .await;
        match created {
            Ok(jobs) => {
                for job in jobs {
                    tracing::info!(integration_id = %job.integration_id, job = %job.id, kind = job.kind.as_str(), since = %job.since, "integration has API credentials: pull job created");
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduling pull jobs failed; trying again later"),
        }
    }

    async fn run_job(&self, job: Job) {
        let started = Instant::now();
        let kind = job.kind.as_str();
        let (crm, result) = self.run_claimed(&job).await;
        let outcome = match &result {
            Ok(Outcome::Succeeded) => "succeeded",
            Ok(Outcome::Failed(_)) => "failed",
            Ok(Outcome::Retry { .. }) => "retry",
            Ok(Outcome::Reschedule { .. }) => "rescheduled",
            Ok(Outcome::Cancelled) => "cancelled",
            Ok(Outcome::Released) => "released",
            Err(RunError::LeaseLost) => "lease_lost",
            Err(RunError::Database(_)) => "database_error",
        };
        let labels = [("kind", kind), ("crm", crm), ("outcome", outcome)];
        metrics::counter!(JOBS, &labels).increment(1);
        metrics::histogram!(JOB_DURATION, &labels).record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcome) => self.after_run(&job, &outcome).await,
            Err(RunError::LeaseLost) => {
                tracing::warn!(job = %job.id, kind, "another replica took over the pull job's lease; stopped working on it")
            }
            Err(RunError::Database(e)) => {
                tracing::warn!(job = %job.id, kind, error = %e, "a pull job stopped on a database error; its lease expires and it is resumed")
            }
        }
    }

    /// Runs a claimed job's turn; also returns the integration's CRM (for metrics).
    async fn run_claimed(&self, job: &Job) -> (&'static str, Result<Outcome, RunError>) {
        let prepared = match self.prepare(job).await {
            Ok(Ok(prepared)) => prepared,
            Ok(Err(error)) => {
                let result = jobs::fail(&self.pool, &self.owner, &self.jobs, job, &error).await;
                return ("unknown", result);
            }
            Err(error) => return ("unknown", Err(RunError::Database(error))),
        };
        let crm = prepared.client.crm().as_str();
        let labels = [
            ("integration_id", job.integration_id.to_string()),
            ("kind", job.kind.as_str().to_owned()),
        ];
        let sink = Paced::new(
            self.sink(),
            self.settings.records_per_second,
            // The lease is renewed after each page: waiting longer would lose it.
            self.jobs.lease / 3,
            &labels,
        )
        .with_lag(self.lag.clone(), self.settings.max_evaluator_lag)
        .stopped_by(self.jobs.shutdown.clone());
        let result = jobs::run(
            &self.pool,
            &self.owner,
            &self.jobs,
            &prepared.job,
            &prepared.client,
            &prepared.scopes,
            &sink,
        )
        .await;
        (crm, result)
    }

    /// Ok(Err) when the job cannot run as things are (the error goes into the job).
    async fn prepare(&self, job: &Job) -> Result<Result<Prepared, PullError>, sqlx::Error> {
        let client = match client_for(&self.pool, &self.key, &self.pull, job.integration_id).await?
        {
            Ok(client) => client,
            Err(error) => return Ok(Err(error)),
        };
        let active = workflows::load_active_of(&self.pool, job.integration_id).await?;
        let scopes = job_scopes(job.kind, &active, &job.objects);
        let mut job = job.clone();
        let objects: Vec<String> = scopes.iter().map(|s| s.object.clone()).collect();
        if objects != job.objects {
            sync_jobs::set_objects(&self.pool, job.id, &self.owner, &objects).await?;
            job.objects = objects;
        }
        Ok(Ok(Prepared {
            job,
            client,
            scopes,
        }))
    }

    /// Metrics of the turn, and a reconciliation's figures in the integration's sync status.
    async fn after_run(&self, before: &Job, outcome: &Outcome) {
        let after = match sync_jobs::get(&self.pool, before.id).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job = %before.id, error = %e, "reading the pull job's figures failed");
                return;
            }
        };
        let run = ReconciliationRun {
            job_id: before.id,
            scanned: after.records_scanned - before.records_scanned,
            published: after.records_published - before.records_published,
            api_calls: after.api_calls - before.api_calls,
            // Only a run that failed as a whole has an error: objects the CRM refused while the
            // others were reconciled are said one by one, so that the status does not blame
            // the whole run for them.
            error: match outcome {
                Outcome::Failed(error) | Outcome::Retry { error, .. } => Some(error.clone()),
                _ => None,
            },
            objects_not_read: match outcome {
                Outcome::Reschedule {
                    objects_not_read, ..
                } => objects_not_read.clone(),
                _ => Vec::new(),
            },
        };
        let labels = [
            ("integration_id", before.integration_id.to_string()),
            ("kind", before.kind.as_str().to_owned()),
        ];
        metrics::counter!(SCANNED, &labels).increment(run.scanned.max(0) as u64);
        metrics::counter!(API_CALLS, &labels).increment(run.api_calls.max(0) as u64);
        // A turn with refused objects still counts as one that ended in an error, as it always
        // has: dashboards alert on this counter.
        if run.error.is_some() || !run.objects_not_read.is_empty() {
            metrics::counter!(ERRORS, &labels).increment(1);
        }
        // A run handed back at shutdown is not over: the replica that resumes it records it.
        if before.kind == JobKind::Reconciliation
            && *outcome != Outcome::Released
            && let Err(e) = sync_status::record_reconciliation(
                &self.pool,
                before.integration_id,
                Utc::now(),
                &run,
            )
            .await
        {
            tracing::warn!(integration_id = %before.integration_id, error = %e, "recording the reconciliation in the sync status failed");
        }
    }
}

/// What a job pulls: a backfill the objects it names, a schedule the workflows' objects as they
/// are now. Only a schedule starts change tracking: its next run reads the deletes from it.
pub(crate) fn job_scopes(
    kind: JobKind,
    workflows: &[StoredWorkflow],
    objects: &[String],
) -> Vec<Scope> {
    let only = match kind {
        JobKind::Backfill => objects,
        JobKind::Reconciliation => &[],
    };
    let mut scopes = scopes(workflows, only);
    for scope in &mut scopes {
        scope.establish_tracking = kind == JobKind::Reconciliation;
    }
    scopes
}

/// The objects of the workflows (only those named in `only`, when it names any) and, per
/// object, every field a workflow reads. Objects are matched ignoring ASCII case, as workflows
/// match them; field names that no CRM API could be asked for are left out with a warning.
pub(crate) fn scopes(workflows: &[StoredWorkflow], only: &[String]) -> Vec<Scope> {
    let mut by_object: BTreeMap<String, Scope> = BTreeMap::new();
    for object in only {
        by_object
            .entry(object.to_ascii_lowercase())
            .or_insert_with(|| Scope::new(object.clone()));
    }
    for workflow in workflows {
        let spec = &workflow.spec;
        let key = spec.object_type.to_ascii_lowercase();
        if !only.is_empty() && !by_object.contains_key(&key) {
            continue;
        }
        let scope = by_object
            .entry(key)
            .or_insert_with(|| Scope::new(spec.object_type.clone()));
        for field in spec.needed_fields() {
            if !plain_name(field) {
                tracing::warn!(workflow_id = %workflow.id, field, "a workflow field that cannot be pulled by name; pulls leave it out");
            } else if !scope.fields.iter().any(|f| f == field) {
                scope.fields.push(field.to_owned());
            }
        }
    }
    by_object.into_values().collect()
}

pub(crate) fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests;
