//! A sustained load run: Salesforce Outbound Messages into ingest at a fixed rate for a fixed
//! time, through the whole pipeline, measuring the end-to-end latency from the CRM's request to
//! the `ActivityChanged` on `salesscreen.activities.v1`, the time each event spends in each hop,
//! the consumer groups' lag, and each service's resident memory (at start, at end, and its peak).
//!
//! Usage (the local stack must be up; only loopback addresses are used):
//!   loadrun [--seconds 600] [--rate 200] [--owners 100] [--backlog] [--timelines FILE]
//! `--timelines` writes every record's stamps to FILE as CSV.
//! `--backlog` starts the provisioner only once every request is answered, so that it starts
//! behind by every outcome of the run (e.g. `--seconds 20 --rate 5000`: 100,000 outcomes).
//! `tests/load/pipeline.sh` builds and runs it.
//!
//! Per-hop times come from what the pipeline records anyway, so that measuring costs the
//! services nothing: Kafka record timestamps (CreateTime, set when a service produces), the
//! moment this run's own `read_committed` reader sees a record (its transaction committed), and
//! the activity row's `created_at` (the start of the provisioner's database transaction).
//!
//! It also prints the CPU seconds each process used over the measured window (the services, the
//! Kafka broker, PostgreSQL, itself) against the machine's: on a small machine the pipeline's
//! latency is often the machine being saturated rather than any one hop's batching.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cpu;
mod report;

use report::{PROVISIONER_HISTOGRAMS, print_histograms, print_lag, print_rss, print_timelines};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crm_sync_e2e::salesforce::{Notification, outbound_message, won_opportunity};
use crm_sync_e2e::{Service, Tenant, TestEnv};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::ActivityChanged;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const BATCH: usize = 10;
const RECORD_PREFIX: &str = "006LD";

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

