//! Publishing a request's messages all or nothing: every request's messages go into a Kafka
//! transaction, so `read_committed` consumers see a whole batch or none of it, also when Kafka
//! fails half-way through a batch of 100 notifications.
//!
//! Each of a few committer tasks owns a transactional producer (`<transactional.id>-<n>`).
//! Requests arriving while the committers are busy wait and then share the next free one's
//! transaction (group commit), so a commit round trip is paid per group, not per request, and
//! several transactions are in flight at once (one producer's next transaction cannot start
//! until the broker finished the previous one's markers). The first committer takes every
//! request it finds; the others are spares that take a group only when [`SPARE_AFTER`]
//! requests are queueing behind busy committers, so that a trickle of requests costs the
//! broker one committer's transactions and a burst gets several at once. If a shared
//! transaction fails, its requests are tried again one per transaction, so that one request's
//! undeliverable message (e.g. larger than the topic allows) fails only that request.
//!
//! `transactional.id` is stable per replica (see [`crate::txn_producer::transactional_id`]): a
//! restarted replica aborts what its predecessor left open at once; otherwise the coordinator
//! aborts it after [`crate::txn_producer::TRANSACTION_TIMEOUT`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::clients::ServiceProducer as FutureProducer;
use crate::headers;
use crate::produce::{OutgoingMessage, producer_span, record_headers};
use crate::txn_producer::{TxnError, TxnProducer, classify, enqueue, recreate};

/// A transaction takes at most this many messages (whole requests: a larger request gets a
/// transaction of its own).
const MAX_MESSAGES_PER_TRANSACTION: usize = 5_000;
/// How long a transaction that found requests queueing waits for more (see [`gather`]).
const GATHER: Duration = Duration::from_millis(3);
/// Requests waiting for the committer at most; beyond it requests wait to be queued.
const QUEUE_DEPTH: usize = 1_024;
/// Requests queueing before a spare committer takes them: fewer wait for the first committer's
/// next transaction (every transaction costs the broker about a dozen requests, whatever its
/// size).
const SPARE_AFTER: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum AtomicPublishError {
    #[error("Kafka transactions are not initialized yet")]
    NotReady,
    #[error("the publisher has stopped")]
    Stopped,
    #[error("the Kafka transaction was aborted: {0}")]
    Aborted(String),
}

impl AtomicPublishError {
    /// A short label for `error.type` and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AtomicPublishError::NotReady => "not_ready",
            AtomicPublishError::Stopped => "stopped",
            AtomicPublishError::Aborted(_) => "transaction_aborted",
        }
    }
}

/// Where Kafka wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub partition: i32,
    pub offset: i64,
}

struct Prepared {
    topic: Arc<str>,
    key: Arc<str>,
    payload: Vec<u8>,
    headers: OwnedHeaders,
}

type Reply = oneshot::Sender<Result<Vec<Written>, AtomicPublishError>>;

struct Job {
    messages: Vec<Prepared>,
    done: Reply,
}

/// Hands requests' messages to the committer tasks. Cheap to clone.
#[derive(Clone)]
pub struct AtomicPublisher {
    jobs: mpsc::Sender<Job>,
    ready: Arc<[AtomicBool]>,
    /// Wakes a spare committer when requests queue.
    backlog: Arc<Notify>,
}

/// The committer tasks; they end once every [`AtomicPublisher`] clone is dropped and the
/// requests in hand are answered.
pub struct Committer {
    tasks: Vec<JoinHandle<()>>,
    stop_initializing: CancellationToken,
}

impl Committer {
    /// Waits for the committers to answer the requests they hold, at most `grace`.
    pub async fn finish(self, grace: Duration) {
        self.stop_initializing.cancel();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("the Kafka committers did not finish within the grace period");
        }
    }
}

type Queue = Arc<tokio::sync::Mutex<mpsc::Receiver<Job>>>;

