//! The loop: handles a batch of messages, then commits its outputs with the batch's offsets in
//! a transaction while it handles the next batch, or aborts and rewinds the consumer.

use anyhow::Context as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::batch::{Batch, Positions, TraceContext, both, record_commit};
use super::commit::{Closed, InFlight};
use super::{BatchLimits, TransactionalHandler};
use crate::consumer::ServiceConsumer;
use crate::dlq::dead_letter_message;
use crate::headers;
use crate::health::LoopHealth;
use crate::message::{Failure, Incoming};
use crate::txn_producer::{TxnError, TxnProducer, recreate};

const REWIND_PAUSE: Duration = Duration::from_millis(200);

enum Step {
    /// The handler cannot finish now: abort, rewind, back off.
    Transient(anyhow::Error),
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

/// The producer (None while a commit task holds it), the batch being committed, and how the
/// loop backs off after failures.
struct Pipeline {
    producer: Option<TxnProducer>,
    inflight: Option<InFlight>,
    backoff: crm_sync_retry::Backoff,
    failures: u32,
}

/// How the batch in flight ended.
enum Landed {
    /// Committed, or nothing was in flight.
    Committed,
    /// Aborted, together with the batch handled meanwhile; both were rewound.
    Aborted,
    /// Shut down while replacing the producer.
    Shutdown,
}

/// Runs until `shutdown` is cancelled; the batch in hand is committed first. Each batch is
/// committed by a task of its own while the next one is handled (see [`super::commit`]); the
/// next transaction begins once the previous one committed. Fails only when the consumer cannot
/// be rewound after an abort (the process must then restart).
pub async fn run_transactional<H: TransactionalHandler>(
    l: TransactionalLoop<'_, H>,
) -> anyhow::Result<()> {
    let Some(producer) = TxnProducer::start(l.producer_config.clone(), &l.shutdown).await else {
        return Ok(());
    };
    l.health.set_started();
    let mut p = Pipeline {
        producer: Some(producer),
        inflight: None,
        backoff: crate::retry_backoff(),
        failures: 0,
    };
    // Looked up once for the one topic, not per message (a label's string, a key and a
    // registry search each time).
    let processing =
        metrics::histogram!(crate::metric_definitions::PROCESSING, "topic" => l.topic.to_owned());
    loop {
        let received = tokio::select! {
            biased;
            _ = l.shutdown.cancelled() => break,
            closed = landing(&mut p.inflight) => {
                let Some(inflight) = p.inflight.take() else { continue };
                match settle(&l, &mut p, inflight.positions, closed, &Positions::new()).await? {
                    Landed::Shutdown => return Ok(()),
                    Landed::Committed | Landed::Aborted => continue,
                }
            }
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
        let (outcome, batch) = fill(&l, first, revocations, &mut p.inflight, &processing).await;
        match land(&l, &mut p, &batch.partitions).await? {
            Landed::Shutdown => return Ok(()),
            Landed::Aborted => continue,
            Landed::Committed => {}
        }
        if let Err(step) = outcome {
            if !drop_open(&l, &mut p, step, &batch.partitions).await? {
                break;
            }
            continue;
        }
        if !begin(&l, &mut p, batch).await? {
            break;
        }
    }
    // Shutting down: the batch in flight commits first.
    land(&l, &mut p, &Positions::new()).await?;
    Ok(())
}

/// The end of the commit in flight; never, when there is none.
async fn landing(inflight: &mut Option<InFlight>) -> Result<Closed, JoinError> {
    match inflight {
        Some(inflight) => inflight.landed().await,
        None => std::future::pending().await,
    }
}

/// Waits for the batch in flight, if any (see [`settle`]).
async fn land<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    next: &Positions,
) -> anyhow::Result<Landed> {
    let Some(mut inflight) = p.inflight.take() else {
        return Ok(Landed::Committed);
    };
    let closed = inflight.landed().await;
    settle(l, p, inflight.positions, closed, next).await
}

/// After a commit task ended: on success tells the handler; on failure aborts the transaction,
/// and with it the batch handled meanwhile (`next`: its transaction has not begun), and
/// rewinds both.
async fn settle<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    positions: Positions,
    closed: Result<Closed, JoinError>,
    next: &Positions,
) -> anyhow::Result<Landed> {
    let (producer, failure) = match closed {
        Ok(Closed {
            producer,
            batch,
            result: Ok(()),
        }) => {
            record_commit(l.topic, &batch);
            l.handler.committed(&batch.written);
            p.producer = Some(producer);
            p.failures = 0;
            p.backoff.reset();
            l.health.set_stuck(false);
            return Ok(Landed::Committed);
        }
        Ok(Closed {
            producer,
            result: Err(kind),
            ..
        }) => (Some(producer), kind),
        Err(error) => {
            tracing::error!(%error, "the commit task ended abnormally; replacing the producer");
            (None, TxnError::Fatal)
        }
    };
    let positions = both(&positions, next);
    aborted(l, &positions);
    let producer = match (producer, failure) {
        (Some(producer), TxnError::Retriable | TxnError::Abortable) => match producer.abort().await
        {
            Ok(()) => Some(producer),
            Err(_) => recreate(producer, &l.shutdown).await,
        },
        (Some(producer), TxnError::Fatal) => recreate(producer, &l.shutdown).await,
        (None, _) => TxnProducer::start(l.producer_config.clone(), &l.shutdown).await,
    };
    let Some(producer) = producer else {
        return Ok(Landed::Shutdown);
    };
    p.producer = Some(producer);
    rewind(l, &positions).await?;
    if !failed(l, p, false).await {
        return Ok(Landed::Shutdown);
    }
    Ok(Landed::Aborted)
}

