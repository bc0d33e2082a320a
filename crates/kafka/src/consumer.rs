//! The consumer both consume loops read with: one configuration and one context, which reports
//! statistics and connection failures and follows rebalances for the loop (the at-least-once
//! loop's partition workers, the transactional loop's revocation count) and for a
//! [`PartitionListener`].

use anyhow::Context as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, TopicPartitionList};

use crate::clients::BoundedMemory;
use crate::partition_registry::PartitionRegistry;

/// The consumer of every consume loop.
pub type ServiceConsumer = StreamConsumer<ConsumerEvents>;

/// Told of the input partitions this replica gains and loses, from inside the rebalance (so
/// before any message of a gained partition is handed out).
pub trait PartitionListener: Send + Sync {
    fn assigned(&self, partitions: &[(String, i32)]);
    fn revoked(&self, partitions: &[(String, i32)]);
}

/// How a consumer's offsets reach its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetCommits {
    /// The loop stores each offset once the message's effects are durable; auto-commit sends
    /// what was stored every second.
    Stored,
    /// Only through the transaction that holds the messages' outputs.
    InTransactions,
}

/// The context of a [`ServiceConsumer`]. Makes assignments visible (logged, and exported as
/// `crm_sync_consumer_assigned_partitions`), stops the at-least-once loop's workers of revoked
/// partitions before the revoke completes, and counts revocations, so that the transactional
/// loop can tell that its open transaction covers partitions it may no longer own.
#[derive(Default)]
pub struct ConsumerEvents {
    revocations: AtomicU64,
    workers: PartitionRegistry,
    listener: Option<Arc<dyn PartitionListener>>,
}

impl ConsumerEvents {
    pub(crate) fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    pub(crate) fn workers(&self) -> &PartitionRegistry {
        &self.workers
    }
}

fn partition_pairs(list: &TopicPartitionList) -> Vec<(String, i32)> {
    list.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for ConsumerEvents {
    fn stats(&self, statistics: rdkafka::Statistics) {
        crate::lag::record(&statistics, |topic, partition| {
            self.workers.in_hand(topic, partition)
        });
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        crate::connection::on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        crate::connection::on_error(&error, reason);
    }
}

impl ConsumerContext for ConsumerEvents {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Revoke(_) | Rebalance::Error(_)) {
            self.revocations.fetch_add(1, Ordering::AcqRel);
        }
        if let Rebalance::Revoke(partitions) = rebalance {
            let revoked = partition_pairs(partitions);
            self.workers.revoke(&revoked);
            if let Some(listener) = &self.listener {
                listener.revoked(&revoked);
            }
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
        // With cooperative rebalancing an event names only the change, so count what is held.
        let held = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        metrics::gauge!(crate::metric_definitions::ASSIGNED_PARTITIONS).set(held as f64);
    }
}

/// A consumer that never stores an offset by itself: its loop decides when each one may move.
pub(crate) fn create(
    settings: &KafkaSettings,
    client_id: &str,
    group_id: &str,
    commits: OffsetCommits,
    listener: Option<Arc<dyn PartitionListener>>,
) -> anyhow::Result<ServiceConsumer> {
    config(settings, client_id, group_id, commits)
        .create_with_context(ConsumerEvents {
            listener,
            ..ConsumerEvents::default()
        })
        .with_context(|| format!("creating Kafka consumer for {}", settings.brokers))
}

fn config(
    settings: &KafkaSettings,
    client_id: &str,
    group_id: &str,
    commits: OffsetCommits,
) -> ClientConfig {
    let mut config = crate::clients::base_config(settings, crate::clients::Role::Consumer);
    // Before the shared bounds below, which only fill in what is still unset (an operator's
    // value stays as it was given).
    if commits == OffsetCommits::InTransactions {
        let fetch = crate::clients::TRANSACTIONAL_FETCH_BYTES;
        crate::clients::default_to(&mut config, "fetch.message.max.bytes", fetch);
    }
    config
        .set("client.id", client_id)
        .set("group.id", group_id)
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Upstream writers may be transactional (the evaluator): never read aborted data.
        .set("isolation.level", "read_committed")
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set("enable.partition.eof", "false")
        // Feeds `crm_sync_consumer_lag{topic,partition}` (see `crate::lag`).
        .set(
            "statistics.interval.ms",
            crate::lag::STATISTICS_INTERVAL_MS.to_string(),
        )
        // Cooperative rebalancing moves only the partitions that change owner, so scaling a
        // consumer group does not stop every replica.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set_bounded_prefetch();
    match commits {
        OffsetCommits::Stored => config
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000"),
        OffsetCommits::InTransactions => config.set("enable.auto.commit", "false"),
    };
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_loops_read_committed_data_with_cooperative_rebalancing_and_only_commit_their_own_way() {
        let settings = KafkaSettings::for_brokers("b:9092");
        let stored = config(&settings, "svc", "group", OffsetCommits::Stored);
        let transactional = config(&settings, "svc", "group", OffsetCommits::InTransactions);
        for config in [&stored, &transactional] {
            assert_eq!(config.get("isolation.level"), Some("read_committed"));
            assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
            assert_eq!(
                config.get("partition.assignment.strategy"),
                Some("cooperative-sticky")
            );
            assert_eq!(config.get("group.id"), Some("group"));
        }
        assert_eq!(stored.get("enable.auto.commit"), Some("true"));
        assert_eq!(transactional.get("enable.auto.commit"), Some("false"));
    }

    #[test]
    fn every_service_consumer_fetches_a_bounded_amount_ahead_unless_the_operator_says_otherwise() {
        let settings = KafkaSettings::for_brokers("b:9092");
        for commits in [OffsetCommits::Stored, OffsetCommits::InTransactions] {
            let config = config(&settings, "svc", "group", commits);
            for (key, value) in crate::clients::PREFETCH_BOUNDS {
                let value = match (key, commits) {
                    ("fetch.message.max.bytes", OffsetCommits::InTransactions) => {
                        crate::clients::TRANSACTIONAL_FETCH_BYTES
                    }
                    _ => value,
                };
                assert_eq!(config.get(key), Some(value), "{key} ({commits:?})");
            }
            // librdkafka's own default queues 64 MiB per partition.
            assert_eq!(config.get("queued.max.messages.kbytes"), Some("256"));
        }
        let mut tuned = KafkaSettings::for_brokers("b:9092");
        tuned
            .librdkafka_options
            .consumer
            .insert("queued_max_messages_kbytes".to_owned(), "4096".to_owned());
        tuned
            .librdkafka_options
            .consumer
            .insert("fetch_message_max_bytes".to_owned(), "262144".to_owned());
        let config = config(&tuned, "svc", "group", OffsetCommits::Stored);
        assert_eq!(config.get("queued.max.messages.kbytes"), Some("4096"));
        let transactional = super::config(&tuned, "svc", "group", OffsetCommits::InTransactions);
        assert_eq!(transactional.get("fetch.message.max.bytes"), Some("262144"));
        assert_eq!(config.get("fetch.max.bytes"), Some("4194304"));
    }
}