impl AtomicPublisher {
    /// Starts `producers` committers with a transactional producer configuration (see
    /// [`crate::txn_producer::producer_config`]); the n-th uses `<transactional.id>-<n>`. The
    /// first takes every request, the others only a backlog (see [`SPARE_AFTER`]).
    /// Transactions are initialized in the background; until one committer is ready
    /// [`AtomicPublisher::ready`] is false and publishing fails fast.
    pub fn start(config: ClientConfig, producers: usize) -> (AtomicPublisher, Committer) {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let queue: Queue = Arc::new(tokio::sync::Mutex::new(queue));
        let ready: Arc<[AtomicBool]> = (0..producers.max(1))
            .map(|_| AtomicBool::new(false))
            .collect();
        let stop_initializing = CancellationToken::new();
        let backlog = Arc::new(Notify::new());
        let tasks = crate::txn_producer::numbered_configs(&config, ready.len())
            .into_iter()
            .enumerate()
            .map(|(n, config)| {
                let take = match n {
                    0 => Take::Every,
                    _ => Take::Backlog(backlog.clone()),
                };
                tokio::spawn(commit_loop(
                    config,
                    queue.clone(),
                    Readiness {
                        all: ready.clone(),
                        n,
                    },
                    stop_initializing.clone(),
                    take,
                ))
            })
            .collect();
        (
            AtomicPublisher {
                jobs,
                ready,
                backlog,
            },
            Committer {
                tasks,
                stop_initializing,
            },
        )
    }

    /// For `/readyz`.
    pub fn ready(&self) -> bool {
        self.ready.iter().any(|r| r.load(Ordering::Relaxed))
    }

    /// Writes every message in one transaction and returns once it is committed, with where
    /// each was written (in the order given). On error none of them is visible to
    /// `read_committed` consumers.
    ///
    /// Each message gets a producer span under the current span, and its `traceparent` names
    /// that span, so a consumer's span becomes its child.
    pub async fn publish_all(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Written>, AtomicPublishError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if !self.ready() {
            return Err(AtomicPublishError::NotReady);
        }
        let spans: Vec<tracing::Span> = messages.iter().map(producer_span).collect();
        let prepared = messages
            .iter()
            .zip(&spans)
            .map(|(m, span)| Prepared {
                topic: m.topic.clone(),
                key: m.key.clone(),
                payload: m.payload.clone(),
                headers: record_headers(m, &headers::trace_context_of(span)),
            })
            .collect();
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                messages: prepared,
                done,
            })
            .await
            .map_err(|_| AtomicPublishError::Stopped)?;
        if self.jobs.max_capacity() - self.jobs.capacity() >= SPARE_AFTER {
            self.backlog.notify_one();
        }
        let result = answer.await.unwrap_or(Err(AtomicPublishError::Stopped));
        match &result {
            Ok(written) => {
                for ((m, span), w) in messages.iter().zip(&spans).zip(written) {
                    span.record(
                        "messaging.destination.partition.id",
                        w.partition.to_string(),
                    );
                    span.record("messaging.kafka.offset", w.offset);
                    metrics::counter!(crate::metric_definitions::MESSAGES_PRODUCED, "topic" => m.topic.clone())
                        .increment(1);
                }
            }
            Err(error) => {
                for (m, span) in messages.iter().zip(&spans) {
                    span.record("otel.status_code", "ERROR");
                    span.record("error.type", error.kind());
                    metrics::counter!(crate::metric_definitions::PRODUCE_ERRORS, "topic" => m.topic.clone())
                        .increment(1);
                }
            }
        }
        result
    }
}

/// One committer's slot in the publisher's readiness.
struct Readiness {
    all: Arc<[AtomicBool]>,
    n: usize,
}

impl Readiness {
    fn set(&self, ready: bool) {
        if let Some(flag) = self.all.get(self.n) {
            flag.store(ready, Ordering::Relaxed);
        }
    }
}

