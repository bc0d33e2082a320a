//! The at-least-once consume loop: a message's offset is stored only after its handler finished
//! (effects durable) or it was dead-lettered; transient failures are retried, never skipped.
//! Partitions are processed in parallel, each in order, by one worker task per partition; a
//! handler may limit how many of them handle a partial batch at once, so that a steady stream
//! makes fewer, larger batches (see [`MessageHandler::concurrent_partial_batches`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::consumer::ServiceConsumer;
use crate::dlq::{DeadLetter, publish_dead_letter};
use crate::health::LoopHealth;
pub use crate::message::{DATABASE_REFUSED, Failure, Incoming};
use crate::partition_registry::{PartitionRegistry, WorkerControl};
use crate::produce::Publisher;

/// A message of a batch, with its own `process` span (a child of the producer's trace context),
/// under which the handler does the work that belongs to this message alone (e.g. forwarding
/// what it caused), so each message's trace stays connected when messages are batched.
pub struct BatchItem<'a> {
    pub message: Incoming<'a>,
    pub span: tracing::Span,
}

pub trait MessageHandler: Send + Sync + 'static {
    fn handle(&self, message: &Incoming<'_>) -> impl Future<Output = Result<(), Failure>> + Send;

    /// How many consecutive messages of one partition, already waiting in its buffer,
    /// [`MessageHandler::handle_batch`] may take at once. 1 (the default) never batches. A
    /// worker never waits for a batch to fill: a lone message is handled at once.
    fn max_batch(&self) -> usize {
        1
    }

    /// How many partitions may handle a batch smaller than [`MessageHandler::max_batch`] at the
    /// same time; None (the default): every partition at once. A partition over the limit
    /// waits for another's batch to finish, and takes what arrived meanwhile into its own: a
    /// steady stream then costs fewer, larger batches instead of one small one per partition
    /// at once. A full batch (a backlog) never waits, so a backlog keeps every partition busy.
    fn concurrent_partial_batches(&self) -> Option<usize> {
        None
    }

    /// Handles consecutive messages of one partition, in order; `Ok` means the effects of all of
    /// them are durable (their offsets are then stored). On any error the consume loop handles the
    /// same messages again one by one with [`MessageHandler::handle`], which dead-letters or
    /// retries exactly as without batching, so a handler using this must be idempotent per
    /// message (a batch may have been partly applied before it failed).
    fn handle_batch(
        &self,
        items: &[BatchItem<'_>],
    ) -> impl Future<Output = Result<(), Failure>> + Send {
        async move {
            for item in items {
                self.handle(&item.message)
                    .instrument(item.span.clone())
                    .await?;
            }
            Ok(())
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Messages a service's consume loop buffers per partition (see
/// [`ConsumeLoop::buffer_per_partition`]). Deep enough that a partition whose worker is in a long
/// batch does not fill its buffer: intake waits on a full buffer, so one slow partition would
/// hold up every other partition's messages. librdkafka's bounded prefetch still bounds what is
/// read ahead, in bytes.
pub const PARTITION_BUFFER: usize = 1024;

pub struct ConsumeLoop<H> {
    pub service: String,
    pub consumer: Arc<ServiceConsumer>,
    pub handler: Arc<H>,
    pub dead_letters: Publisher,
    pub health: LoopHealth,
    pub shutdown: CancellationToken,
    /// Messages buffered per partition ahead of its worker: bounds memory, and a full buffer
    /// slows intake instead of growing a queue.
    pub buffer_per_partition: usize,
}

struct Shared<H> {
    service: String,
    consumer: Arc<ServiceConsumer>,
    handler: Arc<H>,
    dead_letters: Publisher,
    health: LoopHealth,
    /// Turns for partial batches (see [`MessageHandler::concurrent_partial_batches`]).
    partial_turns: Option<Arc<Semaphore>>,
}

struct Worker {
    queue: mpsc::Sender<OwnedMessage>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Runs until `shutdown` is cancelled. Each assigned partition gets its own worker task, so
/// partitions proceed in parallel while each stays in order; a message's offset is stored only
/// after its handler finished (or it was dead-lettered). On shutdown, intake stops, each worker
/// finishes the message in hand, and the stored offsets are committed.
pub async fn run_consumer<H: MessageHandler + 'static>(l: ConsumeLoop<H>) -> anyhow::Result<()> {
    let partial_turns = l
        .handler
        .concurrent_partial_batches()
        .map(|n| Arc::new(Semaphore::new(n.max(1))));
    let shared = Arc::new(Shared {
        service: l.service,
        consumer: l.consumer.clone(),
        handler: l.handler,
        dead_letters: l.dead_letters,
        health: l.health,
        partial_turns,
    });
    let registry = l.consumer.context().workers().clone();
    let mut workers: HashMap<(String, i32), Worker> = HashMap::new();
    loop {
        let received = tokio::select! {
            biased;
            _ = l.shutdown.cancelled() => break,
            received = l.consumer.recv() => received,
        };
        let message = match received {
            Ok(message) => message.detach(),
            Err(error) => {
                crate::connection::on_consumer_error(&error);
                continue;
            }
        };
        let key = (message.topic().to_owned(), message.partition());
        let reusable = workers
            .get(&key)
            .is_some_and(|w| !w.stop.is_cancelled() && !w.task.is_finished());
        if !reusable {
            let worker = Worker::spawn(
                &shared,
                &registry,
                &key,
                (l.buffer_per_partition, &l.shutdown),
            );
            workers.insert(key.clone(), worker);
            workers.retain(|_, w| !w.task.is_finished());
        }
        if let Some(worker) = workers.get(&key) {
            let message = match worker.queue.try_send(message) {
                Err(mpsc::error::TrySendError::Full(message)) => message,
                // Queued, or dropped because the worker was stopped meanwhile: the offset stays
                // unstored.
                _ => continue,
            };
            // A full buffer holds up every partition's intake, not only this one's: measured,
            // since it is what makes a slow partition delay the others.
            let blocked = Instant::now();
            tokio::select! {
                biased;
                _ = l.shutdown.cancelled() => break,
                _ = worker.queue.send(message) => {}
            }
            metrics::histogram!(crate::metric_definitions::INTAKE_BLOCKED, "topic" => key.0.clone())
                .record(blocked.elapsed().as_secs_f64());
        }
    }
    finish(workers, &l.consumer).await;
    Ok(())
}

impl Worker {
    /// A partition's worker task, registered so that a revoke can stop it and wait for it.
    fn spawn<H: MessageHandler + 'static>(
        shared: &Arc<Shared<H>>,
        registry: &PartitionRegistry,
        (topic, partition): &(String, i32),
        (buffer, shutdown): (usize, &CancellationToken),
    ) -> Worker {
        let (queue, inbox) = mpsc::channel(buffer.max(1));
        let stop = shutdown.child_token();
        let idle = Arc::new((Mutex::new(true), Condvar::new()));
        let handling = Arc::new(AtomicUsize::new(0));
        registry.register(
            topic,
            *partition,
            WorkerControl {
                stop: stop.clone(),
                idle: idle.clone(),
                queue: queue.downgrade(),
                handling: handling.clone(),
            },
        );
        let state = WorkerState {
            stop: stop.clone(),
            idle,
            handling,
        };
        let task = tokio::spawn(partition_worker(shared.clone(), inbox, state));
        Worker { queue, stop, task }
    }
}

/// Shutting down: each worker finishes the message in hand, then the stored offsets are
/// committed.
async fn finish(mut workers: HashMap<(String, i32), Worker>, consumer: &ServiceConsumer) {
    for worker in workers.values() {
        worker.stop.cancel();
    }
    for (_, worker) in workers.drain() {
        let _ = worker.task.await;
    }
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => tracing::info!("committed stored offsets"),
        Err(rdkafka::error::KafkaError::ConsumerCommit(
            rdkafka::types::RDKafkaErrorCode::NoOffset,
        )) => {}
        Err(error) => tracing::warn!(%error, "final offset commit failed"),
    }
}

/// What a partition's worker shares with the revoke callback and the lag gauge.
struct WorkerState {
    stop: CancellationToken,
    idle: Arc<(Mutex<bool>, Condvar)>,
    handling: Arc<AtomicUsize>,
}

async fn partition_worker<H: MessageHandler + 'static>(
    shared: Arc<Shared<H>>,
    mut inbox: mpsc::Receiver<OwnedMessage>,
    state: WorkerState,
) {
    let WorkerState {
        stop,
        idle,
        handling,
    } = state;
    let set_idle = |value: bool| {
        let (flag, changed) = &*idle;
        *lock(flag) = value;
        changed.notify_all();
    };
    let max_batch = shared.handler.max_batch().max(1);
    let mut batch: Vec<OwnedMessage> = Vec::with_capacity(max_batch);
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            message = inbox.recv() => match message {
                Some(message) => message,
                None => break,
            },
        };
        set_idle(false);
        batch.clear();
        batch.push(message);
        // Only what is already buffered: batching must never add latency to a lone message.
        take_buffered(&mut inbox, &mut batch, max_batch);
        handling.store(batch.len(), Ordering::Relaxed);
        let Some(mut turn) = partial_turn(&shared, &mut inbox, &mut batch, max_batch, &stop).await
        else {
            // Stopped while waiting: the batch's offsets stay unstored, its next owner replays it.
            break;
        };
        record_delay(&batch);
        handling.store(batch.len(), Ordering::Relaxed);
        let batched = batch.len() > 1 && process_batch(&shared, &batch).await;
        if batch.len() > 1 {
            // A failed batch is retried one by one below, on its own time, not on a turn.
            turn = None;
        }
        let done = if batched {
            store_offset(&shared, &batch[batch.len() - 1]);
            true
        } else {
            // One message, or a batch that failed: one by one, with dead letters and retries.
            let mut done = true;
            for message in &batch {
                done = process(&shared, message, &stop).await;
                if !done {
                    break;
                }
                store_offset(&shared, message);
            }
            done
        };
        drop(turn);
        handling.store(0, Ordering::Relaxed);
        set_idle(true);
        if !done {
            break;
        }
    }
    handling.store(0, Ordering::Relaxed);
    set_idle(true);
}

