//! The metrics CRM directory lookups record, each named once with the description `/metrics`
//! gives it.

use metrics::{Unit, describe_counter, describe_histogram};

/// Directory lookups, by CRM and result (`cached`, `found`, `not_found`, …).
pub const LOOKUPS: &str = "crm_sync_directory_lookups_total";
/// Time of the lookups that reached the CRM, by CRM.
pub const LOOKUP_DURATION: &str = "crm_sync_directory_lookup_seconds";
/// CRM API requests retried after a transient failure, by CRM.
pub const API_RETRIES: &str = "crm_sync_crm_api_retries_total";

pub const ALL: &[&str] = &[LOOKUPS, LOOKUP_DURATION, API_RETRIES];

/// Describes the directory's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        LOOKUPS,
        "CRM user directory lookups, by CRM and result (cached, or what the CRM answered)"
    );
    describe_histogram!(
        LOOKUP_DURATION,
        Unit::Seconds,
        "Time of the CRM user directory lookups that reached the CRM, by CRM"
    );
    describe_counter!(
        API_RETRIES,
        "CRM API requests retried after a transient failure, by CRM"
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
