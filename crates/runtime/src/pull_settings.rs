//! The `pull` section: jobs that pull records from the CRMs' APIs inside ingest replicas
//! (backfills, the periodic reconciliation, answers to hydration requests). Every key has a
//! default, so the section may be absent. The outbound policy of these requests is the
//! directory's (`directory.allowed_hosts`, `directory.allow_insecure_http`).

use std::time::Duration;

use serde::Deserialize;

use crate::settings::SettingsError;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullSettings {
    /// Whether this replica runs pull jobs and answers hydration requests at all.
    pub enabled: bool,
    /// How long a job's lease lasts without renewal; a killed replica's job is resumed by
    /// another one this long after its last renewal.
    pub lease_secs: u64,
    /// Time between two reconciliation runs of an integration.
    pub reconcile_interval_secs: u64,
    /// Each reconciliation starts this long before the newest change the previous one saw.
    pub overlap_secs: u64,
    /// When an integration gets API credentials, a backfill of this many days is started;
    /// 0 = none.
    pub backfill_on_connect_days: u32,
    /// Jobs one replica runs at the same time.
    pub max_concurrent_jobs: usize,
    /// Salesforce: pulls stop once the org used this share of its daily API requests.
    pub salesforce_max_api_share: f64,
    /// Records per second one job publishes at most (0 = no limit), so that a large backfill
    /// leaves the pipeline to live webhooks.
    pub records_per_second: u32,
    /// A job waits before its next page while the evaluator is more than this many records
    /// behind on the events topic (0 = never waits for it).
    pub max_evaluator_lag: i64,
    /// The evaluator's consumer group, whose lag is watched.
    pub evaluator_group: String,
    /// Records asked for per page (each CRM also has its own cap).
    pub page_size: u32,
    /// How often a replica looks for runnable jobs and for integrations newly given API
    /// credentials.
    pub poll_interval_ms: u64,
    /// First wait after a job failed transiently (doubled per attempt, at most an hour).
    pub retry_backoff_secs: u64,
    /// Per request to a CRM API while pulling (pages are larger than a user lookup).
    pub request_timeout_ms: u64,
}

impl Default for PullSettings {
    fn default() -> Self {
        PullSettings {
            enabled: true,
            lease_secs: 60,
            reconcile_interval_secs: 15 * 60,
            overlap_secs: 5 * 60,
            backfill_on_connect_days: 30,
            max_concurrent_jobs: 2,
            salesforce_max_api_share: 0.5,
            records_per_second: 500,
            max_evaluator_lag: 400,
            evaluator_group: "crm-sync-workflow-evaluator".to_owned(),
            page_size: 200,
            poll_interval_ms: 5_000,
            retry_backoff_secs: 30,
            request_timeout_ms: 30_000,
        }
    }
}

impl PullSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub(crate) fn validate(&self) -> Result<(), SettingsError> {
        let key = |key, reason: &str| {
            Err(SettingsError::Key {
                key,
                reason: reason.to_owned(),
            })
        };
        if self.lease_secs < 5 {
            return key("pull.lease_secs", "must be at least 5");
        }
        if self.reconcile_interval_secs == 0 {
            return key("pull.reconcile_interval_secs", "must be at least 1");
        }
        if !(1..=64).contains(&self.max_concurrent_jobs) {
            return key("pull.max_concurrent_jobs", "must be between 1 and 64");
        }
        if !(self.salesforce_max_api_share > 0.0 && self.salesforce_max_api_share <= 1.0) {
            return key(
                "pull.salesforce_max_api_share",
                "must be more than 0 and at most 1",
            );
        }
        if self.max_evaluator_lag < 0 {
            return key("pull.max_evaluator_lag", "must be 0 or more");
        }
        if self.page_size == 0 {
            return key("pull.page_size", "must be at least 1");
        }
        if self.poll_interval_ms == 0 {
            return key("pull.poll_interval_ms", "must be at least 1");
        }
        if self.request_timeout_ms == 0 {
            return key("pull.request_timeout_ms", "must be at least 1");
        }
        Ok(())
    }
}
