//! CPU time per process over the measured window, read from `/proc`: whether the machine is
//! simply saturated (every process of the pipeline, the broker and the database share its
//! cores) or which process to make cheaper.

use std::collections::HashMap;
use std::time::Instant;

/// The broker's main class on its command line (`kafka-server-start.sh` and the local stack
/// both start it so).
const KAFKA_MAIN_CLASS: &str = "kafka.Kafka";

/// CPU ticks (user + system) of each process of a group, by pid.
type Ticks = HashMap<u32, u64>;

/// One reading of everything the table compares.
pub struct Reading {
    at: Instant,
    groups: Vec<(String, Ticks)>,
    /// Ticks of every core: busy (not idle, not waiting for I/O) and all.
    machine_busy: u64,
    machine_all: u64,
    load_average: String,
}

/// The processes to account for: a name and how to find their pids now.
pub struct Groups {
    pub services: Vec<(String, u32)>,
    /// PostgreSQL backends serving the run's database (asked from the database at each reading).
    pub run_backends: Vec<u32>,
}

fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some(user + system)
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn pids_where(test: impl Fn(u32) -> bool) -> Vec<u32> {
    all_pids().into_iter().filter(|&pid| test(pid)).collect()
}

fn is_kafka_broker(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|&b| b == 0)
                .any(|arg| arg == KAFKA_MAIN_CLASS.as_bytes())
        })
        .unwrap_or(false)
}

fn is_postgres(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
}

fn ticks_of(pids: &[u32]) -> Ticks {
    pids.iter()
        .filter_map(|&pid| Some((pid, process_ticks(pid)?)))
        .collect()
}

/// Busy and all ticks of the machine (`/proc/stat`'s first line).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let all: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (all - idle.min(all), all)
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

pub fn read(groups: &Groups) -> Reading {
    let mut read: Vec<(String, Ticks)> = groups
        .services
        .iter()
        .map(|(name, pid)| (name.clone(), ticks_of(&[*pid])))
        .collect();
    read.push((
        "Kafka broker".to_owned(),
        ticks_of(&pids_where(is_kafka_broker)),
    ));
    read.push((
        "PostgreSQL: this run's backends".to_owned(),
        ticks_of(&groups.run_backends),
    ));
    read.push((
        "PostgreSQL: whole server".to_owned(),
        ticks_of(&pids_where(is_postgres)),
    ));
    read.push((
        "loadrun (this process)".to_owned(),
        ticks_of(&[std::process::id()]),
    ));
    let (machine_busy, machine_all) = machine_ticks();
    Reading {
        at: Instant::now(),
        groups: read,
        machine_busy,
        machine_all,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .unwrap_or_default(),
    }
}

/// CPU seconds a group used between the two readings. A process that started in between counts
/// from zero; one that ended in between is missed (the services' connections live all run).
fn used(before: &Ticks, after: &Ticks) -> u64 {
    after
        .iter()
        .map(|(pid, t)| t.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum()
}

pub fn print(start: &Reading, end: &Reading) {
    let hz = clock_ticks_per_second();
    let secs = end.at.duration_since(start.at).as_secs_f64().max(1e-3);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = end.machine_busy.saturating_sub(start.machine_busy) as f64 / hz;
    let all = end.machine_all.saturating_sub(start.machine_all) as f64 / hz;
    println!(
        "CPU over the measured window ({secs:.1} s, {cores:.0} cores; load average {} -> {}):",
        start.load_average, end.load_average
    );
    println!(
        "  {:<40} {:>9} {:>7} {:>9}",
        "process", "CPU s", "cores", "of busy"
    );
    let mut listed = 0.0;
    let none = Ticks::new();
    for (name, after) in &end.groups {
        // A process started during the window (a backlog run's provisioner) counts from zero.
        let before = start
            .groups
            .iter()
            .find(|(n, _)| n == name)
            .map_or(&none, |(_, t)| t);
        let cpu = used(before, after) as f64 / hz;
        if !name.contains("this run's") {
            listed += cpu;
        }
        println!(
            "  {name:<40} {cpu:>9.1} {:>7.2} {:>8.0}%",
            cpu / secs,
            100.0 * cpu / busy.max(1e-3)
        );
    }
    let others = (busy - listed).max(0.0);
    println!(
        "  {:<40} {others:>9.1} {:>7.2} {:>8.0}%",
        "everything else on the machine",
        others / secs,
        100.0 * others / busy.max(1e-3)
    );
    println!(
        "  {:<40} {busy:>9.1} {:>7.2} {:>8.0}%  (idle {:.0}% of {:.1} core-seconds)",
        "machine: all processes",
        busy / secs,
        100.0,
        100.0 * (all - busy).max(0.0) / all.max(1e-3),
        all
    );
}