/// Tells the handler (and the metrics) that the batches at `positions` will be handled again.
fn aborted<H: TransactionalHandler>(l: &TransactionalLoop<'_, H>, positions: &Positions) {
    metrics::counter!(crate::metric_definitions::TRANSACTIONS, "result" => "aborted").increment(1);
    l.handler
        .aborted(&positions.keys().copied().collect::<Vec<_>>());
}

/// Counts a failure and waits before the retry: at once for the handler's transient failure,
/// from the second in a row for Kafka's. False if shut down meanwhile.
async fn failed<H>(l: &TransactionalLoop<'_, H>, p: &mut Pipeline, transient: bool) -> bool {
    p.failures += 1;
    if p.failures >= 3 {
        l.health.set_stuck(true);
    }
    if p.failures > 1 || transient {
        return p.backoff.wait(&l.shutdown).await;
    }
    true
}

/// A batch whose handling failed, before its transaction began: it is rewound to be handled
/// again. False if shut down meanwhile.
async fn drop_open<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    step: Step,
    positions: &Positions,
) -> anyhow::Result<bool> {
    aborted(l, positions);
    rewind(l, positions).await?;
    match step {
        // A revoke is routine (a replica joined or left): no back-off.
        Step::Revoked => {
            tracing::info!("partitions were revoked during the batch; handling it again");
            Ok(true)
        }
        Step::Transient(error) => {
            metrics::counter!(crate::metric_definitions::RETRIES, "topic" => l.topic.to_owned())
                .increment(1);
            tracing::warn!(
                error = format!("{error:#}"),
                "transient failure; dropping the batch to retry it"
            );
            Ok(failed(l, p, true).await)
        }
    }
}

/// Opens the transaction of a handled batch and starts committing it. False if shut down while
/// replacing a broken producer.
async fn begin<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    mut batch: Batch,
) -> anyhow::Result<bool> {
    l.handler.sealed();
    let Some(producer) = p.producer.take() else {
        anyhow::bail!("no producer after the previous batch landed");
    };
    if let Err(error) = producer.producer.begin_transaction() {
        tracing::warn!(%error, "begin_transaction failed; recreating the producer");
        aborted(l, &batch.partitions);
        p.producer = match recreate(producer, &l.shutdown).await {
            Some(producer) => Some(producer),
            None => return Ok(false),
        };
        rewind(l, &batch.partitions).await?;
        return Ok(true);
    }
    let produced = batch.produce_pending(&producer).await;
    let offsets = batch.offsets(l.topic);
    let group = l.consumer.group_metadata();
    p.inflight = Some(InFlight::start(producer, batch, produced, offsets, group));
    Ok(true)
}

/// Handles messages into the batch until it is full, time is up, the topic is quiet, or
/// shutdown; stops early on a failure or when partitions were revoked meanwhile. While the
/// previous batch is still committing, this one cannot begin anyway: it takes the messages that
/// arrive until that commit ends, as a batch consumed only after the commit would.
async fn fill<'c, H: TransactionalHandler>(
    l: &TransactionalLoop<'c, H>,
    first: BorrowedMessage<'c>,
    revocations: u64,
    committing: &mut Option<InFlight>,
    processing: &metrics::Histogram,
) -> (Result<(), Step>, Batch) {
    let mut batch = Batch::default();
    let opened = Instant::now();
    let mut next = Some(first);
    while let Some(message) = next.take() {
        batch.track(message.partition(), message.offset());
        if l.consumer.context().revocations() != revocations {
            return (Err(Step::Revoked), batch);
        }
        if let Err(step) = process(l, &message, &mut batch, processing).await {
            return (Err(step), batch);
        }
        drop(message);
        if l.shutdown.is_cancelled() {
            break;
        }
        let Some(wait) = l.limits.wait_for_next(batch.messages, opened.elapsed()) else {
            break;
        };
        let left = l.limits.max_wait.saturating_sub(opened.elapsed());
        // A zero wait completes on its first poll: after `recv` found nothing buffered.
        let give_up = async {
            match committing.as_mut().filter(|c| !c.has_ended()) {
                Some(previous) => {
                    let _ = tokio::time::timeout(left, previous.wait()).await;
                }
                None if !wait.is_zero() => tokio::time::sleep(wait).await,
                None => {}
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
    processing: &metrics::Histogram,
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
    processing.record(started.elapsed().as_secs_f64());
    Ok(())
}

/// Moves every partition of the aborted batches that is still ours back to its first offset in
/// them, so that their messages are handled again in a new transaction. Revoked partitions are
/// left to their new owner, which starts from the committed offsets.
async fn rewind<H>(l: &TransactionalLoop<'_, H>, positions: &Positions) -> anyhow::Result<()> {
    if positions.is_empty() {
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
        for (partition, (first, _)) in positions {
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
                        partitions = positions.len(),
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
