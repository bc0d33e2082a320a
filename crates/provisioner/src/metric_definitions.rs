//! The metrics the provisioner records, each named once with the description `/metrics` gives it.

use metrics::{Unit, describe_counter, describe_histogram};

/// Outcomes applied, by result.
pub const OUTCOMES: &str = "crm_sync_provisioner_outcomes_total";
/// Activity changes, by change (recorded, updated, retracted).
pub const ACTIVITIES: &str = "crm_sync_provisioner_activities_total";
/// Platform users created or linked to an existing account by email, by result.
pub const USERS_PROVISIONED: &str = "crm_sync_users_provisioned_total";
/// Retractions, by result.
pub const RETRACTIONS: &str = "crm_sync_provisioner_retractions_total";
/// Activities kept for CRM users not mapped to a platform user.
pub const UNMAPPED_ACTIVITIES: &str = "crm_sync_provisioner_unmapped_activities_total";
/// Waiting CRM identities auto-sync provisioned, by result.
pub const AUTO_SYNC_IDENTITIES: &str = "crm_sync_provisioner_auto_sync_identities_total";
/// Users completed from the CRM directory, by result.
pub const DIRECTORY_COMPLETIONS: &str = "crm_sync_directory_completions_total";
/// Directory lookups a batch stopped waiting for at `directory.inline_deadline_ms`, by CRM.
pub const DIRECTORY_DEFERRED: &str = "crm_sync_directory_deferred_total";
/// CRM users rechecked in the directory, by result (active, inactive, retry, …).
pub const DIRECTORY_RECHECKS: &str = "crm_sync_directory_rechecks_total";
/// Outcomes applied per database transaction.
pub const TRANSACTION_OUTCOMES: &str = "crm_sync_provisioner_transaction_outcomes";
/// Time of each step of applying a batch, by phase (directory, transaction, publish,
/// outbox_delete).
pub const PHASE: &str = "crm_sync_provisioner_phase_seconds";

pub const ALL: &[&str] = &[
    OUTCOMES,
    ACTIVITIES,
    USERS_PROVISIONED,
    RETRACTIONS,
    UNMAPPED_ACTIVITIES,
    AUTO_SYNC_IDENTITIES,
    DIRECTORY_COMPLETIONS,
    DIRECTORY_DEFERRED,
    DIRECTORY_RECHECKS,
    TRANSACTION_OUTCOMES,
    PHASE,
];

/// Describes the provisioner's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(OUTCOMES, "Outcomes applied, by result");
    describe_counter!(
        ACTIVITIES,
        "Activity changes, by change (recorded, updated, retracted)"
    );
    describe_counter!(
        USERS_PROVISIONED,
        "Platform users created or linked to an existing account by email, by result (created, linked)"
    );
    describe_counter!(RETRACTIONS, "Retractions, by result");
    describe_counter!(
        UNMAPPED_ACTIVITIES,
        "Activities kept for CRM users not mapped to a platform user"
    );
    describe_counter!(
        AUTO_SYNC_IDENTITIES,
        "Waiting CRM identities auto-sync provisioned, by result"
    );
    describe_counter!(
        DIRECTORY_COMPLETIONS,
        "Users completed from the CRM directory, by result"
    );
    describe_counter!(
        DIRECTORY_DEFERRED,
        "Directory lookups a batch stopped waiting for at directory.inline_deadline_ms and left to the background completion, by CRM"
    );
    describe_counter!(
        DIRECTORY_RECHECKS,
        "CRM users rechecked in the directory, by result (active, inactive, retry, …)"
    );
    describe_histogram!(
        TRANSACTION_OUTCOMES,
        "Outcomes applied per database transaction"
    );
    describe_histogram!(
        PHASE,
        Unit::Seconds,
        "Time of each step of applying a batch, by phase (directory, transaction, publish, outbox_delete)"
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
