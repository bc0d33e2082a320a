//! The skeleton of a consuming service: ops endpoints, the consume loop, SIGTERM with a grace
//! period. Evaluator and provisioner differ only in their handler and readiness checks.

use std::time::Duration;

use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::{self, Readiness};
use crm_sync_runtime::service::{OpsServer, run_with_ops};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use crate::consume::{ConsumeLoop, ConsumerHealth, MessageHandler, run_consumer};
use crate::produce::Publisher;

pub struct ConsumerService<'a, H> {
    pub name: &'a str,
    pub settings: &'a Settings,
    pub topic: &'a str,
    pub handler: H,
    /// Used for dead letters (and usually by the handler for its own output).
    pub publisher: Publisher,
    /// Service-specific checks; Kafka reachability and consumer health are added here.
    pub readiness: Readiness,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
}

impl<H: MessageHandler> ConsumerService<'_, H> {
    pub async fn run(self) -> anyhow::Result<()> {
        let consumer = std::sync::Arc::new(crate::clients::consumer(
            &self.settings.kafka,
            self.name,
            &self.settings.kafka.consumer_group,
        )?);
        consumer
            .subscribe(&[self.topic])
            .map_err(|e| anyhow::anyhow!("subscribing to {}: {e}", self.topic))?;
        let health = ConsumerHealth::default();
        let consumer_health = health.clone();
        let readiness = self
            .readiness
            .with_check("kafka", crate::admin::readiness_check(&self.settings.kafka))
            .with_check("consumer", move || {
                let health = consumer_health.clone();
                async move { health.check() }
            });

        let listener = ops::bind(&self.settings.http.host, self.settings.http.port).await?;
        tracing::info!(
            service = self.name,
            topic = self.topic,
            group = %self.settings.kafka.consumer_group,
            addr = %listener.local_addr()?,
            "started"
        );
        let ops = OpsServer {
            listener,
            router: ops::router(readiness, self.metrics.clone()),
            limits: (&self.settings.http).into(),
        };
        let grace = Duration::from_secs(self.settings.shutdown.grace_period_secs);
        let consume = run_consumer(ConsumeLoop {
            service: self.name.to_owned(),
            consumer: consumer.clone(),
            handler: std::sync::Arc::new(self.handler),
            dead_letters: self.publisher.clone(),
            health,
            shutdown: self.shutdown.clone(),
            buffer_per_partition: 64,
        });
        let result = run_with_ops(ops, &self.shutdown, grace, consume).await;
        use rdkafka::producer::Producer as _;
        if let Err(error) = self.publisher.producer().flush(Duration::from_secs(5)) {
            tracing::warn!(%error, "flushing the producer at shutdown");
        }
        tracing::info!(service = self.name, "stopped");
        result
    }
}