/// Moves what the partition's buffer already holds into the batch, up to `max_batch`.
fn take_buffered(
    inbox: &mut mpsc::Receiver<OwnedMessage>,
    batch: &mut Vec<OwnedMessage>,
    max_batch: usize,
) {
    while batch.len() < max_batch {
        match inbox.try_recv() {
            Ok(message) => batch.push(message),
            Err(_) => break,
        }
    }
}

/// A partial batch waits for its turn when the handler limits them, then takes what arrived
/// meanwhile. `Some(None)`: no turn needed (a full batch, or no limit); None: stopped while
/// waiting.
async fn partial_turn<H>(
    shared: &Shared<H>,
    inbox: &mut mpsc::Receiver<OwnedMessage>,
    batch: &mut Vec<OwnedMessage>,
    max_batch: usize,
    stop: &CancellationToken,
) -> Option<Option<OwnedSemaphorePermit>> {
    let turns = match &shared.partial_turns {
        Some(turns) if batch.len() < max_batch => turns.clone(),
        _ => return Some(None),
    };
    let turn = tokio::select! {
        biased;
        _ = stop.cancelled() => return None,
        turn = turns.acquire_owned() => turn.ok(),
    };
    take_buffered(inbox, batch, max_batch);
    Some(turn)
}

/// How long each message waited, from its record timestamp (when its producer created it) to its
/// handler starting on it: the queue in front of this service, as its consumers experience it.
fn record_delay(batch: &[OwnedMessage]) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for message in batch {
        if let Some(created_ms) = message.timestamp().to_millis() {
            metrics::histogram!(crate::metric_definitions::CONSUME_DELAY, "topic" => message.topic().to_owned())
                .record((now_ms - created_ms).max(0) as f64 / 1000.0);
        }
    }
}

