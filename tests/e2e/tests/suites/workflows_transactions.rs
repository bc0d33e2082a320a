//! The evaluator's transactional consume→produce loop on the real broker, in-process: a handler
//! that fails transiently now and then (each failure aborts the open transaction and rewinds the
//! consumer) and replicas joining and leaving mid-stream (revocations abort the batch in hand)
//! still yield exactly one committed output per input, in the inputs' order, and the handler is
//! told of each input's commit exactly once, even though a batch commits while the next one is
//! handled and, with two producers, begins before the previous one committed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_sync_e2e::{Record, TestEnv, eventually, read_topic};
use crm_sync_kafka::transactional::{self, BatchLimits, TransactionalHandler, TransactionalLoop};
use crm_sync_kafka::{Failure, Incoming, LoopHealth, OutgoingMessage};
use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// Echoes every input to the output topic; the first attempt at the inputs whose ids end in
/// `fails` fails.
/// One per replica; what they fail and what they saw committed is shared.
struct FlakyEcho {
    output: String,
    fails: &'static str,
    failed: Arc<Mutex<HashSet<String>>>,
    failures: Arc<AtomicUsize>,
    /// The inputs handled in each uncommitted batch, oldest first; the last one is open.
    uncommitted: Mutex<VecDeque<Vec<String>>>,
    /// How often each input was reported committed.
    committed: Arc<Mutex<HashMap<String, usize>>>,
    /// Seals that left two batches sealed and uncommitted at once.
    overlaps: Arc<AtomicUsize>,
}

impl FlakyEcho {
    fn new(output: &str, fails: &'static str) -> FlakyEcho {
        FlakyEcho {
            output: output.to_owned(),
            fails,
            failed: Arc::default(),
            failures: Arc::default(),
            uncommitted: Mutex::default(),
            committed: Arc::default(),
            overlaps: Arc::default(),
        }
    }

    fn replica_of(&self) -> FlakyEcho {
        FlakyEcho {
            output: self.output.clone(),
            fails: self.fails,
            failed: self.failed.clone(),
            failures: self.failures.clone(),
            uncommitted: Mutex::new(VecDeque::from([Vec::new()])),
            committed: self.committed.clone(),
            overlaps: self.overlaps.clone(),
        }
    }
}

