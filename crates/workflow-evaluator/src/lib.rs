//! workflow-evaluator: reads `CrmEvent`s, keeps each record's state (a compacted changelog
//! topic, cached on local disk), judges the whole record against its integration's active
//! workflows and writes a `WorkflowOutcome` whenever a workflow's decision on the record changes,
//! exactly once: consuming, the outcomes and the state changes commit in one Kafka transaction.

pub mod counts;
pub mod evaluate;
pub mod fixed;
pub mod judge;
pub mod leaves;
pub mod legacy;
pub mod metric_definitions;
pub mod outputs;
pub mod purge;
pub mod record;
pub mod restore;
mod rotation;
pub mod snapshot;
mod staging;
pub mod state_limit;
pub mod store;
pub mod trail;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crm_sync_kafka::transactional::{BatchLimits, PartitionListener, TransactionalService};
use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::Readiness;
use crm_sync_runtime::supervise::Supervisor;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use evaluate::Evaluator;
pub use snapshot::WorkflowSnapshot;

use crate::store::RecordStore;

pub const SERVICE: crm_sync_runtime::ServiceDefaults = crm_sync_runtime::ServiceDefaults {
    name: "workflow-evaluator",
    http_port: 8082,
    consumer_group: "crm-sync-workflow-evaluator",
};

/// The local store's folder: configured, else one per replica (its `transactional.id` is
/// unique per replica) under the system's temporary folder.
fn state_dir(settings: &Settings) -> PathBuf {
    match &settings.evaluator.state_dir {
        Some(dir) => PathBuf::from(dir),
        None => std::env::temp_dir().join("crm-sync-evaluator").join(
            crm_sync_kafka::transactional::transactional_id(&settings.kafka, settings.http.port),
        ),
    }
}

fn open_store(
    settings: &Settings,
) -> anyhow::Result<(Arc<RecordStore>, tokio::sync::mpsc::UnboundedReceiver<i32>)> {
    let dir = state_dir(settings);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the record state folder {}", dir.display()))?;
    let mut config = crm_sync_kafka::clients::base_config(
        &settings.kafka,
        crm_sync_kafka::clients::Role::Consumer,
    );
    // A restore reads a whole changelog as fast as it can: unbounded, librdkafka would queue up
    // to 64 MiB per partition ahead of it.
    crm_sync_kafka::clients::BoundedMemory::set_bounded_prefetch(&mut config);
    config.set("client.id", format!("{}-restore", SERVICE.name));
    let source = restore::Source::new(config, settings.topics.records.clone());
    RecordStore::open(
        &dir,
        settings.evaluator.state_memory_mib * 1024 * 1024,
        source,
        &settings.topics.events,
    )
    .with_context(|| format!("opening the record state in {}", dir.display()))
}

/// Ready once PostgreSQL answers, the active workflows are loaded and the assigned partitions'
/// record state is restored.
fn readiness(
    pool: &PgPool,
    snapshot: &Arc<WorkflowSnapshot>,
    store: &Arc<RecordStore>,
) -> Readiness {
    let snapshot = snapshot.clone();
    let store = store.clone();
    Readiness::new()
        .with_check("postgres", crm_sync_store::readiness_check(pool))
        .with_check("workflows", move || {
            let loaded = snapshot.is_loaded();
            async move {
                if loaded {
                    Ok(())
                } else {
                    Err("active workflows not loaded yet".to_owned())
                }
            }
        })
        .with_check("record_state", move || {
            let restored = store.readiness();
            async move { restored }
        })
}

/// The record trail, its writer and its expiry started.
fn start_trail(
    settings: &Settings,
    pool: &PgPool,
    background: &mut Supervisor,
    shutdown: &CancellationToken,
) -> trail::Trail {
    let (trail, queue) = trail::Trail::new(settings.trail.queue_capacity, settings.trail.enabled);
    background.spawn(
        "record trail writer",
        trail::write(queue, pool.clone(), shutdown.clone()),
    );
    background.spawn(
        "record trail expiry",
        trail::expire(
            pool.clone(),
            settings.trail.retention_days,
            Duration::from_secs(settings.trail.expiry_interval_secs),
            shutdown.clone(),
        ),
    );
    trail
}