fn store_offset<H>(shared: &Shared<H>, message: &OwnedMessage) {
    // store_offset stores offset + 1: the next message to read.
    if let Err(error) =
        shared
            .consumer
            .store_offset(message.topic(), message.partition(), message.offset())
    {
        // The partition was revoked meanwhile; its next owner replays the message.
        tracing::debug!(%error, "could not store offset");
    }
}

/// Hands consecutive messages to the handler at once; true if all their effects are durable.
/// A failure is not retried here: the caller falls back to one message at a time, which
/// classifies and retries each message exactly as without batching.
async fn process_batch<H: MessageHandler>(shared: &Shared<H>, batch: &[OwnedMessage]) -> bool {
    let started = Instant::now();
    let items: Vec<BatchItem<'_>> = batch
        .iter()
        .map(|message| {
            let message = Incoming::of(message);
            let span = message.span(&shared.service);
            BatchItem { message, span }
        })
        .collect();
    let topic = items[0].message.topic;
    let span = tracing::info_span!(
        "consume_batch",
        otel.name = format!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = items[0].message.partition.to_string(),
        messaging.batch.message_count = items.len(),
        messaging.consumer.group.name = shared.service.as_str(),
    );
    match shared
        .handler
        .handle_batch(&items)
        .instrument(span.clone())
        .await
    {
        Ok(()) => {
            for _ in &items {
                record(topic, "ok", started);
            }
            metrics::histogram!(crate::metric_definitions::BATCH_MESSAGES, "topic" => topic.to_owned())
                .record(items.len() as f64);
            shared.health.set_stuck(false);
            true
        }
        Err(failure) => {
            let error = match &failure {
                Failure::Permanent(letter) => format!("{}: {}", letter.reason, letter.detail),
                Failure::Transient(error) => format!("{error:#}"),
            };
            span.in_scope(|| {
                tracing::info!(
                    messages = items.len(),
                    error,
                    "batch failed; handling its messages one by one"
                )
            });
            metrics::counter!(crate::metric_definitions::BATCH_FALLBACKS, "topic" => topic.to_owned())
                .increment(1);
            false
        }
    }
}

