//! The chaos suite: drives CRM events through ingest at a steady rate while killing services,
//! restarting Kafka and PostgreSQL, scaling consumers and injecting poison messages at seeded
//! random times; then waits for the pipeline to drain and checks the ledger: nothing lost,
//! nothing doubled, every poison message dead-lettered and nothing else.
//!
//! Usage (the local stack must be up; it bounces Kafka and PostgreSQL, so run it alone):
//!   chaos [--events N] [--rate EVENTS_PER_SEC] [--seed S] [--owners K] [--skip FAULT]...
//! (FAULT e.g. `restart postgres`; CRM_SYNC_TEST_BROKERS / CRM_SYNC_TEST_DATABASE_URL pick the stack.)
//! `tests/chaos/run.sh` builds and runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crm_sync_e2e::salesforce::{Notification, outbound_message, won_opportunity};
use crm_sync_e2e::{Service, Tenant, TestEnv, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::ActivityChanged;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Mutex;

struct Options {
    events: usize,
    rate: f64,
    seed: u64,
    owners: usize,
    /// Faults not to inject, e.g. `restart postgres` when other work shares the local stack.
    skip: Vec<String>,
}

fn options() -> Options {
    let mut o = Options {
        events: 20_000,
        rate: 400.0,
        seed: 42,
        owners: 50,
        skip: Vec::new(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--events" => o.events = value.parse().expect("--events N"),
            "--rate" => o.rate = value.parse().expect("--rate EVENTS_PER_SEC"),
            "--seed" => o.seed = value.parse().expect("--seed S"),
            "--owners" => o.owners = value.parse().expect("--owners K"),
            "--skip" => o.skip.push(value.to_owned()),
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

const BATCH: usize = 10;

fn record_id(i: usize) -> String {
    format!("006CH{i:013}")
}
fn notification_id(i: usize) -> String {
    format!("04lCH{i:013}")
}
fn owner(i: usize, owners: usize) -> String {
    format!("005CHAOSOWNER{:05}", i % owners)
}
fn amount(i: usize) -> String {
    format!("{}.{:02}", 100 + i % 900, i % 100)
}

/// The replicas of one service; killed ones are restarted as the same replica (record store,
/// transactional id) on the same port.
struct Fleet {
    binary: &'static str,
    /// Each replica's name and the service running it.
    replicas: Vec<(String, Service)>,
    started: usize,
}

impl Fleet {
    async fn start(env: &TestEnv, binary: &'static str) -> Fleet {
        let mut fleet = Fleet {
            binary,
            replicas: Vec::new(),
            started: 0,
        };
        fleet.add_new(env).await;
        fleet
    }

    async fn add_new(&mut self, env: &TestEnv) {
        let replica = format!("{}-r{}", self.binary, self.started + 1);
        self.add(env, replica, 0).await;
    }

    /// Starts `replica` on `port` (0: a port the system picks).
    async fn add(&mut self, env: &TestEnv, replica: String, port: u16) {
        self.started += 1;
        let label = format!("{}-{}", self.binary, self.started);
        let service = env
            .start_replica(self.binary, &label, &replica, port, &[])
            .await;
        self.replicas.push((replica, service));
    }

    async fn kill_one(&mut self, env: &TestEnv, rng: &mut StdRng) {
        let i = rng.random_range(0..self.replicas.len());
        let (replica, service) = self.replicas.remove(i);
        let port = service.port();
        service.kill().await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
        self.add(env, replica, port).await;
    }

    async fn scale_to(&mut self, env: &TestEnv, n: usize) {
        while self.replicas.len() < n {
            self.add_new(env).await;
        }
        while self.replicas.len() > n {
            let (_, service) = self.replicas.pop().unwrap();
            let status = service.terminate().await;
            assert!(
                status.success(),
                "{} exited with {status} on SIGTERM",
                self.binary
            );
        }
    }

    /// Replicas that died without being killed by the suite.
    fn unexpected_exits(&mut self) -> Vec<String> {
        self.replicas
            .iter_mut()
            .filter_map(|(_, s)| s.exited().map(|status| format!("{} ({status})", s.name)))
            .collect()
    }
}

#[derive(Default)]
struct Faults {
    log: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let o = options();
    let stack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/stack.sh");
    let env = TestEnv::new("chaos").await;
    let tenant = Tenant::create(&env.pool, "chaos", true, true).await;
    println!(
        "chaos: {} events at {}/s, {} owners, seed {}; logs in {}",
        o.events,
        o.rate,
        o.owners,
        o.seed,
        env.log_dir.display()
    );

    let ingest = Arc::new(Mutex::new(Fleet::start(&env, "ingest").await));
    let ingest_port = ingest.lock().await.replicas[0].1.port();
    let evaluators = Arc::new(Mutex::new(Fleet::start(&env, "workflow-evaluator").await));
    let provisioners = Arc::new(Mutex::new(Fleet::start(&env, "provisioner").await));

    let started = Instant::now();
    let posted = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send_all(
        o.events,
        o.owners,
        o.rate,
        ingest_port,
        tenant.clone(),
        posted.clone(),
        retries.clone(),
    ));

    // Faults at seeded random times while the events flow.
    let mut rng = StdRng::seed_from_u64(o.seed);
    let send_secs = o.events as f64 / o.rate;
    let mut plan: Vec<&str> = vec![
        "kill ingest",
        "kill ingest",
        "kill workflow-evaluator",
        "kill workflow-evaluator",
        "kill provisioner",
        "kill provisioner",
        "restart kafka",
        "restart postgres",
        "scale workflow-evaluator",
        "scale provisioner",
        "poison",
        "poison",
        "poison",
    ];
    plan.retain(|f| !o.skip.iter().any(|s| s == f));
    // Shuffle (Fisher-Yates with the seeded generator, so a seed reproduces the run).
    for i in (1..plan.len()).rev() {
        let j = rng.random_range(0..=i);
        plan.swap(i, j);
    }
    let gap = Duration::from_secs_f64((send_secs / plan.len() as f64).max(0.5));
    let mut faults = Faults::default();
    let mut poison_ids: HashSet<String> = HashSet::new();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    for fault in plan {
        tokio::time::sleep(gap.mul_f64(rng.random_range(0.5..1.5))).await;
        let at = started.elapsed().as_secs_f64();
        match fault {
            "kill ingest" => ingest.lock().await.kill_one(&env, &mut rng).await,
            "kill workflow-evaluator" => evaluators.lock().await.kill_one(&env, &mut rng).await,
            "kill provisioner" => provisioners.lock().await.kill_one(&env, &mut rng).await,
            "restart kafka" => run_stack(&stack, "restart-kafka").await,
            "restart postgres" => run_stack(&stack, "restart-postgres").await,
            "scale workflow-evaluator" => {
                evaluators.lock().await.scale_to(&env, 3).await;
                tokio::time::sleep(gap).await;
                evaluators.lock().await.scale_to(&env, 1).await;
            }
            "scale provisioner" => {
                provisioners.lock().await.scale_to(&env, 3).await;
                tokio::time::sleep(gap).await;
                provisioners.lock().await.scale_to(&env, 1).await;
            }
            "poison" => {
                for topic in [&env.topics.events, &env.topics.matches] {
                    let id = format!("poison-{}", poison_ids.len());
                    let headers =
                        rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                            key: "crm-sync-event-id",
                            value: Some(id.as_bytes()),
                        });
                    let garbage: Vec<u8> = (0..32).map(|_| rng.random::<u8>() | 0x80).collect();
                    producer
                        .send(
                            FutureRecord::to(topic)
                                .key(&id)
                                .payload(&garbage)
                                .headers(headers),
                            Duration::from_secs(60),
                        )
                        .await
                        .map_err(|(e, _)| e)
                        .expect("injecting a poison message");
                    poison_ids.insert(id);
                }
            }
            _ => unreachable!(),
        }
        println!("  {at:7.1}s  {fault}");
        faults.log.push(fault.to_owned());
    }

    sender.await.unwrap();
    let sent_secs = started.elapsed().as_secs_f64();
    println!(
        "all {} events acknowledged by ingest after {sent_secs:.1}s; draining",
        o.events
    );

    // Drain: every activity recorded and announced. Announcements a killed provisioner left in
    // the outbox go out once the relay sweeps them up (after they count as abandoned), which can
    // be well after the last activity was recorded.
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (n, outbox): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM activities), (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap_or((0, 0));
        if (n as usize >= o.events && outbox == 0) || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (outbox_left,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    let drained_secs = started.elapsed().as_secs_f64();

    // The ledger.
    let mut checks: Vec<(String, bool)> = Vec::new();
    let rows: Vec<(String, String, String, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT a.record_id, a.value::text, a.crm_user_id, i.user_id FROM activities a
         LEFT JOIN crm_identities i ON i.integration_id = a.integration_id AND i.crm_user_id = a.crm_user_id
         WHERE a.user_id IS NOT DISTINCT FROM i.user_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let by_record: HashMap<&str, (&str, &str, bool)> = rows
        .iter()
        .map(|(r, v, o, u)| (r.as_str(), (v.as_str(), o.as_str(), u.is_some())))
        .collect();
    let mut lost = 0;
    let mut wrong = 0;
    for i in 0..o.events {
        match by_record.get(record_id(i).as_str()) {
            None => lost += 1,
            Some((value, own, mapped)) => {
                let same_value =
                    value.parse::<rust_decimal::Decimal>().ok() == amount(i).parse().ok();
                if !same_value || *own != owner(i, o.owners) || !mapped {
                    wrong += 1;
                }
            }
        }
    }
    let (activity_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM activities")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    checks.push((format!("activities: {} expected, {activity_rows} in PostgreSQL, {lost} lost, {wrong} with a wrong value/user", o.events), lost == 0 && wrong == 0 && activity_rows as usize == o.events));

    let users: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM users")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let owners_expected = o.owners.min(o.events);
    checks.push((
        format!(
            "users: {} for {owners_expected} distinct CRM owners",
            users.len()
        ),
        users.len() == owners_expected,
    ));

    let changes = read_topic(&env.topics.activities).await;
    let mut seen_changes: HashMap<String, usize> = HashMap::new();
    let mut announced: HashSet<String> = HashSet::new();
    for record in &changes {
        let change = ActivityChanged::decode(record.payload.as_slice()).unwrap();
        *seen_changes.entry(change.change_id).or_default() += 1;
        announced.insert(change.activity_id);
    }
    let duplicate_messages: usize = seen_changes.values().map(|n| n - 1).sum();
    let db_ids: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM activities")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let unannounced = db_ids
        .iter()
        .filter(|(id,)| !announced.contains(&id.to_string()))
        .count();
    checks.push((format!("salesscreen.activities: {} messages, {} activities announced, {unannounced} never announced, {duplicate_messages} duplicate messages (deduplicated by change_id), outbox left {outbox_left}", changes.len(), announced.len()), unannounced == 0));

    let mut dead: Vec<String> = Vec::new();
    for topic in [
        format!("{}.dlq", env.topics.events),
        format!("{}.dlq", env.topics.matches),
    ] {
        for record in read_topic(&topic).await {
            dead.push(
                record
                    .header("crm-sync-event-id")
                    .unwrap_or("<no id>")
                    .to_owned(),
            );
        }
    }
    let dead_set: HashSet<&String> = dead.iter().collect();
    let missing_poison = poison_ids.iter().filter(|p| !dead_set.contains(p)).count();
    let not_poison = dead.iter().filter(|d| !poison_ids.contains(*d)).count();
    checks.push((format!("dead letters: {} injected, {} in DLQs, {missing_poison} poison missing, {not_poison} non-poison", poison_ids.len(), dead.len()), missing_poison == 0 && not_poison == 0));

    let mut exits = Vec::new();
    for fleet in [&ingest, &evaluators, &provisioners] {
        exits.extend(fleet.lock().await.unexpected_exits());
    }
    checks.push((
        format!(
            "unexpected service exits: {}",
            if exits.is_empty() {
                "none".to_owned()
            } else {
                exits.join(", ")
            }
        ),
        exits.is_empty(),
    ));

    println!("\n== chaos ledger (seed {})", o.seed);
    println!(
        "events sent {}, ingest retries {}, acknowledged after {sent_secs:.1}s, drained after {drained_secs:.1}s",
        posted.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed)
    );
    println!(
        "faults injected ({}): {}",
        faults.log.len(),
        summarize(&faults.log)
    );
    let mut failed = 0;
    for (line, ok) in &checks {
        println!("  [{}] {line}", if *ok { "ok" } else { "FAIL" });
        if !*ok {
            failed += 1;
        }
    }
    println!("chaos: {} passed, {failed} failed", checks.len() - failed);
    for fleet in [&ingest, &evaluators, &provisioners] {
        let mut fleet = fleet.lock().await;
        for (_, service) in fleet.replicas.drain(..) {
            service.kill().await;
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn summarize(log: &[String]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for f in log {
        match counts.iter_mut().find(|(k, _)| k == f) {
            Some((_, n)) => *n += 1,
            None => counts.push((f.clone(), 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run_stack(script: &PathBuf, command: &str) {
    let status = tokio::process::Command::new("bash")
        .arg(script)
        .arg(command)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(status.success(), "stack.sh {command} failed");
}

/// Posts every event in batches at a steady rate, retrying each batch until ingest acknowledges
/// it, the way Salesforce retries an Outbound Message.
async fn send_all(
    events: usize,
    owners: usize,
    rate: f64,
    port: u16,
    tenant: Tenant,
    posted: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}{}", tenant.outbound_message_path());
    let interval = Duration::from_secs_f64(BATCH as f64 / rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for start in (0..events).step_by(BATCH) {
        ticker.tick().await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let ids: Vec<(String, String, String, String)> = (start..(start + BATCH).min(events))
            .map(|i| {
                (
                    notification_id(i),
                    record_id(i),
                    owner(i, owners),
                    amount(i),
                )
            })
            .collect();
        let notifications: Vec<Notification<'_>> = ids
            .iter()
            .map(|(n, r, o, a)| won_opportunity(n, r, o, a))
            .collect();
        let xml = outbound_message(&tenant.organization_id, &notifications);
        let (client, url, posted, retries) =
            (client.clone(), url.clone(), posted.clone(), retries.clone());
        let count = ids.len() as u64;
        tasks.spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(300);
            let mut backoff = Duration::from_millis(100);
            loop {
                let ok = match client
                    .post(&url)
                    .header("content-type", "text/xml")
                    .body(xml.clone())
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        r.text().await.is_ok_and(|b| b.contains("<Ack>true</Ack>"))
                    }
                    _ => false,
                };
                if ok {
                    posted.fetch_add(count, Ordering::Relaxed);
                    break;
                }
                retries.fetch_add(1, Ordering::Relaxed);
                assert!(
                    Instant::now() < deadline,
                    "ingest did not accept a batch within 300 s"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            drop(permit);
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
    }
}
