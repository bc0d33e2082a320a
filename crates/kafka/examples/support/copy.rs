//! What the two copies (`raw_copy`, `core_copy`) share: their arguments, how many records each
//! message is copied to, and the figures they print.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Instant;

pub struct Args {
    pub brokers: String,
    pub from: String,
    pub state_topic: String,
    pub out_topic: String,
    pub group: String,
    pub events: u64,
    pub records_per_event: f64,
    pub outcome_bytes: usize,
    pub max_messages: usize,
}

/// `--name value` pairs; `name` goes in front of the default group's name.
pub fn args(name: &str) -> Args {
    let mut map = BTreeMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        map.insert(flag.trim_start_matches("--").to_owned(), value);
    }
    let get = |k: &str| {
        map.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("--{k} is required"))
    };
    let pid = std::process::id();
    Args {
        brokers: get("brokers"),
        from: get("from"),
        state_topic: get("state-topic"),
        out_topic: get("out-topic"),
        group: map.get("group").cloned().unwrap_or(format!("{name}-{pid}")),
        events: get("events").parse().expect("--events: a count"),
        records_per_event: map
            .get("records-per-event")
            .map_or(10.0, |r| r.parse().expect("--records-per-event: a number")),
        outcome_bytes: map
            .get("outcome-bytes")
            .map_or(250, |b| b.parse().expect("--outcome-bytes: a count")),
        max_messages: map
            .get("max-messages")
            .map_or(500, |m| m.parse().expect("--max-messages: a count")),
    }
}

impl Args {
    /// Records the `index`th message copied is written to: `records_per_event` is a mean
    /// (5.95 writes 5 or 6) so that the total comes out right.
    pub fn records_of(&self, index: u64) -> u64 {
        let upto = |n: u64| (n as f64 * self.records_per_event).round() as u64;
        upto(index + 1) - upto(index)
    }
}

/// User and system CPU seconds of this process.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Counted from the first committed transaction on (start-up and the consumer group's join
/// left out, as `tests/load/evaluator.sh` does for the evaluator).
pub struct Tally {
    pub done: u64,
    pub written: u64,
    pub transactions: u64,
    first: Option<(Instant, u64, f64)>,
}

impl Tally {
    pub fn new() -> Tally {
        Tally {
            done: 0,
            written: 0,
            transactions: 0,
            first: None,
        }
    }

    /// A transaction of `events` committed.
    pub fn committed(&mut self, events: u64) {
        self.done += events;
        self.transactions += 1;
        let done = self.done;
        self.first
            .get_or_insert_with(|| (Instant::now(), done, cpu_seconds()));
    }

    /// The line `tests/load/evaluator.sh` reads, `name` first.
    pub fn line(&self, name: &str) -> String {
        let (t0, n0, c0) = self.first.expect("at least one transaction");
        let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let events = (self.done - n0) as f64;
        format!(
            "{name} events={} seconds={secs:.2} events_per_second={:.0} cpu_seconds={cpu:.1} events_per_cpu_second={:.0} records_per_event={:.2} transactions={} events_per_transaction={:.0}",
            self.done,
            events / secs,
            events / cpu.max(0.01),
            self.written as f64 / self.done as f64,
            self.transactions,
            self.done as f64 / self.transactions as f64,
        )
    }
}
