//! The exactly-once consume→produce loop: what a batch of consumed messages produces (outputs and
//! dead letters) and the batch's consumer offsets are committed in one Kafka transaction, so a
//! `read_committed` reader downstream sees each input's outputs exactly once, whatever crashes.
//!
//! - Messages are handled one at a time, in order; a transaction covers up to
//!   [`BatchLimits::max_messages`] of them or [`BatchLimits::max_wait`], whichever comes first,
//!   and closes early when no message is waiting (so a quiet topic still sees low latency).
//! - The offsets go to the transaction with the consumer's group metadata
//!   (`send_offsets_to_transaction`), so a replica that lost its partitions in a rebalance is
//!   fenced by the group coordinator instead of committing over the new owner.
//! - A revoke during a batch aborts it: the partition's new owner replays it from the committed
//!   offsets.
//! - Abortable errors (a failed delivery, a fenced offset commit, a handler's transient failure)
//!   abort the transaction and rewind the consumer to the batch's first offsets, which are the
//!   last committed ones; fatal producer errors (e.g. fenced by a newer instance with the same
//!   `transactional.id`) also recreate the producer. If the consumer cannot be rewound the loop
//!   fails, so that the process restarts from the committed offsets rather than skip anything.
//! - `transactional.id` is unique and stable per replica: a restarted replica's
//!   `init_transactions` aborts whatever its predecessor left open, at once. A replica that
//!   never comes back leaves its open transaction to the coordinator, which aborts it after
//!   [`TRANSACTION_TIMEOUT`]; until then `read_committed` readers of the affected partitions wait.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::{self, Readiness};
use crm_sync_runtime::settings::KafkaSettings;
use metrics_exporter_prometheus::PrometheusHandle;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clients::ServiceProducer as FutureProducer;
use crate::consume::{Failure, Incoming};
use crate::dlq::{Origin, dead_letter_message};
use crate::headers;
use crate::produce::OutgoingMessage;

/// How long a transaction may stay open before the coordinator aborts it. Batches take
/// milliseconds; this bounds how long a replica that died mid-transaction (and never came back
/// under the same `transactional.id`) can hold up `read_committed` readers.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of one blocking transactional call (init, send offsets, commit, abort).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// What one consumed message produces. Everything returned is written in the transaction that
/// commits the message's offset.
///
/// A handler that keeps state derived from its input (the evaluator's record state) stages each
/// change while handling and makes it its own only in [`TransactionalHandler::committed`]; on
/// [`TransactionalHandler::aborted`] it forgets what it staged, since the same messages come again.
pub trait TransactionalHandler: Send + Sync {
    fn handle(
        &self,
        message: &Incoming<'_>,
    ) -> impl Future<Output = Result<Vec<OutgoingMessage>, Failure>> + Send;

    /// The transaction holding everything handled since the last commit or abort committed;
    /// `written` says where each of its outputs landed.
    fn committed(&self, _written: &[Written]) {}

    /// The open transaction was aborted: the messages of `partitions` in it are handled again
    /// (by this replica, or by the partition's new owner).
    fn aborted(&self, _partitions: &[i32]) {}
}

/// Where a committed output landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// Told of the input partitions this replica gains and loses, from inside the rebalance (so
/// before any message of a gained partition is handed out).
pub trait PartitionListener: Send + Sync {
    fn assigned(&self, partitions: &[(String, i32)]);
    fn revoked(&self, partitions: &[(String, i32)]);
}

/// When a transaction is committed.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_messages: usize,
    /// Longest time from a transaction's first message to its commit.
    pub max_wait: Duration,
    /// A transaction is committed as soon as no message arrives within this gap.
    pub idle: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_messages: 500,
            max_wait: Duration::from_millis(100),
            idle: Duration::from_millis(5),
        }
    }
}

/// Readiness of the loop: false until transactions are initialized, and while stuck.
#[derive(Clone, Default)]
pub struct TransactionalHealth {
    ready: Arc<AtomicBool>,
    stuck: Arc<AtomicBool>,
}

