//! The skeleton of a transactional service around the loop (see [`crate::service`]).

use std::sync::Arc;

use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::Readiness;
use crm_sync_runtime::service::Service;
use metrics_exporter_prometheus::PrometheusHandle;

use super::{
    BatchLimits, PartitionListener, TransactionalHandler, TransactionalLoop,
    consumer_with_listener, producer_config, run_transactional, transactional_id,
};
use crate::health::LoopHealth;
use crate::service::Skeleton;

const TRANSACTIONS_STARTING: &str = "Kafka transactions not initialized yet";

/// The skeleton of a transactional consume→produce service: the loop as the main work of the
/// [`Service`] (the batch in hand is committed before exit).
pub struct TransactionalService<'a, H> {
    pub name: &'a str,
    pub settings: &'a Settings,
    pub topic: &'a str,
    pub handler: H,
    pub limits: BatchLimits,
    /// Transactions in flight at once (see [`TransactionalLoop::producers`]).
    pub producers: usize,
    /// Service-specific checks; Kafka reachability and the loop's health are added here.
    pub readiness: Readiness,
    pub metrics: PrometheusHandle,
    /// The running service (see [`crate::service::start`]), with its background tasks.
    pub service: Service,
    /// Told of the input partitions gained and lost (e.g. to restore state before handling).
    pub partitions: Option<Arc<dyn PartitionListener>>,
}

impl<H: TransactionalHandler> TransactionalService<'_, H> {
    pub async fn run(self) -> anyhow::Result<()> {
        let skeleton = Skeleton {
            name: self.name,
            settings: self.settings,
            topic: self.topic,
        };
        let kafka = &self.settings.kafka;
        let transactional_id = transactional_id(kafka, self.settings.http.port);
        tracing::info!(%transactional_id, "committing in Kafka transactions");
        let consumer = consumer_with_listener(
            kafka,
            self.name,
            &kafka.consumer_group,
            self.partitions.clone(),
        )?;
        let health = LoopHealth::starting(TRANSACTIONS_STARTING);
        let checked = health.clone();
        let ops = skeleton
            .start(&consumer, self.readiness, self.metrics, move || {
                checked.check()
            })
            .await?;
        let run = run_transactional(TransactionalLoop {
            service: self.name,
            topic: self.topic,
            consumer: &consumer,
            producer_config: producer_config(kafka, self.name, &transactional_id),
            producers: self.producers,
            handler: &self.handler,
            health,
            limits: self.limits,
            shutdown: self.service.shutdown(),
        });
        // A batch still in hand when the grace period ends is dropped: its transaction is
        // aborted and its events are handled again by whoever takes the partition.
        self.service.run(ops, run).await
    }
}
