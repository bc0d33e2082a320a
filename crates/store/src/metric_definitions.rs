//! The metrics the store records, each named once with the description `/metrics` gives it.

use metrics::describe_counter;

/// Connections of the PostgreSQL change listeners (LISTEN/NOTIFY) that were lost; failed
/// attempts to connect again are not counted.
pub const LISTENER_RECONNECTS: &str = "crm_sync_listener_reconnects_total";

pub const ALL: &[&str] = &[LISTENER_RECONNECTS];

/// Describes the store's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        LISTENER_RECONNECTS,
        "Connections of the PostgreSQL change listeners lost (each reconnect reloads what it listens for)"
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