impl TransactionalHandler for FlakyEcho {
    async fn handle(&self, message: &Incoming<'_>) -> Result<Vec<OutgoingMessage>, Failure> {
        let id = String::from_utf8_lossy(message.payload.unwrap_or_default()).into_owned();
        if id.ends_with(self.fails) && self.failed.lock().unwrap().insert(id.clone()) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::transient(anyhow::anyhow!("flaky dependency")));
        }
        let mut uncommitted = self.uncommitted.lock().unwrap();
        uncommitted.back_mut().unwrap().push(id.clone());
        Ok(vec![OutgoingMessage {
            topic: self.output.as_str().into(),
            key: id.as_str().into(),
            payload: id.clone().into_bytes(),
            event_id: id,
            headers: Vec::new(),
            partition: None,
        }])
    }

    fn sealed(&self) {
        let mut uncommitted = self.uncommitted.lock().unwrap();
        uncommitted.push_back(Vec::new());
        if uncommitted.len() > 2 {
            self.overlaps.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn committed(&self, _written: &[transactional::Written]) {
        let batch = self.uncommitted.lock().unwrap().pop_front().unwrap();
        let mut committed = self.committed.lock().unwrap();
        for id in batch {
            *committed.entry(id).or_default() += 1;
        }
    }

    fn aborted(&self, _partitions: &[i32]) {
        *self.uncommitted.lock().unwrap() = VecDeque::from([Vec::new()]);
    }
}

fn settings(env: &TestEnv) -> KafkaSettings {
    KafkaSettings {
        consumer_group: format!("{}-transactions", env.id),
        ..KafkaSettings::for_brokers(&env.brokers)
    }
}

/// One replica of the loop, until `stop` is cancelled.
fn replica(
    env: &TestEnv,
    handler: Arc<FlakyEcho>,
    (name, producers): (&str, usize),
    stop: CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let kafka = settings(env);
    let topic = env.topics.events.clone();
    let transactional_id = format!("{}-{name}", env.id);
    let name = name.to_owned();
    tokio::spawn(async move {
        let consumer = transactional::consumer(&kafka, &name, &kafka.consumer_group)?;
        consumer.subscribe(&[&topic])?;
        transactional::run_transactional(TransactionalLoop {
            service: &name,
            topic: &topic,
            consumer: &consumer,
            producer_config: transactional::producer_config(&kafka, &name, &transactional_id),
            producers,
            handler: handler.as_ref(),
            health: LoopHealth::starting("Kafka transactions not initialized yet"),
            limits: BatchLimits::default(),
            shutdown: stop,
        })
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_and_rebalances_leave_exactly_one_output_per_input() {
    const INPUTS: usize = 1_000;
    let env = TestEnv::new("transactions").await;
    // Every 100th input fails once.
    let handler = FlakyEcho::new(&env.topics.matches, "07");

    // Inputs flow for about 3 s while replicas come and go.
    let sender = tokio::spawn(send_inputs(&env, INPUTS, 10, Duration::from_millis(30)));

    let stop_a = CancellationToken::new();
    let a = replica(
        &env,
        Arc::new(handler.replica_of()),
        ("replica-a", 1),
        stop_a.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A second replica joins: partitions move, revoking some from A mid-stream.
    let stop_b = CancellationToken::new();
    let b = replica(
        &env,
        Arc::new(handler.replica_of()),
        ("replica-b", 2),
        stop_b.clone(),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A leaves (SIGTERM-like): its batch in hand is committed, its partitions go to B.
    stop_a.cancel();
    a.await.unwrap().unwrap();
    sender.await.unwrap();

    let outputs = committed_outputs(&env, INPUTS).await;
    stop_b.cancel();
    b.await.unwrap().unwrap();
    let failures = exactly_once_in_order(&outputs, &handler, INPUTS);
    assert!(failures >= 10, "the abort path was exercised ({failures})");
}

/// A backlog is where the second producer's transaction begins before the first one's
/// committed; a transient failure then aborts both, and a replica stopped mid-backlog commits
/// both before it leaves. The outputs must still come once each, in the inputs' order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_on_two_producers_keeps_the_inputs_order_through_aborts() {
    const INPUTS: usize = 20_000;
    let env = TestEnv::new("transactions-backlog").await;
    // Every 1,000th input fails once: aborts, and long runs of batches between them.
    let handler = FlakyEcho::new(&env.topics.matches, "007");
    send_inputs(&env, INPUTS, 500, Duration::ZERO).await;

    let stop = CancellationToken::new();
    let first = replica(
        &env,
        Arc::new(handler.replica_of()),
        ("replica-1", 2),
        stop.clone(),
    );
    eventually(
        "a quarter of the inputs committed",
        Duration::from_secs(60),
        || async { (handler.committed.lock().unwrap().len() >= INPUTS / 4).then_some(()) },
    )
    .await;
    // Stopped (SIGTERM-like) mid-backlog: the batches in flight commit before it returns; the
    // next replica of the group goes on from their offsets.
    stop.cancel();
    first.await.unwrap().unwrap();
    let left = handler.committed.lock().unwrap().len();
    assert!(left < INPUTS, "stopped before the backlog's end ({left})");
    println!("the first replica left after {left} inputs committed");
    let stop = CancellationToken::new();
    let second = replica(
        &env,
        Arc::new(handler.replica_of()),
        ("replica-2", 2),
        stop.clone(),
    );
    let outputs = committed_outputs(&env, INPUTS).await;
    stop.cancel();
    second.await.unwrap().unwrap();
    let failures = exactly_once_in_order(&outputs, &handler, INPUTS);
    assert!(failures >= 20, "the abort path was exercised ({failures})");
    let overlaps = handler.overlaps.load(Ordering::Relaxed);
    assert!(
        overlaps >= 10,
        "a transaction began before the previous one committed"
    );
    println!("{overlaps} batches began while the previous one was committing");
}

/// Sends `input-00000`… keyed by themselves, `chunk` at a time with `pause` between chunks.
/// Idempotent, so that each partition holds the inputs in the order they were sent.
fn send_inputs(
    env: &TestEnv,
    inputs: usize,
    chunk: usize,
    pause: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let topic = env.topics.events.clone();
    async move {
        for chunk in (0..inputs).collect::<Vec<_>>().chunks(chunk) {
            let ids: Vec<String> = chunk.iter().map(|i| format!("input-{i:05}")).collect();
            futures::future::try_join_all(ids.iter().map(|id| {
                producer.send(
                    FutureRecord::to(&topic).key(id).payload(id),
                    Duration::from_secs(10),
                )
            }))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
            tokio::time::sleep(pause).await;
        }
    }
}

/// The committed outputs once there are `inputs` of them, read again after a while in which a
/// late duplicate would show up.
async fn committed_outputs(env: &TestEnv, inputs: usize) -> Vec<Record> {
    let outputs = eventually(
        "every input's output committed",
        Duration::from_secs(60),
        || async {
            let records = read_topic(&env.topics.matches).await;
            (records.len() >= inputs).then_some(records)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = read_topic(&env.topics.matches).await;
    if again.len() != outputs.len() {
        again
    } else {
        outputs
    }
}

/// Checks one output per input, in each partition in the inputs' order, and that the handler
/// was told of each commit once; the transient failures met.
fn exactly_once_in_order(outputs: &[Record], handler: &FlakyEcho, inputs: usize) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in outputs {
        *seen
            .entry(String::from_utf8(r.payload.clone()).unwrap())
            .or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:?}");
    assert_eq!(outputs.len(), inputs, "one output per input");
    // Output and input topics have as many partitions and the same key partitioner: each
    // output partition holds one input partition's outputs, which must follow its order.
    let mut by_partition: HashMap<i32, Vec<(i64, String)>> = HashMap::new();
    for r in outputs {
        let id = String::from_utf8(r.payload.clone()).unwrap();
        by_partition
            .entry(r.partition)
            .or_default()
            .push((r.offset, id));
    }
    for (partition, mut records) in by_partition {
        records.sort();
        let ids: Vec<&String> = records.iter().map(|(_, id)| id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "partition {partition}'s outputs out of the inputs' order: {ids:?}"
        );
    }
    assert_eq!(seen.len(), inputs);
    let committed = handler.committed.lock().unwrap().clone();
    let told_twice: Vec<_> = committed.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        told_twice.is_empty(),
        "commits reported twice: {told_twice:?}"
    );
    assert_eq!(
        committed.keys().collect::<HashSet<_>>(),
        seen.keys().collect::<HashSet<_>>(),
        "the handler is told of exactly the inputs whose outputs committed"
    );
    let failures = handler.failures.load(Ordering::Relaxed);
    println!("{failures} transient failures aborted and replayed their batches");
    failures
}
