//! The metrics ingest records, each named once with the description `/metrics` gives it.

use metrics::describe_counter;

/// Webhook requests, by CRM, endpoint and outcome (`accepted` or the error code).
pub const REQUESTS: &str = "crm_sync_ingest_requests_total";
/// Notifications (records) of accepted requests, by CRM and endpoint.
pub const NOTIFICATIONS: &str = "crm_sync_ingest_notifications_total";
/// CRM user events whose active flag was recorded on the user's identity.
pub const USER_EVENTS: &str = "crm_sync_ingest_user_events_total";

pub const ALL: &[&str] = &[REQUESTS, NOTIFICATIONS, USER_EVENTS];

/// Describes ingest's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        "Webhook requests, by CRM, endpoint and outcome (`accepted` or the error code)"
    );
    describe_counter!(
        NOTIFICATIONS,
        "Notifications (records) of accepted webhook requests, by CRM and endpoint"
    );
    describe_counter!(
        USER_EVENTS,
        "CRM user events whose active flag was recorded on the CRM user's identity"
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