impl TransactionalHealth {
    pub fn check(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Relaxed) {
            Err("Kafka transactions not initialized yet".to_owned())
        } else if self.stuck.load(Ordering::Relaxed) {
            Err("retrying a failing transaction".to_owned())
        } else {
            Ok(())
        }
    }
}

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
    fn revocations(&self) -> u64 {
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
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        )
        .set("message.timeout.ms", message_timeout.to_string());
    config
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
        let mut backoff = BACKOFF_START;
        loop {
            let attempt = async {
                let producer: FutureProducer = config
                    .create_with_context(crate::connection::ReportingContext)
                    .map_err(|e| anyhow::anyhow!("creating the transactional producer: {e}"))?;
                let p = producer.clone();
                tokio::task::spawn_blocking(move || p.init_transactions(CALL_TIMEOUT))
                    .await
                    .map_err(|e| anyhow::anyhow!("init_transactions did not complete: {e}"))?
                    .map_err(|e| anyhow::anyhow!("init_transactions: {e}"))?;
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
                    if !sleep_or_shutdown(shutdown, backoff).await {
                        return None;
                    }
                    backoff = (backoff * 2).min(BACKOFF_CAP);
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
    async fn send(
        &self,
        m: &OutgoingMessage,
        trace: &[(String, String)],
    ) -> Result<DeliveryFuture, KafkaError> {
        let mut record = FutureRecord::to(&m.topic)
            .key(&m.key)
            .payload(&m.payload)
            .headers(crate::produce::record_headers(m, trace));
        record.partition = m.partition;
        enqueue(&self.producer, record).await
    }

    async fn commit(
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
        self.retrying("commit_transaction", || {
            |p: FutureProducer| p.commit_transaction(CALL_TIMEOUT)
        })
        .await
    }

    /// Runs a transactional call, repeating it while its errors are retriable.
    pub(crate) async fn retrying<F, C>(&self, what: &str, make: F) -> Result<(), TxnError>
    where
        F: Fn() -> C,
        C: FnOnce(FutureProducer) -> Result<(), KafkaError> + Send + 'static,
    {
        let mut backoff = BACKOFF_START;
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
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_CAP);
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
    mut record: FutureRecord<'a, String, Vec<u8>>,
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

/// The open transaction's input: per partition, the first offset consumed in it (where a
/// rewind goes back to: the last committed offset) and the next offset to commit.
#[derive(Default)]
struct Batch {
    /// Of the messages produced in the transaction. Awaited before committing: librdkafka's
    /// commit flushes them itself, but in 100 ms polling steps, which added ~100 ms per batch.
    deliveries: Vec<(String, DeliveryFuture)>,
    /// Where the delivered outputs landed, for [`TransactionalHandler::committed`].
    written: Vec<Written>,
    partitions: BTreeMap<i32, (i64, i64)>,
    messages: usize,
    ok: u64,
    dead: BTreeMap<&'static str, u64>,
    produced: BTreeMap<String, u64>,
}

impl Batch {
    /// Waits for Kafka to acknowledge everything produced so far; the first failure.
    async fn delivered(&mut self) -> Result<(), KafkaError> {
        for (topic, delivery) in self.deliveries.drain(..) {
            match delivery.await {
                Ok(Ok(delivery)) => self.written.push(Written {
                    topic,
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Ok(Err((error, _))) => return Err(error),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }

    fn track(&mut self, partition: i32, offset: i64) {
        let entry = self.partitions.entry(partition).or_insert((offset, offset));
        entry.0 = entry.0.min(offset);
        entry.1 = entry.1.max(offset + 1);
        self.messages += 1;
    }

    fn offsets(&self, topic: &str) -> Result<TopicPartitionList, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (partition, (_, next)) in &self.partitions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        Ok(tpl)
    }
}

enum Step {
    /// The handler cannot finish now: abort, rewind, back off.
    Transient(anyhow::Error),
    /// The transaction cannot take the output.
    Kafka(KafkaError),
    /// Partitions were revoked meanwhile: their new owner replays them from the committed
    /// offsets, so this batch must not commit.
    Revoked,
}

pub struct TransactionalLoop<'a, H> {
    pub service: &'a str,
    pub topic: &'a str,
    pub consumer: &'a TransactionalConsumer,
    pub producer_config: ClientConfig,
    pub handler: &'a H,
    pub health: TransactionalHealth,
    pub limits: BatchLimits,
    pub shutdown: CancellationToken,
}

/// Runs until `shutdown` is cancelled; the batch in hand is committed first. Fails only when
/// the consumer cannot be rewound after an abort (the process must then restart).
pub async fn run_transactional<H: TransactionalHandler>(
    l: TransactionalLoop<'_, H>,
) -> anyhow::Result<()> {
    let Some(mut producer) = TxnProducer::start(l.producer_config.clone(), &l.shutdown).await
    else {
        return Ok(());
    };
    l.health.ready.store(true, Ordering::Relaxed);
    let mut backoff = BACKOFF_START;
    let mut failures: u32 = 0;
    loop {
        let received = tokio::select! {
            biased;
            _ = l.shutdown.cancelled() => break,
            received = l.consumer.recv() => received,
        };
        let first = match received {
            Ok(message) => message,
            Err(error) => {
                tracing::warn!(%error, "Kafka consumer error");
                continue;
            }
        };
        let revocations = l.consumer.context().revocations();
        let mut batch = Batch::default();
        if let Err(error) = producer.producer.begin_transaction() {
            tracing::warn!(%error, "begin_transaction failed; recreating the producer");
            batch.track(first.partition(), first.offset());
            drop(first);
            producer = match recreate(producer, &l.shutdown).await {
                Some(producer) => producer,
                None => break,
            };
            rewind(&l, &batch).await?;
            continue;
        }
        let (mut outcome, mut batch) = fill(&l, &producer, first, revocations, batch).await;
        if outcome.is_ok()
            && let Err(error) = batch.delivered().await
        {
            outcome = Err(Step::Kafka(error));
        }
        // A revoke is routine (a replica joined or left): abort, but do not back off.
        let revoked = matches!(outcome, Err(Step::Revoked));
        let failure = match outcome {
            Ok(()) => {
                let committed = match (batch.offsets(l.topic), l.consumer.group_metadata()) {
                    (Ok(offsets), Some(group)) => producer.commit(offsets, group).await,
                    (Err(error), _) => {
                        tracing::warn!(%error, "building the offsets to commit");
                        Err(TxnError::Abortable)
                    }
                    (_, None) => Err(TxnError::Abortable),
                };
                match committed {
                    Ok(()) => {
                        record_commit(l.topic, &batch);
                        l.handler.committed(&batch.written);
                        failures = 0;
                        backoff = BACKOFF_START;
                        l.health.stuck.store(false, Ordering::Relaxed);
                        continue;
                    }
                    Err(kind) => Some(kind),
                }
            }
            Err(Step::Kafka(error)) => {
                tracing::warn!(%error, "producing in the transaction failed");
                Some(classify(&error))
            }
            Err(Step::Revoked) => {
                tracing::info!("partitions were revoked during the batch; aborting it");
                Some(TxnError::Abortable)
            }
            Err(Step::Transient(error)) => {
                metrics::counter!("crm_sync_retries_total", "topic" => l.topic.to_owned())
                    .increment(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    "transient failure; aborting the batch to retry it"
                );
                None
            }
        };
        // Abort (or replace a broken producer), then replay the batch from its first offsets.
        metrics::counter!("crm_sync_transactions_total", "result" => "aborted").increment(1);
        l.handler
            .aborted(&batch.partitions.keys().copied().collect::<Vec<_>>());
        let aborted = match failure {
            Some(TxnError::Fatal) => Err(TxnError::Fatal),
            _ => producer.abort().await,
        };
        if aborted.is_err() {
            producer = match recreate(producer, &l.shutdown).await {
                Some(producer) => producer,
                None => break,
            };
        }
        rewind(&l, &batch).await?;
        if revoked {
            continue;
        }
        failures += 1;
        if failures >= 3 {
            l.health.stuck.store(true, Ordering::Relaxed);
        }
        if failures > 1 || failure.is_none() {
            if !sleep_or_shutdown(&l.shutdown, jittered(backoff)).await {
                break;
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }
    Ok(())
}

/// Adds messages to the open transaction until the batch is full, time is up, the topic is
/// quiet, or shutdown; stops early on a failure or when partitions were revoked meanwhile.
async fn fill<'c, H: TransactionalHandler>(
    l: &TransactionalLoop<'c, H>,
    producer: &TxnProducer,
    first: BorrowedMessage<'c>,
    revocations: u64,
    mut batch: Batch,
) -> (Result<(), Step>, Batch) {
    let deadline = Instant::now() + l.limits.max_wait;
    let mut next = Some(first);
    while let Some(message) = next.take() {
        batch.track(message.partition(), message.offset());
        if l.consumer.context().revocations() != revocations {
            return (Err(Step::Revoked), batch);
        }
        if let Err(step) = process(l, producer, &message, &mut batch).await {
            return (Err(step), batch);
        }
        drop(message);
        if batch.messages >= l.limits.max_messages || l.shutdown.is_cancelled() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        next = tokio::select! {
            biased;
            received = l.consumer.recv() => match received {
                Ok(message) => Some(message),
                Err(error) => {
                    tracing::warn!(%error, "Kafka consumer error");
                    None
                }
            },
            _ = tokio::time::sleep(left.min(l.limits.idle)) => None,
        };
    }
    // A revoke can also be handled inside the last `recv`, which then returned nothing.
    if l.consumer.context().revocations() != revocations {
        return (Err(Step::Revoked), batch);
    }
    (Ok(()), batch)
}

async fn process<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    producer: &TxnProducer,
    message: &BorrowedMessage<'_>,
    batch: &mut Batch,
) -> Result<(), Step> {
    let incoming = Incoming {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload(),
        headers: headers::to_pairs(message.headers()),
    };
    let span = tracing::info_span!(
        "consume",
        otel.name = format!("process {}", incoming.topic),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = incoming.topic,
        messaging.destination.partition.id = incoming.partition.to_string(),
        messaging.kafka.partition = incoming.partition,
        messaging.kafka.offset = incoming.offset,
        messaging.kafka.message.key = incoming.key.map(String::from_utf8_lossy).as_deref(),
        messaging.message.id = headers::find(&incoming.headers, headers::EVENT_ID),
        messaging.consumer.group.name = l.service,
    );
    headers::adopt_trace_context(&span, &incoming.headers);
    let started = Instant::now();
    let result = l.handler.handle(&incoming).instrument(span.clone()).await;
    let outputs = match result {
        Ok(outputs) => {
            batch.ok += 1;
            outputs
        }
        Err(Failure::Permanent(letter)) => {
            span.in_scope(|| {
                tracing::warn!(reason = letter.reason, detail = %letter.detail, "dead-lettering message")
            });
            let origin = Origin {
                topic: incoming.topic,
                partition: incoming.partition,
                offset: incoming.offset,
                key: incoming.key,
                payload: incoming.payload,
                headers: &incoming.headers,
            };
            *batch.dead.entry(letter.reason).or_default() += 1;
            vec![dead_letter_message(l.service, &origin, &letter)]
        }
        Err(Failure::Transient(error)) => return Err(Step::Transient(error)),
    };
    for output in &outputs {
        // A producer span per output under the consume span; the record's traceparent names it.
        let send_span = span.in_scope(|| crate::produce::producer_span(output));
        let trace = headers::trace_context_of(&send_span);
        producer
            .send(output, &trace)
            .instrument(send_span)
            .await
            .map_err(Step::Kafka)
            .map(|delivery| batch.deliveries.push((output.topic.clone(), delivery)))?;
        *batch.produced.entry(output.topic.clone()).or_default() += 1;
    }
    metrics::histogram!("crm_sync_processing_seconds", "topic" => incoming.topic.to_owned())
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

fn record_commit(topic: &str, batch: &Batch) {
    metrics::counter!("crm_sync_transactions_total", "result" => "committed").increment(1);
    metrics::histogram!("crm_sync_transaction_messages").record(batch.messages as f64);
    metrics::counter!("crm_sync_messages_consumed_total", "topic" => topic.to_owned(), "outcome" => "ok")
        .increment(batch.ok);
    for (reason, n) in &batch.dead {
        metrics::counter!("crm_sync_messages_consumed_total", "topic" => topic.to_owned(), "outcome" => "dead_lettered")
            .increment(*n);
        metrics::counter!("crm_sync_dead_letters_total", "topic" => topic.to_owned(), "reason" => *reason)
            .increment(*n);
    }
    for (out, n) in &batch.produced {
        metrics::counter!("crm_sync_messages_produced_total", "topic" => out.clone()).increment(*n);
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

/// Moves every partition of the aborted batch that is still ours back to its first offset in
/// the batch, so that its messages are handled again in a new transaction. Revoked partitions
/// are left to their new owner, which starts from the committed offsets.
async fn rewind<H>(l: &TransactionalLoop<'_, H>, batch: &Batch) -> anyhow::Result<()> {
    if batch.partitions.is_empty() {
        return Ok(());
    }
    let mut last_error = String::new();
    for attempt in 0..5u32 {
        let assigned = l
            .consumer
            .assignment()
            .map_err(|e| anyhow::anyhow!("reading the consumer's assignment: {e}"))?;
        let mut seek = TopicPartitionList::new();
        for (partition, (first, _)) in &batch.partitions {
            if assigned.find_partition(l.topic, *partition).is_some() {
                seek.add_partition_offset(l.topic, *partition, Offset::Offset(*first))
                    .map_err(|e| anyhow::anyhow!("rewind list: {e}"))?;
            }
        }
        if seek.count() == 0 {
            return Ok(());
        }
        match l.consumer.seek_partitions(seek, Duration::from_secs(10)) {
            Ok(result) => {
                let failed: Vec<String> = result
                    .elements()
                    .iter()
                    .filter_map(|e| {
                        e.error()
                            .err()
                            .map(|err| format!("{}[{}]: {err}", e.topic(), e.partition()))
                    })
                    .collect();
                if failed.is_empty() {
                    tracing::info!(
                        partitions = batch.partitions.len(),
                        "rewound the consumer to the last committed offsets"
                    );
                    return Ok(());
                }
                last_error = failed.join(", ");
            }
            Err(error) => last_error = error.to_string(),
        }
        tracing::warn!(attempt, error = %last_error, "rewinding the consumer failed; retrying");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!(
        "could not rewind the consumer after an aborted transaction ({last_error}); exiting so that a restart resumes from the committed offsets"
    )
}

fn jittered(base: Duration) -> Duration {
    use rand::Rng;
    let half = base / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

pub(crate) async fn sleep_or_shutdown(shutdown: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

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
        let server_stop = CancellationToken::new();
        let server = tokio::spawn(ops::serve(
            listener,
            ops::router(readiness, self.metrics.clone()),
            server_stop.clone(),
            (&self.settings.http).into(),
        ));
        let grace = Duration::from_secs(self.settings.shutdown.grace_period_secs);
        let shutdown = self.shutdown.clone();
        let run = run_transactional(TransactionalLoop {
            service: self.name,
            topic: self.topic,
            consumer: &consumer,
            producer_config: producer_config(kafka, self.name, &transactional_id),
            handler: &self.handler,
            health,
            limits: self.limits,
            shutdown: shutdown.clone(),
        });
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::error!(?grace, "the batch in hand did not finish within the grace period; exiting (its transaction is aborted)");
                Ok(())
            }
        };
        server_stop.cancel();
        let _ = server.await;
        tracing::info!(service = self.name, "stopped");
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_commits_the_next_offsets_and_rewinds_to_the_first() {
        let mut batch = Batch::default();
        for (partition, offset) in [(0, 10), (1, 3), (0, 11), (0, 12), (1, 4)] {
            batch.track(partition, offset);
        }
        assert_eq!(batch.messages, 5);
        assert_eq!(batch.partitions[&0], (10, 13));
        assert_eq!(batch.partitions[&1], (3, 5));
        let tpl = batch.offsets("t").unwrap();
        let offsets: Vec<(i32, Offset)> = tpl
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(
            offsets,
            vec![(0, Offset::Offset(13)), (1, Offset::Offset(5))]
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