/// Which requests a committer takes.
enum Take {
    /// Every request, as soon as it is queued.
    Every,
    /// Only a backlog: woken when [`SPARE_AFTER`] requests queue, it takes them if they still
    /// do, and ends once shutdown began and nothing is queued.
    Backlog(Arc<Notify>),
}

/// The next group of requests for a committer; None when it should end.
async fn next_group(queue: &Queue, take: &Take, finishing: &CancellationToken) -> Option<Vec<Job>> {
    loop {
        if let Take::Backlog(backlog) = take {
            tokio::select! {
                _ = backlog.notified() => {}
                _ = finishing.cancelled() => {}
            }
        }
        // Taken under the lock, so each request lands in exactly one committer's group.
        let mut queue = queue.lock().await;
        let first = match take {
            Take::Every => queue.recv().await?,
            Take::Backlog(_) if finishing.is_cancelled() && queue.is_empty() => return None,
            Take::Backlog(_) if queue.len() < SPARE_AFTER && !finishing.is_cancelled() => continue,
            Take::Backlog(_) => match queue.try_recv() {
                Ok(job) => job,
                Err(mpsc::error::TryRecvError::Empty) => continue,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
            },
        };
        return Some(gather(&mut queue, first, GATHER).await);
    }
}

async fn commit_loop(
    config: ClientConfig,
    queue: Queue,
    ready: Readiness,
    stop_initializing: CancellationToken,
    take: Take,
) {
    let Some(mut producer) = TxnProducer::start(config, &stop_initializing).await else {
        return;
    };
    ready.set(true);
    loop {
        let Some(group) = next_group(&queue, &take, &stop_initializing).await else {
            return;
        };
        let count: usize = group.iter().map(|j| j.messages.len()).sum();
        let span = tracing::debug_span!(
            "kafka_transaction",
            requests = group.len(),
            messages = count
        );
        let outcome = write(&producer, &group).instrument(span).await;
        let (failed, fatal) = match outcome {
            Ok(written) => {
                for (job, w) in group.into_iter().zip(written) {
                    let _ = job.done.send(Ok(w));
                }
                continue;
            }
            Err((kind, reason)) => (reason, kind == TxnError::Fatal),
        };
        if fatal {
            let Some(fresh) = replace(producer, &ready, &stop_initializing).await else {
                fail_all(group, &failed);
                return;
            };
            producer = fresh;
        }
        if group.len() == 1 {
            fail_all(group, &failed);
            continue;
        }
        // Find the request that cannot be written instead of failing all of them.
        tracing::info!(requests = group.len(), error = %failed, "a shared transaction failed; writing its requests one by one");
        for job in group {
            match write(&producer, std::slice::from_ref(&job)).await {
                Ok(mut written) => {
                    let _ = job.done.send(Ok(written.pop().unwrap_or_default()));
                }
                Err((kind, reason)) => {
                    let _ = job.done.send(Err(AtomicPublishError::Aborted(reason)));
                    if kind == TxnError::Fatal {
                        let Some(fresh) = replace(producer, &ready, &stop_initializing).await
                        else {
                            return;
                        };
                        producer = fresh;
                    }
                }
            }
        }
    }
}

/// The first request and those queued behind it, up to a transaction's size. Requests found
/// queueing mean commits are the bottleneck (each costs the broker about as much whatever its
/// size): the group then waits up to `window` for more to join, so one commit serves them all.
/// A lone request goes at once.
async fn gather(queue: &mut mpsc::Receiver<Job>, first: Job, window: Duration) -> Vec<Job> {
    let deadline = tokio::time::Instant::now() + window;
    let mut count = first.messages.len();
    let mut group = vec![first];
    while count < MAX_MESSAGES_PER_TRANSACTION {
        let job = match queue.try_recv() {
            Ok(job) => job,
            Err(mpsc::error::TryRecvError::Empty) if group.len() > 1 => {
                match tokio::time::timeout_at(deadline, queue.recv()).await {
                    Ok(Some(job)) => job,
                    _ => break,
                }
            }
            Err(_) => break,
        };
        count += job.messages.len();
        group.push(job);
    }
    group
}

