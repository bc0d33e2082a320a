//! The loop: fills a transaction with a batch of messages, commits it with the batch's offsets,
//! or aborts it and rewinds the consumer.

use anyhow::Context as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::batch::{Batch, TraceContext, record_commit};
use super::{BatchLimits, TransactionalHandler};
use crate::consumer::ServiceConsumer;
use crate::dlq::dead_letter_message;
use crate::headers;
use crate::health::LoopHealth;
use crate::message::{Failure, Incoming};
use crate::txn_producer::{TxnError, TxnProducer, classify, recreate};

const REWIND_PAUSE: Duration = Duration::from_millis(200);

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
    pub consumer: &'a ServiceConsumer,
    pub producer_config: ClientConfig,
    pub handler: &'a H,
    pub health: LoopHealth,
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
    l.health.set_started();
    let mut backoff = crate::retry_backoff();
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
        let (mut outcome, mut batch) = fill(&l, first, revocations, batch).await;
        if outcome.is_ok()
            && let Err(error) = batch.produce_pending(&producer).await
        {
            outcome = Err(Step::Kafka(error));
        }
        if outcome.is_ok()
            && let Err(error) = batch.delivered().await
        {
            outcome = Err(Step::Kafka(error));
        }
        // A revoke is routine (a replica joined or left): abort, but do not back off.
        let revoked = matches!(outcome, Err(Step::Revoked));
        let failure = match settle(&l, &producer, outcome, &batch).await {
            Ok(()) => {
                failures = 0;
                backoff.reset();
                l.health.set_stuck(false);
                continue;
            }
            Err(failure) => failure,
        };
        producer = match abort_and_rewind(&l, producer, failure, &batch).await? {
            Some(producer) => producer,
            None => break,
        };
        if revoked {
            continue;
        }
        failures += 1;
        if failures >= 3 {
            l.health.set_stuck(true);
        }
        if (failures > 1 || failure.is_none()) && !backoff.wait(&l.shutdown).await {
            break;
        }
    }
    Ok(())
}

/// Commits the batch if everything in it went through, telling the handler; otherwise says why
/// not: the kind of a Kafka failure (or a revoke), None for the handler's transient failure.
async fn settle<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    producer: &TxnProducer,
    outcome: Result<(), Step>,
    batch: &Batch,
) -> Result<(), Option<TxnError>> {
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
                    record_commit(l.topic, batch);
                    l.handler.committed(&batch.written);
                    return Ok(());
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
            metrics::counter!(crate::metric_definitions::RETRIES, "topic" => l.topic.to_owned())
                .increment(1);
            tracing::warn!(
                error = format!("{error:#}"),
                "transient failure; aborting the batch to retry it"
            );
            None
        }
    };
    Err(failure)
}

/// Aborts the transaction (or replaces a broken producer), then replays the batch from its first
/// offsets; None if shut down while replacing the producer.
async fn abort_and_rewind<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    mut producer: TxnProducer,
    failure: Option<TxnError>,
    batch: &Batch,
) -> anyhow::Result<Option<TxnProducer>> {
    metrics::counter!(crate::metric_definitions::TRANSACTIONS, "result" => "aborted").increment(1);
    l.handler
        .aborted(&batch.partitions.keys().copied().collect::<Vec<_>>());
    let aborted = match failure {
        Some(TxnError::Fatal) => Err(TxnError::Fatal),
        _ => producer.abort().await,
    };
    if aborted.is_err() {
        producer = match recreate(producer, &l.shutdown).await {
            Some(producer) => producer,
            None => return Ok(None),
        };
    }
    rewind(l, batch).await?;
    Ok(Some(producer))
}

/// Adds messages to the open transaction until the batch is full, time is up, the topic is
/// quiet, or shutdown; stops early on a failure or when partitions were revoked meanwhile.
async fn fill<'c, H: TransactionalHandler>(
    l: &TransactionalLoop<'c, H>,
    first: BorrowedMessage<'c>,
    revocations: u64,
    mut batch: Batch,
) -> (Result<(), Step>, Batch) {
    let opened = Instant::now();
    let mut next = Some(first);
    while let Some(message) = next.take() {
        batch.track(message.partition(), message.offset());
        if l.consumer.context().revocations() != revocations {
            return (Err(Step::Revoked), batch);
        }
        if let Err(step) = process(l, &message, &mut batch).await {
            return (Err(step), batch);
        }
        drop(message);
        if l.shutdown.is_cancelled() {
            break;
        }
        let Some(wait) = l.limits.wait_for_next(batch.messages, opened.elapsed()) else {
            break;
        };
        // A zero wait completes on its first poll: after `recv` found nothing buffered.
        let give_up = async {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        };
        next = tokio::select! {
            biased;
            received = l.consumer.recv() => match received {
                Ok(message) => Some(message),
                Err(error) => {
                    tracing::warn!(%error, "Kafka consumer error");
                    None
                }
            },
            _ = give_up => None,
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
    message: &BorrowedMessage<'_>,
    batch: &mut Batch,
) -> Result<(), Step> {
    let incoming = Incoming::of(message);
    let span = incoming.span(l.service);
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
            *batch.dead.entry(letter.reason).or_default() += 1;
            vec![dead_letter_message(l.service, &incoming, &letter)]
        }
        Err(Failure::Transient(error)) => return Err(Step::Transient(error)),
    };
    // The outputs' traceparent names the consume span: one span per message, never one per
    // output (a span per record cost more CPU than the evaluator's own work).
    let trace: TraceContext = headers::trace_context_of(&span).into();
    for output in outputs {
        match batch.produced.get_mut(&output.topic) {
            Some(count) => *count += 1,
            None => {
                batch.produced.insert(output.topic.clone(), 1);
            }
        }
        batch.pending.push((output, Arc::clone(&trace)));
    }
    metrics::histogram!(crate::metric_definitions::PROCESSING, "topic" => incoming.topic.to_owned())
        .record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Moves every partition of the aborted batch that is still ours back to its first offset in
/// the batch, so that its messages are handled again in a new transaction. Revoked partitions
/// are left to their new owner, which starts from the committed offsets.
async fn rewind<H>(l: &TransactionalLoop<'_, H>, batch: &Batch) -> anyhow::Result<()> {
    if batch.partitions.is_empty() {
        return Ok(());
    }
    let mut last_error = String::new();
    // A few quick retries at a steady pace; then the process restarts from the committed offsets.
    let mut pause = crm_sync_retry::Backoff::new(REWIND_PAUSE, REWIND_PAUSE);
    for attempt in 0..5u32 {
        let assigned = l
            .consumer
            .assignment()
            .context("reading the consumer's assignment")?;
        let mut seek = TopicPartitionList::new();
        for (partition, (first, _)) in &batch.partitions {
            if assigned.find_partition(l.topic, *partition).is_some() {
                seek.add_partition_offset(l.topic, *partition, Offset::Offset(*first))
                    .context("rewind list")?;
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
        pause.sleep().await;
    }
    anyhow::bail!(
        "could not rewind the consumer after an aborted transaction ({last_error}); exiting so that a restart resumes from the committed offsets"
    )
}
