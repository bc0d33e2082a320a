//! What a run prints: the per-hop tables, consumer lag, the provisioner's histograms and the
//! services' memory.

use std::sync::atomic::Ordering;

use crm_sync_e2e::Service;

use crate::{Timeline, WARM_UP_US, memory_kib, print_hops, text_arg, write_timelines};

pub fn print_lag(samples: &[(i64, i64)]) {
    let max_lag = |f: fn(&(i64, i64)) -> i64| samples.iter().map(f).max().unwrap_or(0);
    let avg_lag = |f: fn(&(i64, i64)) -> i64| {
        if samples.is_empty() {
            0.0
        } else {
            samples.iter().map(f).sum::<i64>() as f64 / samples.len() as f64
        }
    };
    println!(
        "consumer lag (messages, sampled every 10 s): evaluator avg {:.1} max {}, provisioner avg {:.1} max {}",
        avg_lag(|s| s.0),
        max_lag(|s| s.0),
        avg_lag(|s| s.1),
        max_lag(|s| s.1)
    );
}

/// The provisioner's own histograms printed after a run: where an outcome's wait goes.
pub const PROVISIONER_HISTOGRAMS: &[&str] = &[
    "crm_sync_consume_delay_seconds",
    "crm_sync_consume_intake_blocked_seconds",
    "crm_sync_provisioner_phase_seconds",
    "crm_sync_provisioner_transaction_outcomes",
    "crm_sync_batch_messages",
];

/// A histogram's cumulative buckets (upper bound, count), sum and count.
type Histogram = (Vec<(f64, f64)>, f64, f64);

/// Count, mean and (bucket upper bounds of) p50 / p95 / p99 of each series of `names` on the
/// service's `/metrics`.
pub async fn print_histograms(service: &Service, names: &[&str]) {
    let Ok(response) = reqwest::get(service.ops_url("/metrics")).await else {
        println!("{}: /metrics unreachable", service.name);
        return;
    };
    let text = response.text().await.unwrap_or_default();
    println!(
        "{} histograms: count, mean, p50 / p95 / p99 (bucket bounds)",
        service.name
    );
    // Series (name and labels other than `le`) -> (buckets, sum, count).
    let mut series: std::collections::BTreeMap<String, Histogram> = Default::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let name = key.split('{').next().unwrap_or(key);
        let Some(base) = names.iter().find(|n| name.starts_with(*n)) else {
            continue;
        };
        let labels = key.strip_prefix(name).unwrap_or("");
        let (others, le) = match labels.find("le=\"") {
            Some(at) => {
                let rest = &labels[at + 4..];
                let le = rest.split('"').next().unwrap_or("+Inf");
                let others = format!("{}{}", &labels[..at], &rest[le.len() + 1..]);
                (others, le.parse::<f64>().unwrap_or(f64::INFINITY))
            }
            None => (labels.to_owned(), f64::NAN),
        };
        let others = others.replace(",}", "}").replace("{}", "");
        let entry = series.entry(format!("{base}{others}")).or_default();
        match &name[base.len()..] {
            "_bucket" => entry.0.push((le, value)),
            "_sum" => entry.1 = value,
            "_count" => entry.2 = value,
            _ => {}
        }
    }
    for (key, (mut buckets, sum, count)) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let at = |p: f64| {
            buckets
                .iter()
                .find(|(_, c)| *c >= p * count)
                .map_or(f64::NAN, |(le, _)| *le)
        };
        println!(
            "  {key:<72} {count:>8} {:>9.4} {} / {} / {}",
            sum / count.max(1.0),
            at(0.50),
            at(0.95),
            at(0.99)
        );
    }
}

/// Each hop's figures over the whole run and in the steady state; the timelines written out
/// when `--timelines FILE` asks for them.
pub fn print_timelines(timelines: &[Timeline], seconds: f64) {
    print_hops("per hop (ms)", timelines, 0);
    if let Some(path) = text_arg("--timelines") {
        write_timelines(&path, timelines);
    }
    if seconds * 1e6 > 2.0 * WARM_UP_US as f64 {
        print_steady_state(timelines);
    }
}

/// The hops of the events sent after the first ten seconds.
fn print_steady_state(timelines: &[Timeline]) {
    let first_sent = timelines
        .iter()
        .map(|t| t.sent.load(Ordering::Relaxed))
        .filter(|us| *us > 0)
        .min()
        .unwrap_or(0);
    print_hops(
        "steady state: sent after the first 10 s",
        timelines,
        first_sent + WARM_UP_US,
    );
}

/// Each service's memory at the start, at the end, and at its peak.
pub fn print_rss(services: &[&Service], rss_start: &[(String, u64)]) {
    for (s, (_, start)) in services.iter().zip(rss_start) {
        println!(
            "RSS {:<20} start {:>7} KiB  end {:>7} KiB  peak {:>7} KiB",
            s.name,
            start,
            memory_kib(s, "VmRSS"),
            memory_kib(s, "VmHWM")
        );
    }
}
