//! The skeleton of a consuming service, at-least-once ([`ConsumerService`]) or transactional
//! ([`crate::transactional::TransactionalService`]): the consumer subscribed, `/readyz` with
//! Kafka's reachability and the loop's health, the loop run as the main work of the service's
//! [`Service`] (ops endpoints, background tasks, SIGTERM with a grace period). Services differ
//! only in their handler, checks and background tasks.

use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;

use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::{self, Readiness};
use crm_sync_runtime::service::{OpsServer, Service};
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::consumer::Consumer;

use crate::consume::{ConsumeLoop, MessageHandler, run_consumer};
use crate::consumer::ServiceConsumer;
use crate::health::LoopHealth;
use crate::produce::Publisher;

/// The [`Service`] of a service that talks to Kafka (every crm-sync service): SIGTERM watched,
/// and Kafka's credential files too (a change restarts the service, which then reads them).
pub fn start(name: &'static str, settings: &Settings) -> Service {
    let mut service = Service::new(name, settings);
    let shutdown = service.shutdown();
    crate::rotation::watch(&settings.kafka, service.background(), shutdown);
    service
}

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
    /// The running service (see [`start`]), with the background tasks spawned so far.
    pub service: Service,
}

impl<H: MessageHandler> ConsumerService<'_, H> {
    pub async fn run(self) -> anyhow::Result<()> {
        let skeleton = Skeleton {
            name: self.name,
            settings: self.settings,
            topic: self.topic,
        };
        let consumer = Arc::new(crate::clients::consumer(
            &self.settings.kafka,
            self.name,
            &self.settings.kafka.consumer_group,
        )?);
        let health = LoopHealth::ready();
        let checked = health.clone();
        let ops = skeleton
            .start(&consumer, self.readiness, self.metrics, move || {
                checked.check()
            })
            .await?;
        let consume = run_consumer(ConsumeLoop {
            service: self.name.to_owned(),
            consumer: consumer.clone(),
            handler: Arc::new(self.handler),
            dead_letters: self.publisher.clone(),
            health,
            shutdown: self.service.shutdown(),
            buffer_per_partition: crate::consume::PARTITION_BUFFER,
        });
        let result = self.service.run(ops, consume).await;
        use rdkafka::producer::Producer as _;
        if let Err(error) = self.publisher.producer().flush(Duration::from_secs(5)) {
            tracing::warn!(%error, "flushing the producer at shutdown");
        }
        result
    }
}

/// What both consuming services do around their loop.
pub(crate) struct Skeleton<'a> {
    pub(crate) name: &'a str,
    pub(crate) settings: &'a Settings,
    pub(crate) topic: &'a str,
}

impl Skeleton<'_> {
    /// Subscribes `consumer` to the topic and binds the ops endpoints, whose `/readyz` adds
    /// Kafka's reachability and the loop's `health` to the service's own `readiness`.
    pub(crate) async fn start(
        &self,
        consumer: &ServiceConsumer,
        readiness: Readiness,
        metrics: PrometheusHandle,
        health: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) -> anyhow::Result<OpsServer> {
        let kafka = &self.settings.kafka;
        consumer
            .subscribe(&[self.topic])
            .with_context(|| format!("subscribing to {}", self.topic))?;
        let health = Arc::new(health);
        let readiness = readiness
            .with_check("kafka", crate::admin::readiness_check(kafka))
            .with_check("consumer", move || {
                let health = health.clone();
                async move { health() }
            });
        let http = &self.settings.http;
        let listener = ops::bind(&http.host, http.port).await?;
        tracing::info!(
            service = self.name,
            topic = self.topic,
            group = %kafka.consumer_group,
            addr = %listener.local_addr()?,
            "started"
        );
        Ok(OpsServer::new(listener, readiness, metrics, http))
    }
}
