//! Times Kafka transactions of N messages on a real broker: where does a commit's time go?
//!   cargo run --release -p crm-sync-kafka --example txn_latency -- <brokers> <topic> [messages] [extra k=v…]
#![allow(clippy::unwrap_used, clippy::expect_used)]
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
    let topic = &args[2];
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
    crm_sync_kafka::admin::ensure_topics(
        &crm_sync_runtime::settings::KafkaSettings::for_brokers(brokers),
        std::slice::from_ref(topic),
        6,
    )
    .await
    .unwrap();
    let producer: FutureProducer<Printing> = config
        .create_with_context(Printing(Instant::now()))
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    for round in 0..15 {
        let t0 = Instant::now();
        producer.begin_transaction().unwrap();
        let mut futures = Vec::new();
        for i in 0..n {
            let key = format!("k{i}");
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
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(30)))
            .await
            .unwrap()
            .unwrap();
        let t2 = Instant::now();
        println!("{:>10.3?} round {round}", std::time::Instant::now());
        println!(
            "round {round}: enqueue {:?}, last delivery {:?}, commit {:?}, total {:?}",
            t1 - t0,
            first.unwrap(),
            t2 - t1,
            t2 - t0
        );
    }
}