fn text_arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// Microseconds since the Unix epoch: the clock Kafka's record timestamps and PostgreSQL use.
fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Resident memory now (`VmRSS`) or at its peak so far (`VmHWM`), KiB.
fn memory_kib(service: &Service, field: &str) -> u64 {
    let Some(pid) = service.pid() else { return 0 };
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| {
            v.trim_start_matches(':')
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
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

/// When one record passed each point of the pipeline, µs since the Unix epoch (0: not seen).
#[derive(Default)]
struct Timeline {
    /// This run sent the request carrying the record.
    sent: AtomicU64,
    /// Ingest answered: the event is committed in `crm.events.v1`.
    answered: AtomicU64,
    /// The event's record timestamp: ingest produced it.
    event_produced: AtomicU64,
    /// The outcome's record timestamp: the evaluator consumed the event and produced it.
    outcome_produced: AtomicU64,
    /// This run's `read_committed` reader saw the outcome: the evaluator's transaction committed.
    outcome_visible: AtomicU64,
    /// The activity row's `created_at`: the provisioner's database transaction began.
    provisioner_began: AtomicU64,
    /// The `ActivityChanged`'s record timestamp: produced right after the database commit.
    change_produced: AtomicU64,
    /// This run's reader saw the `ActivityChanged`: Kafka acknowledged it.
    change_visible: AtomicU64,
}

impl Timeline {
    fn first(at: &AtomicU64, us: u64) -> bool {
        at.compare_exchange(0, us.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

type Timelines = Arc<Vec<Timeline>>;

/// The record number of a key `{integration}/{object}/{record_id}` or of a record id.
fn record_index(id: &str) -> Option<usize> {
    id.rsplit('/')
        .next()?
        .strip_prefix(RECORD_PREFIX)?
        .parse()
        .ok()
}

fn kafka_timestamp_us(m: &impl Message) -> u64 {
    m.timestamp()
        .to_millis()
        .map_or(0, |ms| ms.max(0) as u64 * 1000)
}

/// Reads the events, outcomes and `ActivityChanged`s as a `read_committed` consumer, stamping
/// each record's timeline, until every record's `ActivityChanged` arrived (or 120 s of silence).
fn spawn_collector(env: &TestEnv, timelines: Timelines) -> tokio::task::JoinHandle<usize> {
    let topics = env.topics.clone();
    let brokers = env.brokers.clone();
    tokio::spawn(async move {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("loadrun-{}", uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // A record seen late is counted against the hop before it: at most 20 ms late here.
            // Fetches that returned at every commit (about 200 a second at 1,000 events/s) cost
            // the broker more CPU than any one service's fetches; this run measures, it should
            // not load the machine it measures.
            .set("fetch.wait.max.ms", "20")
            .set("fetch.min.bytes", "1048576")
            .create()
            .unwrap();
        consumer
            .subscribe(&[&topics.events, &topics.matches, &topics.activities])
            .unwrap();
        let total = timelines.len();
        let mut delivered = 0;
        while delivered < total {
            let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(120), consumer.recv()).await
            else {
                break;
            };
            let seen = now_us();
            let produced = kafka_timestamp_us(&m);
            let topic = m.topic();
            let index = if topic == topics.activities {
                ActivityChanged::decode(m.payload().unwrap_or_default())
                    .ok()
                    .and_then(|c| record_index(&c.record_id))
            } else {
                m.key()
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .and_then(record_index)
            };
            let Some(t) = index.and_then(|i| timelines.get(i)) else {
                continue;
            };
            if topic == topics.events {
                Timeline::first(&t.event_produced, produced);
            } else if topic == topics.matches {
                Timeline::first(&t.outcome_produced, produced);
                Timeline::first(&t.outcome_visible, seen);
            } else if Timeline::first(&t.change_visible, seen) {
                Timeline::first(&t.change_produced, produced);
                delivered += 1;
            }
        }
        delivered
    })
}

/// Stamps when the provisioner's transaction that created each activity began.
async fn read_activity_rows(env: &TestEnv, timelines: &Timelines) {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT record_id, (extract(epoch FROM created_at) * 1000000)::bigint FROM activities",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    for (record_id, began) in rows {
        if let Some(t) = record_index(&record_id).and_then(|i| timelines.get(i)) {
            Timeline::first(&t.provisioner_began, began.max(0) as u64);
        }
    }
}

type Stamp = fn(&Timeline) -> &AtomicU64;

/// The hops of the table: name, from, to.
const HOPS: [(&str, Stamp, Stamp); 9] = [
    (
        "ingest: request -> answer (Kafka committed)",
        |t| &t.sent,
        |t| &t.answered,
    ),
    (
        "  of which request -> event produced",
        |t| &t.sent,
        |t| &t.event_produced,
    ),
    (
        "crm.events.v1: answer -> evaluator consumed",
        |t| &t.answered,
        |t| &t.outcome_produced,
    ),
    (
        "  (record timestamp -> evaluator consumed)",
        |t| &t.event_produced,
        |t| &t.outcome_produced,
    ),
    (
        "evaluator: consumed -> transaction committed",
        |t| &t.outcome_produced,
        |t| &t.outcome_visible,
    ),
    (
        "crm.matches.v1: committed -> provisioner began",
        |t| &t.outcome_visible,
        |t| &t.provisioner_began,
    ),
    (
        "provisioner: began -> database committed",
        |t| &t.provisioner_began,
        |t| &t.change_produced,
    ),
    (
        "ActivityChanged: produced -> acknowledged",
        |t| &t.change_produced,
        |t| &t.change_visible,
    ),
    (
        "end to end: request -> ActivityChanged",
        |t| &t.sent,
        |t| &t.change_visible,
    ),
];

/// Every record's timeline as CSV (µs since the Unix epoch, 0 = not seen), for looking at how a
/// hop's wait changes over the run.
fn write_timelines(path: &str, timelines: &[Timeline]) {
    let mut csv = String::from(
        "sent,answered,event_produced,outcome_produced,outcome_visible,provisioner_began,change_produced,change_visible\n",
    );
    for t in timelines {
        let stamps = [
            &t.sent,
            &t.answered,
            &t.event_produced,
            &t.outcome_produced,
            &t.outcome_visible,
            &t.provisioner_began,
            &t.change_produced,
            &t.change_visible,
        ]
        .map(|a| a.load(Ordering::Relaxed).to_string());
        csv.push_str(&stamps.join(","));
        csv.push('\n');
    }
    if let Err(e) = std::fs::write(path, csv) {
        eprintln!("writing the timelines to {path}: {e}");
    }
}

/// Records sent in a run's first seconds are left out of the steady-state table: the services
/// then create the owners' accounts and warm their caches, one transaction each.
const WARM_UP_US: u64 = 10_000_000;

/// The per-hop table of the records sent at `since_us` or later.
fn print_hops(title: &str, timelines: &[Timeline], since_us: u64) {
    println!(
        "{:<48} {:>8} {:>8} {:>8} {:>8} {:>7}",
        title, "p50", "p95", "p99", "max", "n"
    );
    for (name, from, to) in HOPS {
        let mut ms: Vec<f64> = timelines
            .iter()
            .filter(|t| t.sent.load(Ordering::Relaxed) >= since_us)
            .filter_map(|t| {
                let (a, b) = (
                    from(t).load(Ordering::Relaxed),
                    to(t).load(Ordering::Relaxed),
                );
                // Clocks of different sources agree to the millisecond (Kafka's resolution).
                (a > 0 && b > 0).then(|| b.saturating_sub(a) as f64 / 1000.0)
            })
            .collect();
        ms.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{:<48} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>7}",
            name,
            percentile(&ms, 0.50),
            percentile(&ms, 0.95),
            percentile(&ms, 0.99),
            ms.last().copied().unwrap_or(f64::NAN),
            ms.len()
        );
    }
}

/// Consumer lag of the evaluator and the provisioner, every 10 s.
fn spawn_lag_sampler(
    env: &TestEnv,
    samples: Arc<std::sync::Mutex<Vec<(i64, i64)>>>,
) -> tokio::task::JoinHandle<()> {
    let (brokers, id, topics) = (env.brokers.clone(), env.id.clone(), env.topics.clone());
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
}

/// Sends every record at `rate`, in requests of [`BATCH`]; returns the failed requests.
async fn send_all(
    url: String,
    organization_id: &str,
    rate: f64,
    owners: usize,
    timelines: &Timelines,
) -> u64 {
    let total = timelines.len();
    let client = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for start in (0..total).step_by(BATCH) {
        ticker.tick().await;
        let records = start..(start + BATCH).min(total);
        let ids: Vec<(String, String, String)> = records
            .clone()
            .map(|i| {
                (
                    format!("04lLD{i:013}"),
                    format!("{RECORD_PREFIX}{i:013}"),
                    format!("005LOADOWNER{:05}", i % owners),
                )
            })
            .collect();
        let notifications: Vec<Notification<'_>> = ids
            .iter()
            .map(|(n, r, o)| won_opportunity(n, r, o, "100.00"))
            .collect();
        let xml = outbound_message(organization_id, &notifications);
        let (client, url, timelines, failures) = (
            client.clone(),
            url.clone(),
            timelines.clone(),
            failures.clone(),
        );
        tasks.spawn(async move {
            let sent = now_us();
            let ok = client
                .post(&url)
                .header("content-type", "text/xml")
                .body(xml)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            let answered = now_us();
            for i in records {
                timelines[i].sent.store(sent, Ordering::Relaxed);
                timelines[i].answered.store(answered, Ordering::Relaxed);
            }
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
    failures.load(Ordering::Relaxed)
}

/// As deployed (docker-compose and the Kubernetes manifests configure an encryption key), the
/// provisioner reads API credentials and prepares directory lookups for the accounts it creates:
/// the local development key.
const PROVISIONER_ENV: &[(&str, &str)] = &[(
    "CRM_SYNC__SECRETS__ENCRYPTION_KEY",
    "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=",
)];

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 600.0);
    let rate = arg("--rate", 200.0);
    let owners = arg("--owners", 100.0) as usize;
    let backlog = flag("--backlog");
    let total = (seconds * rate) as usize;
    let env = TestEnv::new("loadrun").await;
    let tenant = Tenant::create(&env.pool, "load", true, true).await;
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let mut provisioner = if backlog {
        None
    } else {
        Some(
            env.start_service("provisioner", "provisioner", PROVISIONER_ENV)
                .await,
        )
    };
    let later = if backlog {
        ", provisioner started after the last request"
    } else {
        ""
    };
    println!(
        "loadrun: {total} events at {rate}/s for {seconds}s ({owners} owners{later}); logs in {}",
        env.log_dir.display()
    );
    let mut rss_start: Vec<(String, u64)> = running(&ingest, &evaluator, &provisioner)
        .iter()
        .map(|s| (s.name.clone(), memory_kib(s, "VmRSS")))
        .collect();

    let timelines: Timelines = Arc::new((0..total).map(|_| Timeline::default()).collect());
    let collector = spawn_collector(&env, timelines.clone());
    let lag_samples = Arc::new(std::sync::Mutex::new(Vec::<(i64, i64)>::new()));
    let sampler = spawn_lag_sampler(&env, lag_samples.clone());

    let mut processes = cpu::Groups {
        services: running(&ingest, &evaluator, &provisioner)
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.pid()?)))
            .collect(),
        run_backends: run_backends(&env).await,
    };
    let cpu_start = cpu::read(&processes);
    let origin = std::time::Instant::now();
    let url = ingest.url(&tenant.outbound_message_path());
    let failures = send_all(url, &tenant.organization_id, rate, owners, &timelines).await;
    let send_secs = origin.elapsed().as_secs_f64();
    if provisioner.is_none() {
        let started = env
            .start_service("provisioner", "provisioner", PROVISIONER_ENV)
            .await;
        rss_start.push((started.name.clone(), memory_kib(&started, "VmRSS")));
        // Started after the last request: its CPU counts from its start.
        processes
            .services
            .extend(started.pid().map(|pid| (started.name.clone(), pid)));
        provisioner = Some(started);
    }
    let delivered = collector.await.unwrap();
    let total_secs = origin.elapsed().as_secs_f64();
    add_new_backends(&env, &mut processes).await;
    let cpu_end = cpu::read(&processes);
    sampler.abort();
    read_activity_rows(&env, &timelines).await;
    let services = running(&ingest, &evaluator, &provisioner);
    let samples = lag_samples.lock().unwrap().clone();

    println!("\n== load run: {total} events offered at {rate}/s");
    println!(
        "sent in {send_secs:.1}s ({:.0} events/s), failed requests {failures}",
        total as f64 / send_secs,
    );
    println!("delivered {delivered} of {total} ActivityChanged in {total_secs:.1}s");
    print_timelines(&timelines, seconds);
    print_lag(&samples);
    cpu::print(&cpu_start, &cpu_end);
    if let Some(provisioner) = &provisioner {
        print_histograms(provisioner, PROVISIONER_HISTOGRAMS).await;
    }
    print_rss(&services, &rss_start);
}

/// The services started so far.
fn running<'a>(
    ingest: &'a Service,
    evaluator: &'a Service,
    provisioner: &'a Option<Service>,
) -> Vec<&'a Service> {
    [ingest, evaluator].into_iter().chain(provisioner).collect()
}

/// Backends the services' pools opened during the run count too.
async fn add_new_backends(env: &TestEnv, processes: &mut cpu::Groups) {
    for pid in run_backends(env).await {
        if !processes.run_backends.contains(&pid) {
            processes.run_backends.push(pid);
        }
    }
}

/// The PostgreSQL backends connected to the run's database (the services' pools).
async fn run_backends(env: &TestEnv) -> Vec<u32> {
    sqlx::query_scalar::<_, i32>(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap_or_default()
    .into_iter()
    .filter_map(|pid| u32::try_from(pid).ok())
    .collect()
}
