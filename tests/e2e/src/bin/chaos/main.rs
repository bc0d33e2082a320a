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

mod faults;
mod fleet;
mod ledger;
mod send;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crm_sync_e2e::{Tenant, TestEnv};

use fleet::Fleets;
use ledger::Check;

pub struct Options {
    pub events: usize,
    pub rate: f64,
    pub seed: u64,
    pub owners: usize,
    /// Faults not to inject, e.g. `restart postgres` when other work shares the local stack.
    pub skip: Vec<String>,
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

pub fn record_id(i: usize) -> String {
    format!("006CH{i:013}")
}
pub fn notification_id(i: usize) -> String {
    format!("04lCH{i:013}")
}
pub fn owner(i: usize, owners: usize) -> String {
    format!("005CHAOSOWNER{:05}", i % owners)
}
pub fn amount(i: usize) -> String {
    format!("{}.{:02}", 100 + i % 900, i % 100)
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
    let mut fleets = Fleets::start(&env).await;
    let ingest_port = fleets.ingest.replicas[0].1.port();

    let started = Instant::now();
    let sent = Arc::new(send::Sent::default());
    let sender = tokio::spawn(send::send_all(
        o.events,
        o.owners,
        o.rate,
        ingest_port,
        tenant.clone(),
        sent.clone(),
    ));
    let injected = faults::inject(&env, &mut fleets, &o, started, &stack).await;
    sender.await.unwrap();
    let sent_secs = started.elapsed().as_secs_f64();
    println!(
        "all {} events acknowledged by ingest after {sent_secs:.1}s; draining",
        o.events
    );
    let outbox_left = ledger::drain(&env, o.events).await;
    let drained_secs = started.elapsed().as_secs_f64();

    let checks = vec![
        ledger::activities(&env, &o).await,
        ledger::users(&env, &o).await,
        ledger::announcements(&env, outbox_left).await,
        ledger::dead_letters(&env, &injected.poison_ids).await,
        fleets.exits_check(),
    ];
    println!("\n== chaos ledger (seed {})", o.seed);
    println!(
        "events sent {}, ingest retries {}, acknowledged after {sent_secs:.1}s, drained after {drained_secs:.1}s",
        sent.posted.load(Ordering::Relaxed),
        sent.retries.load(Ordering::Relaxed)
    );
    println!(
        "faults injected ({}): {}",
        injected.log.len(),
        summarize(&injected.log)
    );
    let failed = report(&checks);
    fleets.kill_all().await;
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints the ledger's lines; how many failed.
fn report(checks: &[Check]) -> usize {
    let mut failed = 0;
    for (line, ok) in checks {
        println!("  [{}] {line}", if *ok { "ok" } else { "FAIL" });
        if !*ok {
            failed += 1;
        }
    }
    println!("chaos: {} passed, {failed} failed", checks.len() - failed);
    failed
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