/// A new producer in place of an unusable one, not ready meanwhile; None if shut down.
async fn replace(
    producer: TxnProducer,
    ready: &Readiness,
    stop_initializing: &CancellationToken,
) -> Option<TxnProducer> {
    ready.set(false);
    let fresh = recreate(producer, stop_initializing).await?;
    ready.set(true);
    Some(fresh)
}

fn fail_all(group: Vec<Job>, reason: &str) {
    for job in group {
        let _ = job
            .done
            .send(Err(AtomicPublishError::Aborted(reason.to_owned())));
    }
}

/// One transaction with the group's messages: committed, with where each message went, or
/// aborted (and how the producer failed).
async fn write(
    producer: &TxnProducer,
    group: &[Job],
) -> Result<Vec<Vec<Written>>, (TxnError, String)> {
    if let Err(error) = producer.producer.begin_transaction() {
        return Err((classify(&error), format!("begin_transaction: {error}")));
    }
    let mut deliveries: Vec<Vec<DeliveryFuture>> = Vec::with_capacity(group.len());
    let mut failed: Option<String> = None;
    'jobs: for job in group {
        let mut futures = Vec::with_capacity(job.messages.len());
        for m in &job.messages {
            match send(&producer.producer, m).await {
                Ok(future) => futures.push(future),
                Err(error) => {
                    failed = Some(format!("producing to {}: {error}", m.topic));
                    break 'jobs;
                }
            }
        }
        deliveries.push(futures);
    }
    // Every delivery is awaited before committing: librdkafka's commit would flush them itself,
    // but waits in 100 ms polling steps, which made every request take ~110 ms.
    let mut written = Vec::with_capacity(deliveries.len());
    if failed.is_none() {
        'delivered: for futures in deliveries {
            let mut places = Vec::with_capacity(futures.len());
            for future in futures {
                match future.await {
                    Ok(Ok(d)) => places.push(Written {
                        partition: d.partition,
                        offset: d.offset,
                    }),
                    Ok(Err((error, _))) => {
                        failed = Some(format!("a delivery failed: {error}"));
                        break 'delivered;
                    }
                    Err(_) => {
                        failed = Some("a delivery was cancelled".to_owned());
                        break 'delivered;
                    }
                }
            }
            written.push(places);
        }
    }
    let committed = match failed {
        Some(reason) => Err((TxnError::Abortable, reason)),
        None => producer
            .commit_delivered()
            .await
            .map_err(|kind| (kind, "commit_transaction failed".to_owned())),
    };
    match committed {
        Ok(()) => {
            metrics::counter!(crate::metric_definitions::TRANSACTIONS, "result" => "committed")
                .increment(1);
            Ok(written)
        }
        Err((kind, reason)) => {
            metrics::counter!(crate::metric_definitions::TRANSACTIONS, "result" => "aborted")
                .increment(1);
            tracing::warn!(reason, ?kind, "aborting the Kafka transaction");
            if kind != TxnError::Fatal && producer.abort().await.is_err() {
                return Err((TxnError::Fatal, reason));
            }
            Err((kind, reason))
        }
    }
}

async fn send(producer: &FutureProducer, m: &Prepared) -> Result<DeliveryFuture, KafkaError> {
    let record = FutureRecord::to(&m.topic)
        .key(m.key.as_bytes())
        .payload(&m.payload)
        .headers(m.headers.clone());
    enqueue(producer, record).await
}

impl Default for Written {
    fn default() -> Self {
        Written {
            partition: -1,
            offset: -1,
        }
    }
}

#[cfg(test)]
#[path = "atomic_tests.rs"]
mod tests;
