//! The at-least-once consume loop (the provisioner's) on the real broker: a partition whose
//! handler is slow does not hold up the messages of the other partitions.

use std::sync::atomic::{AtomicBool, Ordering};
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
