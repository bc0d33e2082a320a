//! The transactional producer, shared by the consume→produce loop ([`crate::transactional`])
//! and [`crate::atomic`]: its configuration and `transactional.id`, how its errors are
//! classified, and its calls.

use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;

use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::clients::BoundedMemory;
use crate::clients::ServiceProducer as FutureProducer;
use crate::produce::OutgoingMessage;

/// How long a transaction may stay open before the coordinator aborts it. Batches take
/// milliseconds; this bounds how long a replica that died mid-transaction (and never came back
/// under the same `transactional.id`) can hold up `read_committed` readers.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of one blocking transactional call (init, send offsets, commit, abort).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a commit waits for librdkafka to release its delivered messages (see
/// [`TxnProducer::commit_delivered`]).
const RELEASE_LIMIT: Duration = Duration::from_millis(100);

/// The `transactional.id` of this replica: configured, or `<group>-<hostname>-<http port>`,
/// unique even for several replicas on one machine and stable across a replica's restarts.
pub fn transactional_id(kafka: &KafkaSettings, http_port: u16) -> String {
    match &kafka.transactional_id {
        Some(id) => id.trim().to_owned(),
        None => format!("{}-{}-{http_port}", kafka.consumer_group, hostname()),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// A transactional producer's configuration (see [`TRANSACTION_TIMEOUT`]).
pub fn producer_config(
    settings: &KafkaSettings,
    client_id: &str,
    transactional_id: &str,
) -> ClientConfig {
    // librdkafka requires a message's delivery timeout to fit in its transaction.
    let message_timeout = settings
        .delivery_timeout_ms
        .min(TRANSACTION_TIMEOUT.as_millis() as u64);
    let mut config = crate::clients::base_config(settings, crate::clients::Role::Producer);
    config
        .set("client.id", client_id)
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // Each transaction awaits its deliveries before committing, so lingering is paid by
        // every transaction whose last message waits out the timer. 1 ms still packs what a
        // batch enqueues at once (a request's records, a batch's outputs) into few requests,
        // and under load librdkafka batches whatever queues while requests are in flight.
        .set("linger.ms", "1")
        .set("compression.type", "lz4")
        .set_bounded_buffer()
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        )
        .set("message.timeout.ms", message_timeout.to_string());
    config
}

/// The configurations of `n` transactional producers of one replica: the i-th uses
/// `<transactional.id>-<i>`, so that each fences only its own predecessor.
pub fn numbered_configs(config: &ClientConfig, n: usize) -> Vec<ClientConfig> {
    let base_id = config
        .get("transactional.id")
        .unwrap_or("crm-sync")
        .to_owned();
    (0..n.max(1))
        .map(|i| {
            let mut config = config.clone();
            config.set("transactional.id", format!("{base_id}-{i}"));
            config
        })
        .collect()
}

/// How a transactional call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnError {
    /// Try the same call again.
    Retriable,
    /// Abort the transaction and replay its input.
    Abortable,
    /// The producer is unusable: create a new one, then replay.
    Fatal,
}

pub(crate) fn classify(error: &KafkaError) -> TxnError {
    match error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnError::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => TxnError::Abortable,
        KafkaError::Transaction(e) if e.is_retriable() => TxnError::Retriable,
        _ => TxnError::Abortable,
    }
}

/// A transactional producer with its configuration, so that it can be recreated.
pub(crate) struct TxnProducer {
    config: ClientConfig,
    pub(crate) producer: FutureProducer,
}

