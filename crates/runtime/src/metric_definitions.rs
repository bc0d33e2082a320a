//! The metrics this crate records, each named once with the description `/metrics` gives it
//! (`# HELP`); every crate that records metrics has a `metric_definitions` module of this shape.
//! Also the check those modules' tests share.

use metrics::{Unit, describe_counter, describe_histogram};
use metrics_exporter_prometheus::PrometheusBuilder;

/// HTTP requests served, by method, route template and status.
pub const HTTP_REQUESTS: &str = "crm_sync_http_requests_total";
/// HTTP request durations, by method and route template.
pub const HTTP_REQUEST_DURATION: &str = "crm_sync_http_request_duration_seconds";

pub const ALL: &[&str] = &[HTTP_REQUESTS, HTTP_REQUEST_DURATION];

/// Describes this crate's metrics to the installed recorder.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests served, by method, route template (`unmatched` when no route matched) and status"
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "Time to answer an HTTP request, by method and route template"
    );
}

/// The names among `names` that `describe` leaves without a `# HELP` line on `/metrics`.
pub fn undescribed(names: &[&str], describe: fn()) -> Vec<String> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        describe();
        for name in names {
            metrics::counter!(name.to_string()).increment(1);
        }
    });
    let text = handle.render();
    names
        .iter()
        .filter(|name| !text.contains(&format!("# HELP {name} ")))
        .map(|name| name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_described() {
        assert_eq!(undescribed(ALL, describe), Vec::<String>::new());
    }

    #[test]
    fn an_undescribed_metric_is_reported() {
        assert_eq!(
            undescribed(&["crm_sync_nobody_described_me_total"], describe),
            ["crm_sync_nobody_described_me_total"]
        );
    }
}
