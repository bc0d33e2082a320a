//! A sustained load run: Salesforce Outbound Messages into ingest at a fixed rate for a fixed
//! time, through the whole pipeline, measuring the end-to-end latency from the CRM's request to
//! the `ActivityChanged` on `salesscreen.activities.v1`, the consumer groups' lag, and each
//! service's resident memory at start and end.
//!
//! Usage (the local stack must be up; only loopback addresses are used):
//!   loadrun [--seconds 600] [--rate 200] [--owners 100]
//! `tests/load/pipeline.sh` builds and runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crm_sync_e2e::salesforce::{Notification, outbound_message, won_opportunity};
use crm_sync_e2e::{Service, Tenant, TestEnv};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::ActivityChanged;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const BATCH: usize = 10;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn rss_kib(service: &Service) -> u64 {
    let Some(pid) = service.pid() else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Messages not yet consumed by `group` on `topic` (committed offsets vs high watermarks).
fn lag(brokers: &str, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..crm_sync_e2e::PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) else {
        return -1;
    };
    committed
        .elements()
        .iter()
        .map(|e| {
            let (low, high) = consumer
                .fetch_watermarks(topic, e.partition(), Duration::from_secs(5))
                .unwrap_or((0, 0));
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            (high - at).max(0)
        })
        .sum()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 600.0);
    let rate = arg("--rate", 200.0);
    let owners = arg("--owners", 100.0) as usize;
    let total = (seconds * rate) as usize;
    let env = TestEnv::new("loadrun").await;
    let tenant = Tenant::create(&env.pool, "load", true, true).await;
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let services = [&ingest, &evaluator, &provisioner];
    let rss_start: Vec<u64> = services.iter().map(|s| rss_kib(s)).collect();
    println!(
        "loadrun: {total} events at {rate}/s for {seconds}s ({owners} owners); logs in {}",
        env.log_dir.display()
    );

    let origin = Instant::now();
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());

    // Latency collector: every ActivityChanged, matched to its request by record id.
    let collector = {
        let sent_at = sent_at.clone();
        let topic = env.topics.activities.clone();
        let brokers = env.brokers.clone();
        tokio::spawn(async move {
            let consumer: StreamConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", format!("loadrun-{}", uuid::Uuid::new_v4()))
                .set("auto.offset.reset", "earliest")
                .set("isolation.level", "read_committed")
                .create()
                .unwrap();
            consumer.subscribe(&[&topic]).unwrap();
            let mut latencies = Vec::with_capacity(total);
            let mut seen = vec![false; total];
            while latencies.len() < total {
                let Ok(Ok(m)) =
                    tokio::time::timeout(Duration::from_secs(120), consumer.recv()).await
                else {
                    break;
                };
                let arrived = origin.elapsed().as_nanos() as u64;
                let Ok(change) = ActivityChanged::decode(m.payload().unwrap_or_default()) else {
                    continue;
                };
                let Some(i) = change
                    .record_id
                    .strip_prefix("006LD")
                    .and_then(|n| n.parse::<usize>().ok())
                else {
                    continue;
                };
                if i < total && !seen[i] {
                    seen[i] = true;
                    let sent = sent_at[i].load(Ordering::Relaxed);
                    latencies.push((arrived.saturating_sub(sent)) as f64 / 1e6);
                }
            }
            latencies
        })
    };

    // Sampler: consumer lag every 10 s.
    let lag_samples = Arc::new(std::sync::Mutex::new(Vec::<(i64, i64)>::new()));
    let sampler = {
        let (brokers, id, topics, samples) = (
            env.brokers.clone(),
            env.id.clone(),
            env.topics.clone(),
            lag_samples.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let (b, i, t) = (brokers.clone(), id.clone(), topics.clone());
                let sample = tokio::task::spawn_blocking(move || {
                    (
                        lag(&b, &format!("{i}-workflow-evaluator"), &t.events),
                        lag(&b, &format!("{i}-provisioner"), &t.matches),
                    )
                })
                .await
                .unwrap();
                samples.lock().unwrap().push(sample);
            }
        })
    };

    // Sender: batches at a fixed rate, each batch's send time recorded for its records.
    let client = reqwest::Client::new();
    let url = ingest.url(&tenant.outbound_message_path());
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for start in (0..total).step_by(BATCH) {
        ticker.tick().await;
        let ids: Vec<(String, String, String)> = (start..(start + BATCH).min(total))
            .map(|i| {
                (
                    format!("04lLD{i:013}"),
                    format!("006LD{i:013}"),
                    format!("005LOADOWNER{:05}", i % owners),
                )
            })
            .collect();
        let notifications: Vec<Notification<'_>> = ids
            .iter()
            .map(|(n, r, o)| won_opportunity(n, r, o, "100.00"))
            .collect();
        let xml = outbound_message(&tenant.organization_id, &notifications);
        let (client, url, sent_at, failures) = (
            client.clone(),
            url.clone(),
            sent_at.clone(),
            failures.clone(),
        );
        tasks.spawn(async move {
            let now = origin.elapsed().as_nanos() as u64;
            for i in start..(start + BATCH).min(total) {
                sent_at[i].store(now, Ordering::Relaxed);
            }
            let ok = client
                .post(&url)
                .header("content-type", "text/xml")
                .body(xml)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if !ok {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done.unwrap();
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let send_secs = origin.elapsed().as_secs_f64();
    let mut latencies = collector.await.unwrap();
    let total_secs = origin.elapsed().as_secs_f64();
    sampler.abort();
    let rss_end: Vec<u64> = services.iter().map(|s| rss_kib(s)).collect();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let samples = lag_samples.lock().unwrap().clone();
    let max_lag = |f: fn(&(i64, i64)) -> i64| samples.iter().map(f).max().unwrap_or(0);
    let avg_lag = |f: fn(&(i64, i64)) -> i64| {
        if samples.is_empty() {
            0.0
        } else {
            samples.iter().map(f).sum::<i64>() as f64 / samples.len() as f64
        }
    };

    println!("\n== load run: {total} events offered at {rate}/s");
    println!(
        "sent in {send_secs:.1}s ({:.0} events/s), failed requests {}",
        total as f64 / send_secs,
        failures.load(Ordering::Relaxed)
    );
    println!(
        "delivered {} of {total} ActivityChanged in {total_secs:.1}s",
        latencies.len()
    );
    println!(
        "end-to-end latency ms: p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "consumer lag (messages, sampled every 10 s): evaluator avg {:.1} max {}, provisioner avg {:.1} max {}",
        avg_lag(|s| s.0),
        max_lag(|s| s.0),
        avg_lag(|s| s.1),
        max_lag(|s| s.1)
    );
    for ((s, start), end) in services.iter().zip(&rss_start).zip(&rss_end) {
        println!(
            "RSS {:<20} start {:>7} KiB  end {:>7} KiB",
            s.name, start, end
        );
    }
}
