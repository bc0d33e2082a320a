//! The metrics the workflow evaluator records, each named once with the description `/metrics` gives it.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Events judged, by result.
pub const EVENTS: &str = "crm_sync_evaluator_events_total";
/// Outcomes produced, by kind (matched, retracted).
pub const OUTCOMES: &str = "crm_sync_evaluator_outcomes_total";
/// Events no workflow counted, by reason.
pub const NO_MATCH: &str = "crm_sync_evaluator_no_match_total";
/// Records the evaluator asked the pull jobs to fetch whole.
pub const HYDRATION_REQUESTS: &str = "crm_sync_evaluator_hydration_requests_total";
/// Changelog records left to restore before the record state is ready.
pub const RESTORE_REMAINING: &str = "crm_sync_evaluator_restore_remaining";
/// Record states restored from the changelog.
pub const RESTORED_RECORDS: &str = "crm_sync_evaluator_restored_records_total";
/// Record states in the changelog that do not decode, taken as never seen.
pub const UNDECODABLE_STATES: &str = "crm_sync_evaluator_undecodable_states_total";
/// Time to reload the active workflows.
pub const RELOAD: &str = "crm_sync_evaluator_reload_seconds";
/// Active workflows the evaluator judges against.
pub const ACTIVE_WORKFLOWS: &str = "crm_sync_evaluator_active_workflows";
/// Record state written to the local store but not flushed to its files yet, in memory.
pub const STORE_UNFLUSHED: &str = "crm_sync_evaluator_store_unflushed_bytes";
/// Record states of deleted integrations forgotten (tombstoned in the changelog).
pub const FORGOTTEN_RECORDS: &str = "crm_sync_evaluator_forgotten_records_total";
/// Rounds of forgetting deleted integrations' records, by outcome (`ok`, `failed`).
pub const PURGE_ROUNDS: &str = "crm_sync_evaluator_purge_rounds_total";
/// Integrations this replica holds record state of that the database knows neither as live
/// nor as deleted, at the last purge round.
pub const UNKNOWN_INTEGRATIONS: &str = "crm_sync_evaluator_unknown_integrations";
/// Record trail entries written.
pub const TRAIL_WRITTEN: &str = "crm_sync_trail_written_total";
/// Record trail entries dropped because the writer fell behind or failed.
pub const TRAIL_DROPPED: &str = "crm_sync_trail_dropped_total";
/// Record trail writes tried again after PostgreSQL could not take them.
pub const TRAIL_RETRIES: &str = "crm_sync_trail_write_retries_total";

pub const ALL: &[&str] = &[
    STORE_UNFLUSHED,
    EVENTS,
    OUTCOMES,
    NO_MATCH,
    HYDRATION_REQUESTS,
    RESTORE_REMAINING,
    RESTORED_RECORDS,
    UNDECODABLE_STATES,
    FORGOTTEN_RECORDS,
    PURGE_ROUNDS,
    UNKNOWN_INTEGRATIONS,
    RELOAD,
    ACTIVE_WORKFLOWS,
    TRAIL_WRITTEN,
    TRAIL_DROPPED,
    TRAIL_RETRIES,
];

/// Describes the evaluator's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(EVENTS, "Events judged, by result");
    describe_counter!(OUTCOMES, "Outcomes produced, by kind (matched, retracted)");
    describe_counter!(NO_MATCH, "Events no workflow counted, by reason");
    describe_counter!(
        HYDRATION_REQUESTS,
        "Records the evaluator asked the pull jobs to fetch whole"
    );
    describe_gauge!(
        RESTORE_REMAINING,
        "Changelog records left to restore before the record state is ready"
    );
    describe_counter!(
        RESTORED_RECORDS,
        "Record states restored from the changelog"
    );
    describe_counter!(
        UNDECODABLE_STATES,
        "Record states in the changelog that do not decode, taken as never seen"
    );
    describe_counter!(
        FORGOTTEN_RECORDS,
        "Record states of deleted integrations forgotten (tombstoned in the changelog)"
    );
    describe_counter!(
        PURGE_ROUNDS,
        "Rounds of forgetting deleted integrations' records, by outcome"
    );
    describe_gauge!(
        UNKNOWN_INTEGRATIONS,
        "Integrations whose record state this replica holds that the database knows neither as live nor as deleted"
    );
    describe_histogram!(
        RELOAD,
        Unit::Seconds,
        "Time to reload the active workflows (on a change, a reconnect, or an event of an integration the snapshot lacks)"
    );
    describe_gauge!(
        ACTIVE_WORKFLOWS,
        "Active workflows the evaluator judges against"
    );
    describe_gauge!(
        STORE_UNFLUSHED,
        Unit::Bytes,
        "Record state in the local store's memtables, not yet flushed to its files"
    );
    describe_counter!(TRAIL_WRITTEN, "Record trail entries written");
    describe_counter!(
        TRAIL_DROPPED,
        "Record trail entries dropped because the writer fell behind or failed"
    );
    describe_counter!(
        TRAIL_RETRIES,
        "Record trail writes tried again after PostgreSQL could not take them"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_described() {
        let missing =
            crm_sync_runtime::metric_definitions::undescribed(super::ALL, super::describe);
        assert_eq!(missing, Vec::<String>::new());
    }
}
