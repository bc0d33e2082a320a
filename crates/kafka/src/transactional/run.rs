//! The loop: handles a batch of messages, then commits its outputs with the batch's offsets in
//! a transaction while it handles the next batch, or aborts and rewinds the consumer.

use anyhow::Context as _;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::batch::{Batch, Positions, TraceContext};
use super::commit::InFlight;
use super::land::{Landed, Pipeline, aborted, failed, land_all, landing, make_room, settle};
use super::phases::{Phases, since};
use super::{BatchLimits, TransactionalHandler};
use crate::consumer::ServiceConsumer;
use crate::dlq::dead_letter_message;
use crate::headers;
use crate::health::LoopHealth;
use crate::message::{Failure, Incoming};
use crate::txn_producer::{TxnProducer, numbered_configs, recreate};

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
    /// Transactions in flight at once, one producer each (`<transactional.id>-<n>`): the next
    /// batch's transaction begins once the previous batch's outputs are delivered rather than
    /// once it committed.
    pub producers: usize,
    pub handler: &'a H,
    pub health: LoopHealth,
    pub limits: BatchLimits,
    pub shutdown: CancellationToken,
}

/// Runs until `shutdown` is cancelled; the batch in hand is committed first. Each batch is
/// committed by a task of its own while the next one is handled (see [`super::commit`]); the
/// next transaction begins once the previous one committed, or with several producers once its
/// outputs were delivered. Fails only when the consumer cannot be rewound after an abort (the
/// process must then restart).
pub async fn run_transactional<H: TransactionalHandler>(
    l: TransactionalLoop<'_, H>,
) -> anyhow::Result<()> {
    let configs = numbered_configs(&l.producer_config, l.producers);
    let mut idle = Vec::with_capacity(configs.len());
    for (slot, config) in configs.iter().enumerate() {
        let Some(producer) = TxnProducer::start(config.clone(), &l.shutdown).await else {
            return Ok(());
        };
        idle.push((producer, slot));
    }
    l.health.set_started();
    let mut p = Pipeline {
        idle,
        configs,
        inflight: VecDeque::new(),
        backoff: crate::retry_backoff(),
        failures: 0,
        phases: Phases::new(),
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
                let Some(inflight) = p.inflight.pop_front() else { continue };
                match settle(&l, &mut p, inflight, closed, &Positions::new()).await? {
                    Landed::Shutdown => return Ok(()),
                    Landed::Committed | Landed::Aborted => continue,
                }
            }
            received = l.consumer.recv() => received,
        };
        let first = match received {
            Ok(message) => message,
            Err(error) => {
                crate::connection::on_consumer_error(&error);
                continue;
            }
        };
        let revocations = l.consumer.context().revocations();
        let filling = Instant::now();
        let (outcome, batch) = fill(&l, first, revocations, &mut p, &processing).await;
        since(&p.phases.fill, filling);
        let waiting = Instant::now();
        let room = match outcome {
            Ok(()) => make_room(&l, &mut p, &batch.partitions).await?,
            // A batch that will not commit waits for everything before it.
            Err(_) => land_all(&l, &mut p, &batch.partitions).await?,
        };
        since(&p.phases.room, waiting);
        match room {
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
    // Shutting down: the batches in flight commit first.
    land_all(&l, &mut p, &Positions::new()).await?;
    Ok(())
}

/// A batch whose handling failed, before its transaction began: it is rewound to be handled
/// again. False if shut down meanwhile.
async fn drop_open<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    step: Step,
    positions: &Positions,
) -> anyhow::Result<bool> {
    aborted(l, positions, 1);
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
    let Some((producer, slot)) = p.idle.pop() else {
        anyhow::bail!("no free producer after the batches in flight delivered");
    };
    if let Err(error) = producer.producer.begin_transaction() {
        tracing::warn!(%error, "begin_transaction failed; recreating the producer");
        // The batches before it land first: an abort forgets every uncommitted batch.
        let landed = land_all(l, p, &batch.partitions).await?;
        match recreate(producer, &l.shutdown).await {
            Some(producer) => p.idle.push((producer, slot)),
            None => return Ok(false),
        };
        match landed {
            Landed::Shutdown => return Ok(false),
            // Rewound together with the batches before it.
            Landed::Aborted => {}
            Landed::Committed => {
                aborted(l, &batch.partitions, 1);
                rewind(l, &batch.partitions).await?;
            }
        }
        return Ok(true);
    }
    let handing = Instant::now();
    let produced = batch.produce_pending(&producer).await;
    since(&p.phases.hand_over, handing);
    let offsets = batch.offsets(l.topic);
    let group = l.consumer.group_metadata();
    let previous = p.inflight.back().map(InFlight::stage);
    p.inflight.push_back(InFlight::start(
        (producer, slot),
        batch,
        produced,
        (offsets, group),
        previous,
        p.phases.clone(),
    ));
    Ok(true)
}

/// Handles messages into the batch until it is full, time is up, the topic is quiet, or
/// shutdown; stops early on a failure or when partitions were revoked meanwhile. While the
/// batches in flight leave no room for it, this one cannot begin anyway: it takes the messages
/// that arrive until they do, as a batch consumed only then would.
async fn fill<'c, H: TransactionalHandler>(
    l: &TransactionalLoop<'c, H>,
    first: BorrowedMessage<'c>,
    revocations: u64,
    p: &mut Pipeline,
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
        let room = p.has_room();
        let give_up = async {
            if !room {
                let _ = tokio::time::timeout(left, p.room()).await;
            } else if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        };
        next = tokio::select! {
            biased;
            received = l.consumer.recv() => match received {
                Ok(message) => Some(message),
                Err(error) => {
                    crate::connection::on_consumer_error(&error);
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
pub(super) async fn rewind<H>(
    l: &TransactionalLoop<'_, H>,
    positions: &Positions,
) -> anyhow::Result<()> {
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
