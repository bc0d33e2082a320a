//! The ceiling ingest is measured against: transactional producers with ingest's producer
//! configuration writing transactions of N records as fast as they can, each awaiting its
//! deliveries and then committing, which is what ingest does minus HTTP, parsing and checks.
//!   cargo run --release -p crm-sync-kafka --example raw_txn_producer -- <brokers> <topic> \
//!     [--producers 4] [--per-transaction 100] [--bytes 500] [--seconds 20]
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod support;

use std::time::{Duration, Instant};

use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// What each transaction writes.
struct Shape {
    topic: String,
    per_transaction: usize,
    bytes: usize,
}

/// One producer's transactions until `until`: the records it wrote and each transaction's
/// milliseconds.
async fn produce(
    producer: FutureProducer,
    n: usize,
    shape: Shape,
    until: Instant,
) -> (usize, Vec<f64>) {
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
    let payload = vec![b'x'; shape.bytes];
    let mut latencies = Vec::new();
    let mut records = 0usize;
    while Instant::now() < until {
        let t0 = Instant::now();
        producer.begin_transaction().unwrap();
        let mut deliveries = Vec::with_capacity(shape.per_transaction);
        for i in 0..shape.per_transaction {
            let key = format!("{n}/{records}/{i}");
            let record = FutureRecord::to(&shape.topic).key(&key).payload(&payload);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        for d in deliveries {
            d.await.unwrap().unwrap();
        }
        support::commit(&producer, true).await;
        records += shape.per_transaction;
        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    (records, latencies)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (args[1].clone(), args[2].clone());
    let producers = arg(&args, "--producers", 4);
    let per_transaction = arg(&args, "--per-transaction", 100);
    let bytes = arg(&args, "--bytes", 500);
    let seconds = arg(&args, "--seconds", 20) as u64;
    let settings = KafkaSettings::for_brokers(&brokers);
    crm_sync_kafka::admin::ensure_topics(&settings, std::slice::from_ref(&topic), 6)
        .await
        .unwrap();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..producers)
        .map(|n| {
            let id = format!("raw-txn-{}-{n}", std::process::id());
            let config =
                crm_sync_kafka::transactional::producer_config(&settings, "raw-txn-producer", &id);
            let shape = Shape {
                topic: topic.clone(),
                per_transaction,
                bytes,
            };
            tokio::spawn(async move { produce(config.create().unwrap(), n, shape, until).await })
        })
        .collect();
    let mut records = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        let (r, l) = task.await.unwrap();
        records += r;
        latencies.extend(l);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "raw transactional producer: {producers} producers, {per_transaction} records of {bytes} B per transaction: {:.0} records/s, {:.0} transactions/s; transaction p50 {:.1} ms p99 {:.1} ms",
        records as f64 / secs,
        latencies.len() as f64 / secs,
        at(0.5),
        at(0.99)
    );
}
