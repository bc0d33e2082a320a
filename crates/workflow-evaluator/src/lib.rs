//! workflow-evaluator: reads `CrmEvent`s and writes one `WorkflowOutcome` per active workflow of
//! the event's integration that the event matches (or that must retract its activity), exactly
//! once: consuming and producing happen in Kafka transactions.

pub mod evaluate;
pub mod snapshot;

use std::sync::Arc;

use crm_sync_kafka::transactional::{BatchLimits, TransactionalService};
use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::Readiness;

pub use evaluate::Evaluator;
pub use snapshot::WorkflowSnapshot;

pub const SERVICE: crm_sync_runtime::ServiceDefaults = crm_sync_runtime::ServiceDefaults {
    name: "workflow-evaluator",
    http_port: 8082,
    consumer_group: "crm-sync-workflow-evaluator",
};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    crm_sync_kafka::clients::validate(&settings.kafka)?;
    let metrics = crm_sync_runtime::ops::install_metrics()?;
    let shutdown = crm_sync_runtime::shutdown::on_termination_signal();
    let pool = crm_sync_store::pool_from_settings(&settings.database)?;
    let snapshot = Arc::new(WorkflowSnapshot::default());
    tokio::spawn(snapshot::keep_fresh(
        snapshot.clone(),
        pool.clone(),
        shutdown.clone(),
    ));
    let readiness = {
        let snapshot = snapshot.clone();
        Readiness::new()
            .with_check("postgres", crm_sync_store::readiness_check(&pool))
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
    };
    let handler = Evaluator {
        snapshot,
        pool,
        matches_topic: settings.topics.matches.clone(),
    };
    let topic = settings.topics.events.clone();
    // Consume → produce in Kafka transactions: outcomes and the events' offsets commit together.
    TransactionalService {
        name: SERVICE.name,
        settings: &settings,
        topic: &topic,
        handler,
        limits: BatchLimits::default(),
        readiness,
        metrics,
        shutdown,
    }
    .run()
    .await
}