impl TxnProducer {
    /// Creates the producer and initializes transactions (fencing any predecessor with the same
    /// `transactional.id`), retrying until it works; None if shut down meanwhile.
    pub(crate) async fn start(
        config: ClientConfig,
        shutdown: &CancellationToken,
    ) -> Option<TxnProducer> {
        let mut backoff = crate::retry_backoff();
        loop {
            let attempt = async {
                let producer: FutureProducer = config
                    .create_with_context(crate::connection::ReportingContext)
                    .context("creating the transactional producer")?;
                let p = producer.clone();
                tokio::task::spawn_blocking(move || p.init_transactions(CALL_TIMEOUT))
                    .await
                    .context("init_transactions did not complete")?
                    .context("init_transactions")?;
                Ok::<_, anyhow::Error>(producer)
            };
            let result = tokio::select! {
                _ = shutdown.cancelled() => return None,
                result = attempt => result,
            };
            match result {
                Ok(producer) => {
                    tracing::info!("Kafka transactions initialized");
                    return Some(TxnProducer {
                        config: config.clone(),
                        producer,
                    });
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "initializing Kafka transactions failed; retrying"
                    );
                    if !backoff.wait(shutdown).await {
                        return None;
                    }
                }
            }
        }
    }

    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce(FutureProducer) -> Result<T, KafkaError> + Send + 'static,
    ) -> Result<T, KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || call(producer))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }

    /// Enqueues one message in the open transaction; the batch awaits its delivery before committing.
    pub(crate) async fn send(
        &self,
        m: &OutgoingMessage,
        trace: &[(String, String)],
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut record = FutureRecord::to(&m.topic)
            .key(m.key.as_bytes())
            .payload(&m.payload)
            .headers(crate::produce::record_headers(m, trace));
        record.partition = m.partition;
        enqueue(&self.producer, record).await
    }

    pub(crate) async fn commit(
        &self,
        offsets: TopicPartitionList,
        group: ConsumerGroupMetadata,
    ) -> Result<(), TxnError> {
        let offsets = Arc::new(offsets);
        let group = Arc::new(group);
        self.retrying("send_offsets_to_transaction", || {
            let (offsets, group) = (offsets.clone(), group.clone());
            move |p: FutureProducer| p.send_offsets_to_transaction(&offsets, &group, CALL_TIMEOUT)
        })
        .await?;
        self.commit_delivered().await
    }

    /// Commits the open transaction, whose messages have all been delivered (their delivery
    /// futures resolved).
    pub(crate) async fn commit_delivered(&self) -> Result<(), TxnError> {
        self.released().await;
        self.retrying("commit_transaction", || {
            |p: FutureProducer| p.commit_transaction(CALL_TIMEOUT)
        })
        .await
    }

    /// Waits until librdkafka no longer counts any message as in flight. rust-rdkafka's
    /// `commit_transaction` flushes first, and a flush that finds a message still counted polls
    /// for a whole 100 ms. A delivered message stays counted until the polling thread has
    /// released its delivery report, just after resolving its future; on a busy machine the
    /// commit often came first: 9-13 % of transactions took 100 ms more. Bounded: past
    /// [`RELEASE_LIMIT`] the commit's own flush takes over.
    async fn released(&self) {
        let deadline = tokio::time::Instant::now() + RELEASE_LIMIT;
        let mut checks = 0u32;
        while self.producer.in_flight_count() > 0 && tokio::time::Instant::now() < deadline {
            // The report is usually released within microseconds: yield a few times, then
            // leave the core to the polling thread.
            if checks < 16 {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            checks += 1;
        }
    }

    /// Runs a transactional call, repeating it while its errors are retriable.
    pub(crate) async fn retrying<F, C>(&self, what: &str, make: F) -> Result<(), TxnError>
    where
        F: Fn() -> C,
        C: FnOnce(FutureProducer) -> Result<(), KafkaError> + Send + 'static,
    {
        let mut backoff = crate::retry_backoff();
        for _ in 0..5 {
            match self.blocking(make()).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    let kind = classify(&error);
                    tracing::warn!(%error, ?kind, call = what, "Kafka transaction call failed");
                    if kind != TxnError::Retriable {
                        return Err(kind);
                    }
                }
            }
            backoff.sleep().await;
        }
        Err(TxnError::Abortable)
    }

    pub(crate) async fn abort(&self) -> Result<(), TxnError> {
        self.retrying("abort_transaction", || {
            |p: FutureProducer| p.abort_transaction(CALL_TIMEOUT)
        })
        .await
    }
}

