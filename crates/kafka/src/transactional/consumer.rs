//! The consumer of the transactional loop: its offsets go only through transactions, and its
//! context counts revocations and tells a [`PartitionListener`] of partitions gained and lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;

use crate::clients::BoundedMemory;

/// Told of the input partitions this replica gains and loses, from inside the rebalance (so
/// before any message of a gained partition is handed out).
pub trait PartitionListener: Send + Sync {
    fn assigned(&self, partitions: &[(String, i32)]);
    fn revoked(&self, partitions: &[(String, i32)]);
}

/// Counts rebalances that take partitions away, so the loop can tell that its open transaction
/// covers partitions it may no longer own.
#[derive(Default)]
pub struct TransactionalContext {
    revocations: AtomicU64,
    listener: Option<Arc<dyn PartitionListener>>,
}

fn partition_pairs(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl TransactionalContext {
    pub(super) fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }
}

impl ClientContext for TransactionalContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::lag::record(&statistics);
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::connection::on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::connection::on_error(&error, reason);
    }
}

impl ConsumerContext for TransactionalContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_) | Rebalance::Error(_)) {
            self.revocations.fetch_add(1, Ordering::AcqRel);
        }
        if let (Rebalance::Revoke(partitions), Some(listener)) = (rebalance, &self.listener) {
            listener.revoked(&partition_pairs(partitions));
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                if let Some(listener) = &self.listener {
                    listener.assigned(&partition_pairs(partitions));
                }
                let list: Vec<String> = partitions
                    .elements()
                    .iter()
                    .map(|e| format!("{}[{}]", e.topic(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?list, "partitions assigned");
            }
            Rebalance::Revoke(partitions) => {
                tracing::info!(count = partitions.count(), "partitions revoked");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
        let held = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        metrics::gauge!("crm_sync_consumer_assigned_partitions").set(held as f64);
    }
}

pub type TransactionalConsumer = StreamConsumer<TransactionalContext>;

/// A consumer whose offsets are committed only through transactions.
pub fn consumer(
    settings: &KafkaSettings,
    client_id: &str,
    group_id: &str,
) -> anyhow::Result<TransactionalConsumer> {
    consumer_with_listener(settings, client_id, group_id, None)
}

/// [`consumer`], telling `listener` of every partition gained and lost.
pub fn consumer_with_listener(
    settings: &KafkaSettings,
    client_id: &str,
    group_id: &str,
    listener: Option<Arc<dyn PartitionListener>>,
) -> anyhow::Result<TransactionalConsumer> {
    crate::clients::base_config(settings, crate::clients::Role::Consumer)
        .set("client.id", client_id)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set("enable.partition.eof", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set_bounded_prefetch()
        // Feeds `crm_sync_consumer_lag{topic,partition}` (see `crate::lag`).
        .set(
            "statistics.interval.ms",
            crate::lag::STATISTICS_INTERVAL_MS.to_string(),
        )
        .create_with_context(TransactionalContext {
            revocations: AtomicU64::new(0),
            listener,
        })
        .map_err(|e| anyhow::anyhow!("creating Kafka consumer for {}: {e}", settings.brokers))
}
