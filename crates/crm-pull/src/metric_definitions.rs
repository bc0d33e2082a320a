//! The metrics pull jobs record, each named once with the description `/metrics` gives it.

use metrics::{Unit, describe_counter, describe_histogram};

/// Jobs run, by kind, CRM and outcome.
pub const JOBS: &str = "crm_sync_pull_jobs_total";
/// How long each turn on a job took, by kind, CRM and outcome.
pub const JOB_DURATION: &str = "crm_sync_pull_job_duration_seconds";
/// Records scanned, by integration and job kind.
pub const SCANNED: &str = "crm_sync_pull_records_scanned_total";
/// CRM API requests of pulls, by integration and job kind.
pub const API_CALLS: &str = "crm_sync_pull_api_calls_total";
/// Turns on a job that ended in an error, by integration and job kind.
pub const ERRORS: &str = "crm_sync_pull_errors_total";
/// Objects whose pass the CRM refused (the job's other objects went on), by integration, job
/// kind and object.
pub const OBJECT_ERRORS: &str = "crm_sync_pull_object_errors_total";
/// Records published by pulls, by integration and job kind.
pub const PUBLISHED: &str = "crm_sync_pull_records_published_total";
/// Pulled records refused (values that could not be stored, or too large) and dead-lettered,
/// by reason.
pub const REFUSED: &str = "crm_sync_pull_records_refused_total";
/// Hydration requests handled, by outcome (`published`, `no_credentials`, `not_found`,
/// `unavailable`, `refused`, `invalid`).
pub const HYDRATIONS: &str = "crm_sync_pull_hydrations_total";

pub const ALL: &[&str] = &[
    JOBS,
    JOB_DURATION,
    SCANNED,
    API_CALLS,
    ERRORS,
    OBJECT_ERRORS,
    PUBLISHED,
    REFUSED,
    HYDRATIONS,
];

/// Describes the pull jobs' metrics to the installed recorder.
pub fn describe() {
    describe_counter!(JOBS, "Turns on pull jobs, by kind, CRM and outcome");
    describe_histogram!(
        JOB_DURATION,
        Unit::Seconds,
        "How long each turn on a pull job took, by kind, CRM and outcome"
    );
    describe_counter!(
        SCANNED,
        "Records read from CRM APIs by pulls, by integration and job kind"
    );
    describe_counter!(
        API_CALLS,
        "CRM API requests made by pulls, by integration and job kind"
    );
    describe_counter!(
        ERRORS,
        "Turns on pull jobs that ended in an error, by integration and job kind"
    );
    describe_counter!(
        OBJECT_ERRORS,
        "Objects whose pull the CRM refused while the job's other objects went on, by integration, job kind and object"
    );
    describe_counter!(
        PUBLISHED,
        "Records published by pulls, by integration and job kind"
    );
    describe_counter!(
        REFUSED,
        "Pulled records refused and dead-lettered, by reason"
    );
    describe_counter!(
        HYDRATIONS,
        "Hydration requests handled, by outcome (published, no_credentials, not_found, unavailable, refused, invalid)"
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