/// Enqueues a record, waiting while librdkafka's queue is full; the delivery is awaited by
/// whoever commits.
pub(crate) async fn enqueue<'a>(
    producer: &FutureProducer,
    mut record: FutureRecord<'a, [u8], Vec<u8>>,
) -> Result<DeliveryFuture, KafkaError> {
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((error, _)) => return Err(error),
        }
    }
}

/// A new producer in place of one that is unusable; None if shut down meanwhile.
pub(crate) async fn recreate(
    old: TxnProducer,
    shutdown: &CancellationToken,
) -> Option<TxnProducer> {
    tracing::warn!("recreating the transactional producer");
    let config = old.config.clone();
    drop(old);
    TxnProducer::start(config, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_waits_until_delivered_messages_are_released_but_not_forever() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("t", 1, 1).unwrap();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.timeout.ms", "60000");
        let producer: FutureProducer = config
            .create_with_context(crate::connection::ReportingContext)
            .unwrap();
        let txn = TxnProducer { config, producer };
        let send = || {
            txn.producer
                .send_result(FutureRecord::<str, str>::to("t").key("k").payload("v"))
                .map_err(|(e, _)| e)
                .unwrap()
        };
        let started = std::time::Instant::now();
        txn.released().await;
        assert!(started.elapsed() < RELEASE_LIMIT / 2, "nothing in flight");
        // Delivered: by the time the wait ends, librdkafka counts it no more, so the commit's
        // flush has nothing to poll for.
        for _ in 0..50 {
            send().await.unwrap().unwrap();
            txn.released().await;
            assert_eq!(txn.producer.in_flight_count(), 0);
        }
        // A message that cannot leave: the wait gives up after its bound.
        cluster.broker_down(1).unwrap();
        let _stuck = send();
        let started = std::time::Instant::now();
        txn.released().await;
        let waited = started.elapsed();
        assert!(txn.producer.in_flight_count() > 0);
        assert!(
            waited >= RELEASE_LIMIT && waited < RELEASE_LIMIT * 5,
            "{waited:?}"
        );
    }

    #[test]
    fn only_transaction_errors_can_be_retried_in_place() {
        assert_eq!(
            classify(&KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut
            )),
            TxnError::Abortable
        );
        assert_eq!(
            classify(&KafkaError::Rebalance(RDKafkaErrorCode::RevokePartitions)),
            TxnError::Abortable
        );
    }

    #[test]
    fn the_default_transactional_id_names_group_host_and_port() {
        let settings = KafkaSettings {
            consumer_group: "crm-sync-workflow-evaluator".into(),
            ..KafkaSettings::for_brokers("b:9092")
        };
        let id = transactional_id(&settings, 8082);
        assert!(id.starts_with("crm-sync-workflow-evaluator-"), "{id}");
        assert!(id.ends_with("-8082"), "{id}");
        assert_eq!(id, transactional_id(&settings, 8082), "stable");
        assert_ne!(
            id,
            transactional_id(&settings, 8092),
            "unique per replica on one host"
        );
        let configured = KafkaSettings {
            transactional_id: Some(" evaluator-0 ".into()),
            ..settings
        };
        assert_eq!(transactional_id(&configured, 8082), "evaluator-0");
    }

    #[test]
    fn the_producer_fits_deliveries_into_the_transaction_timeout() {
        let settings = KafkaSettings {
            consumer_group: "g".into(),
            ..KafkaSettings::for_brokers("b:9092")
        };
        let config = producer_config(&settings, "svc", "g-host-1");
        assert_eq!(config.get("transactional.id"), Some("g-host-1"));
        assert_eq!(config.get("message.timeout.ms"), Some("10000"));
        assert_eq!(config.get("transaction.timeout.ms"), Some("10000"));
    }
}
