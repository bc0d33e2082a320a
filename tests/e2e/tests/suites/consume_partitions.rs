//! The at-least-once consume loop (the provisioner's) on the real broker: a partition whose
//! handler is slow does not hold up the messages of the other partitions, and partial batches
//! take turns when the handler limits them while a backlog's full batches do not.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_sync_e2e::{TestEnv, eventually, kafka_settings, producer};
use crm_sync_kafka::consume::PARTITION_BUFFER;
use crm_sync_kafka::{
    ConsumeLoop, Failure, Incoming, LoopHealth, MessageHandler, Publisher, run_consumer,
};
use rdkafka::producer::FutureRecord;
use tokio_util::sync::CancellationToken;

/// Never finishes a message of partition 0 (a batch stuck on a slow database); notes the
/// offsets of every other partition's messages it handled.
struct StuckOnPartitionZero {
    stuck: Arc<AtomicBool>,
    handled: Arc<Mutex<Vec<(i32, i64)>>>,
    release: CancellationToken,
}

impl MessageHandler for StuckOnPartitionZero {
    async fn handle(&self, message: &Incoming<'_>) -> Result<(), Failure> {
        if message.partition == 0 {
            self.stuck.store(true, Ordering::SeqCst);
            self.release.cancelled().await;
        }
        self.handled
            .lock()
            .unwrap()
            .push((message.partition, message.offset));
        Ok(())
    }
}

#[tokio::test]
async fn a_partition_stuck_behind_a_slow_batch_does_not_hold_up_the_others() {
    let env = TestEnv::new("partitions").await;
    let topic = env.topics.matches.clone();
    let send = |partition: i32, n: usize| {
        let producer = producer(&env);
        let topic = topic.clone();
        async move {
            for i in 0..n {
                let key = format!("k{i}");
                producer
                    .send(
                        FutureRecord::to(&topic)
                            .partition(partition)
                            .key(&key)
                            .payload("x"),
                        Duration::from_secs(10),
                    )
                    .await
                    .unwrap();
            }
        }
    };
    // More messages on partition 0 than the 64 its buffer used to hold (fewer than it holds
    // now): a full buffer stops intake for every partition until that partition's worker takes
    // its next message.
    send(0, 200).await;

    let settings = kafka_settings();
    let consumer =
        Arc::new(crm_sync_kafka::clients::consumer(&settings, "partitions-test", &env.id).unwrap());
    use rdkafka::consumer::Consumer as _;
    consumer.subscribe(&[&topic]).unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let stuck = Arc::new(AtomicBool::new(false));
    let release = CancellationToken::new();
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(run_consumer(ConsumeLoop {
        service: "partitions-test".to_owned(),
        consumer: consumer.clone(),
        handler: Arc::new(StuckOnPartitionZero {
            stuck: stuck.clone(),
            handled: handled.clone(),
            release: release.clone(),
        }),
        dead_letters: Publisher::new(crm_sync_kafka::clients::producer(&settings, "dlq").unwrap()),
        health: LoopHealth::ready(),
        shutdown: shutdown.clone(),
        buffer_per_partition: PARTITION_BUFFER,
    }));
    // Partition 0's messages are fetched (in one fetch: they are tiny) and its worker is stuck on
    // the first; only then does partition 1 get a message.
    eventually(
        "partition 0's worker stuck",
        Duration::from_secs(30),
        || {
            let stuck = stuck.load(Ordering::SeqCst);
            async move { stuck.then_some(()) }
        },
    )
    .await;
    send(1, 1).await;

    eventually(
        "partition 1's message handled while partition 0 is stuck",
        Duration::from_secs(20),
        || {
            let handled = handled.lock().unwrap().clone();
            async move { handled.iter().any(|(p, _)| *p == 1).then_some(()) }
        },
    )
    .await;
    assert!(
        handled.lock().unwrap().iter().all(|(p, _)| *p != 0),
        "partition 0 was stuck"
    );
    release.cancel();
    shutdown.cancel();
    loop_task.await.unwrap().unwrap();
}

/// Takes 50 ms per batch (or lone message) and notes how many were in hand at once.
#[derive(Default)]
struct TurnCounter {
    busy: AtomicUsize,
    most: AtomicUsize,
    handled: AtomicUsize,
}

impl TurnCounter {
    async fn work(&self, messages: usize) {
        let now = self.busy.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.busy.fetch_sub(1, Ordering::SeqCst);
        self.handled.fetch_add(messages, Ordering::SeqCst);
    }
}

struct Counted(Arc<TurnCounter>);

impl MessageHandler for Counted {
    async fn handle(&self, _message: &Incoming<'_>) -> Result<(), Failure> {
        self.0.work(1).await;
        Ok(())
    }

    fn max_batch(&self) -> usize {
        8
    }

    fn concurrent_partial_batches(&self) -> Option<usize> {
        Some(1)
    }

    async fn handle_batch(&self, items: &[crm_sync_kafka::BatchItem<'_>]) -> Result<(), Failure> {
        self.0.work(items.len()).await;
        Ok(())
    }
}

#[tokio::test]
async fn partial_batches_take_turns_and_a_backlog_does_not_wait() {
    let env = TestEnv::new("turns").await;
    let topic = env.topics.matches.clone();
    let producer = producer(&env);
    let send = |partition: i32, n: usize| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            for i in 0..n {
                let record = FutureRecord::to(&topic)
                    .partition(partition)
                    .key("k")
                    .payload("x");
                producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|(e, _)| panic!("sending {i}: {e}"));
            }
        }
    };
    // A backlog: every partition's buffer holds full batches before the loop starts.
    futures::future::join_all((0..3).map(|p| send(p, 40))).await;

    let settings = kafka_settings();
    let consumer =
        Arc::new(crm_sync_kafka::clients::consumer(&settings, "turns-test", &env.id).unwrap());
    use rdkafka::consumer::Consumer as _;
    consumer.subscribe(&[&topic]).unwrap();
    let counter = Arc::new(TurnCounter::default());
    let shutdown = CancellationToken::new();
    let loop_task = tokio::spawn(run_consumer(ConsumeLoop {
        service: "turns-test".to_owned(),
        consumer: consumer.clone(),
        handler: Arc::new(Counted(counter.clone())),
        dead_letters: Publisher::new(crm_sync_kafka::clients::producer(&settings, "dlq").unwrap()),
        health: LoopHealth::ready(),
        shutdown: shutdown.clone(),
        buffer_per_partition: PARTITION_BUFFER,
    }));
    let handled = |n: usize| {
        let counter = counter.clone();
        move || {
            let done = counter.handled.load(Ordering::SeqCst) >= n;
            async move { done.then_some(()) }
        }
    };
    eventually("the backlog handled", Duration::from_secs(30), handled(120)).await;
    assert!(
        counter.most.load(Ordering::SeqCst) >= 2,
        "full batches of several partitions were handled at the same time"
    );

    // A thin stream: a few messages on three partitions at once, each batch partial.
    counter.most.store(0, Ordering::SeqCst);
    futures::future::join_all((0..3).map(|p| send(p, 3))).await;
    eventually("the stream handled", Duration::from_secs(30), handled(129)).await;
    assert_eq!(
        counter.most.load(Ordering::SeqCst),
        1,
        "partial batches were handled one partition at a time"
    );
    shutdown.cancel();
    loop_task.await.unwrap().unwrap();
}