/// Handles one message to completion; false if stopped during a retry (offset not stored).
async fn process<H: MessageHandler>(
    shared: &Shared<H>,
    message: &OwnedMessage,
    stop: &CancellationToken,
) -> bool {
    let incoming = Incoming::of(message);
    let span = incoming.span(&shared.service);
    let started = Instant::now();
    let mut backoff = crate::retry_backoff();
    let mut attempt: u32 = 0;
    loop {
        let outcome = shared
            .handler
            .handle(&incoming)
            .instrument(span.clone())
            .await;
        match outcome {
            Ok(()) => {
                record(incoming.topic, "ok", started);
                shared.health.set_stuck(false);
                return true;
            }
            Err(Failure::Permanent(letter)) => {
                span.in_scope(|| {
                    tracing::warn!(reason = letter.reason, detail = %letter.detail, "dead-lettering message")
                });
                // The dead letter must be durable before the offset moves past the original.
                let published = dead_letter(shared, &incoming, &letter, &mut backoff, stop)
                    .instrument(span.clone())
                    .await;
                if !published {
                    return false;
                }
                record(incoming.topic, "dead_lettered", started);
                shared.health.set_stuck(false);
                return true;
            }
            Err(Failure::Transient(error)) => {
                attempt += 1;
                metrics::counter!(crate::metric_definitions::RETRIES, "topic" => incoming.topic.to_owned())
                    .increment(1);
                span.in_scope(|| {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        attempt,
                        "transient failure; retrying"
                    )
                });
                if attempt >= 3 {
                    shared.health.set_stuck(true);
                }
                if !backoff.wait(stop).await {
                    return false;
                }
            }
        }
    }
}

/// Publishes the dead letter, retrying until it is durable; false if stopped first.
async fn dead_letter<H: MessageHandler>(
    shared: &Shared<H>,
    incoming: &Incoming<'_>,
    letter: &DeadLetter,
    backoff: &mut crm_sync_retry::Backoff,
    stop: &CancellationToken,
) -> bool {
    loop {
        match publish_dead_letter(&shared.dead_letters, &shared.service, incoming, letter).await {
            Ok(()) => return true,
            Err(error) => {
                tracing::warn!(%error, "dead-letter publish failed; retrying");
                shared.health.set_stuck(true);
                if !backoff.wait(stop).await {
                    return false;
                }
            }
        }
    }
}

fn record(topic: &str, outcome: &'static str, started: Instant) {
    metrics::counter!(crate::metric_definitions::MESSAGES_CONSUMED, "topic" => topic.to_owned(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(crate::metric_definitions::PROCESSING, "topic" => topic.to_owned())
        .record(started.elapsed().as_secs_f64());
}
