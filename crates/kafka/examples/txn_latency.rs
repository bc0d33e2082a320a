//! Times Kafka transactions of N messages on a real broker: where does a commit's time go?
//!   cargo run --release -p crm-sync-kafka --example txn_latency -- <brokers> <topic>[,<topic>…] [messages] [extra k=v…]
//! PAUSE_MS waits that long between a commit and the next transaction, ROUNDS sets how many (15),
//! SETTLE waits for librdkafka to release the delivered messages before committing (as the
//! services do).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;

struct Printing(Instant);
impl ClientContext for Printing {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        println!("{:>10.3?} {fac} {log_message}", self.0.elapsed());
    }
}
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let brokers = &args[1];
    // One topic, or several separated by commas: each transaction then writes to all of them.
    let topics: Vec<String> = args[2].split(',').map(str::to_owned).collect();
    let n: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(100);
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set(
            "transactional.id",
            format!("txn-latency-{}", std::process::id()),
        )
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("transaction.timeout.ms", "10000")
        .set("message.timeout.ms", "10000");
    for kv in args.iter().skip(4) {
        let (k, v) = kv.split_once('=').unwrap();
        config.set(k, v);
    }
    if config.get("debug").is_some() {
        config.set_log_level(RDKafkaLogLevel::Debug);
    }
    crm_sync_kafka::admin::ensure_topics(
        &crm_sync_runtime::settings::KafkaSettings::for_brokers(brokers),
        &topics,
        6,
    )
    .await
    .unwrap();
    let producer: FutureProducer<Printing> = config
        .create_with_context(Printing(Instant::now()))
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    // PAUSE_MS: idle time between a commit and the next transaction (a thin stream).
    let pause: u64 = std::env::var("PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        timed_round(&producer, &topics, n, round).await;
    }
}

/// One transaction of `n` messages, its phases timed and printed.
async fn timed_round(
    producer: &FutureProducer<Printing>,
    topics: &[String],
    n: usize,
    round: usize,
) {
    let t0 = Instant::now();
    producer.begin_transaction().unwrap();
    let mut futures = Vec::new();
    for i in 0..n {
        let key = format!("k{i}");
        let topic = &topics[i % topics.len()];
        futures.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload("x"))
                .map_err(|(e, _)| e)
                .unwrap(),
        );
    }
    let t1 = Instant::now();
    let mut first = None;
    for f in futures.iter_mut() {
        let _ = f.await;
        first.get_or_insert(t1.elapsed());
    }
    let last = t1.elapsed();
    support::commit(producer, std::env::var("SETTLE").is_ok()).await;
    let t2 = Instant::now();
    println!("{:>10.3?} round {round}", std::time::Instant::now());
    println!(
        "round {round}: enqueue {:?}, first delivery {:?}, last delivery {:?}, deliveries and commit {:?}, total {:?}",
        t1 - t0,
        first.unwrap(),
        last,
        t2 - t1,
        t2 - t0
    );
}
