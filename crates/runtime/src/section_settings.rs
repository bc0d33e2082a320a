//! Sections in which every key has a default, so that a configuration may leave them out.

use serde::Deserialize;

/// The record trail: each event's workflow decisions, kept for admins to read ("why didn't
/// this deal count?"). Diagnostics: written off the evaluator's consume loop, and dropped
/// (counted in `crm_sync_trail_dropped_total`) rather than slowing it down.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrailSettings {
    /// Off: the evaluator records no trail (nothing new to read; expiry still runs).
    pub enabled: bool,
    /// Days a trail entry is kept.
    pub retention_days: u32,
    /// Events waiting to be written at most; beyond it, new entries are dropped.
    pub queue_capacity: usize,
    /// How often entries older than `retention_days` are deleted.
    pub expiry_interval_secs: u64,
}

impl Default for TrailSettings {
    fn default() -> Self {
        TrailSettings {
            enabled: true,
            retention_days: 14,
            queue_capacity: 50_000,
            expiry_interval_secs: 3_600,
        }
    }
}

/// How the provisioner writes outcomes to the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionerSettings {
    /// Partitions of one replica that may write a batch smaller than the largest (64
    /// outcomes) at the same time; 0 = every partition at once. Over the limit, a partition
    /// waits for another's transaction and adds what arrived meanwhile to its own, so a
    /// steady stream makes fewer, larger transactions; full batches (a backlog) never wait.
    pub concurrent_batches: usize,
}

impl Default for ProvisionerSettings {
    /// Two: at 1,000 outcomes/s on two cores, two instead of one per partition (six) made a
    /// third to a half fewer database transactions and took a quarter off PostgreSQL's CPU,
    /// while a backlog was applied as fast.
    fn default() -> Self {
        ProvisionerSettings {
            concurrent_batches: 2,
        }
    }
}