/// The rounds forgetting deleted integrations' record state started.
fn start_purge(
    settings: &Settings,
    store: &Arc<RecordStore>,
    pool: &PgPool,
    background: &mut Supervisor,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let purge = purge::Purge {
        store: store.clone(),
        pool: pool.clone(),
        producer: crm_sync_kafka::clients::producer(
            &settings.kafka,
            &format!("{}-purge", SERVICE.name),
        )?,
        changelog: settings.topics.records.clone(),
        interval: Duration::from_secs(settings.evaluator.purge_interval_secs),
    };
    background.spawn(
        "record state of deleted integrations",
        purge.run(shutdown.clone()),
    );
    Ok(())
}

/// The largest record state kept: a changelog message must fit both the producers'
/// `message.max.bytes` and the changelog topic's `max.message.bytes`.
async fn state_limit(settings: &Settings) -> anyhow::Result<state_limit::StateLimit> {
    let changelog_max =
        crm_sync_kafka::admin::check_changelog(&settings.kafka, &settings.topics.records).await?;
    let producer_max = crm_sync_kafka::clients::max_message_bytes(&settings.kafka);
    tracing::info!(
        producer_max,
        changelog_max,
        "a record's state is kept while it fits in one message of both"
    );
    Ok(state_limit::StateLimit::new(
        producer_max.min(changelog_max.unwrap_or(usize::MAX)),
    ))
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    crm_sync_kafka::clients::validate(&settings.kafka)?;
    let metrics = crm_sync_runtime::ops::install_metrics()?;
    metric_definitions::describe();
    crm_sync_kafka::metric_definitions::describe();
    crm_sync_store::metric_definitions::describe();
    let mut service = crm_sync_kafka::service::start(SERVICE.name, &settings);
    let shutdown = service.shutdown();
    let pool = crm_sync_store::pool_from_settings(&settings.database)?;
    crm_sync_store::open_min_connections(&pool);
    crm_sync_kafka::admin::check_co_partitioned(
        &settings.kafka,
        &settings.topics.events,
        &settings.topics.records,
    )
    .await?;
    let state_limit = state_limit(&settings).await?;
    let (store, wakes) = open_store(&settings)?;
    let snapshot = Arc::new(WorkflowSnapshot::default());
    let background = service.background();
    background.spawn(
        "workflow listener",
        snapshot::keep_fresh(snapshot.clone(), pool.clone(), shutdown.clone()),
    );
    background.spawn_until_shutdown(
        "record state restorer",
        store::run_restorer(store.clone(), wakes),
    );
    start_purge(&settings, &store, &pool, background, &shutdown)?;
    let readiness = readiness(&pool, &snapshot, &store);
    let counts = counts::Counts::default();
    background.spawn(
        "missed webhooks fixed",
        fixed::flush(counts.fixed.clone(), pool.clone(), shutdown.clone()),
    );
    let trail = start_trail(&settings, &pool, background, &shutdown);
    let handler = Evaluator {
        snapshot,
        pool,
        store: store.clone(),
        topics: outputs::Topics {
            matches: settings.topics.matches.as_str().into(),
            records: settings.topics.records.as_str().into(),
            hydrations: settings.topics.hydrations.as_str().into(),
        },
        hydration_interval: Duration::from_secs(settings.evaluator.hydration_interval_secs),
        counts,
        legacy: legacy::LegacyIndex::default(),
        trail,
        state_limit,
    };
    let topic = settings.topics.events.clone();
    // Consume → produce in Kafka transactions: outcomes, state changes and the events' offsets
    // commit together.
    let consume = TransactionalService {
        name: SERVICE.name,
        settings: &settings,
        topic: &topic,
        handler,
        limits: BatchLimits {
            max_messages: settings.evaluator.batch_max_events,
            ..BatchLimits::default()
        },
        producers: settings.evaluator.transactional_producers,
        readiness,
        metrics,
        service,
        partitions: Some(store as Arc<dyn PartitionListener>),
    }
    .run();
    consume.await
}
