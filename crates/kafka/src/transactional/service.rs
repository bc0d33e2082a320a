//! The skeleton of a transactional service around the loop.

use std::sync::Arc;
use std::time::Duration;

use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::{self, Readiness};
use crm_sync_runtime::service::{OpsServer, run_with_ops};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use super::{
    BatchLimits, PartitionListener, TransactionalHandler, TransactionalHealth, TransactionalLoop,
    consumer_with_listener, producer_config, run_transactional, transactional_id,
};

/// The skeleton of a transactional consume→produce service: ops endpoints, the loop, SIGTERM
/// with a grace period (the batch in hand is committed before exit).
pub struct TransactionalService<'a, H> {
    pub name: &'a str,
    pub settings: &'a Settings,
    pub topic: &'a str,
    pub handler: H,
    pub limits: BatchLimits,
    /// Service-specific checks; Kafka reachability and the loop's health are added here.
    pub readiness: Readiness,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
    /// Told of the input partitions gained and lost (e.g. to restore state before handling).
    pub partitions: Option<Arc<dyn PartitionListener>>,
}

impl<H: TransactionalHandler> TransactionalService<'_, H> {
    pub async fn run(self) -> anyhow::Result<()> {
        let kafka = &self.settings.kafka;
        let transactional_id = transactional_id(kafka, self.settings.http.port);
        let consumer = consumer_with_listener(
            kafka,
            self.name,
            &kafka.consumer_group,
            self.partitions.clone(),
        )?;
        consumer
            .subscribe(&[self.topic])
            .map_err(|e| anyhow::anyhow!("subscribing to {}: {e}", self.topic))?;
        let health = TransactionalHealth::default();
        let loop_health = health.clone();
        let readiness = self
            .readiness
            .with_check("kafka", crate::admin::readiness_check(kafka))
            .with_check("consumer", move || {
                let health = loop_health.clone();
                async move { health.check() }
            });
        let listener = ops::bind(&self.settings.http.host, self.settings.http.port).await?;
        tracing::info!(
            service = self.name,
            topic = self.topic,
            group = %kafka.consumer_group,
            transactional_id = %transactional_id,
            addr = %listener.local_addr()?,
            "started"
        );
        let ops = OpsServer {
            listener,
            router: ops::router(readiness, self.metrics.clone()),
            limits: (&self.settings.http).into(),
        };
        let grace = Duration::from_secs(self.settings.shutdown.grace_period_secs);
        let run = run_transactional(TransactionalLoop {
            service: self.name,
            topic: self.topic,
            consumer: &consumer,
            producer_config: producer_config(kafka, self.name, &transactional_id),
            handler: &self.handler,
            health,
            limits: self.limits,
            shutdown: self.shutdown.clone(),
        });
        // A batch still in hand when the grace period ends is dropped: its transaction is
        // aborted and its events are handled again by whoever takes the partition.
        let result = run_with_ops(ops, &self.shutdown, grace, run).await;
        tracing::info!(service = self.name, "stopped");
        result
    }
}
