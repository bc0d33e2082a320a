//! Makes Kafka connection failures readable. librdkafka reports a wrong password or an untrusted
//! certificate as a stream of low-level lines, one per reconnect and per broker; here they are
//! classified into one-line reasons (`SASL authentication failed`), logged once per window, and
//! remembered so `/readyz` can say why Kafka is not usable. Unreachable brokers (down, or a
//! wrong address) are rate-limited the same way: every client reported them several times a
//! second, about 1,500 lines per service in a 90-second broker outage.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// How often one kind of failure is logged while it persists (librdkafka keeps retrying).
pub const LOG_WINDOW: Duration = Duration::from_secs(30);

/// A failure seen longer ago than this no longer explains a failing check.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    last_failure: Option<(&'static str, Instant)>,
    last_logged: HashMap<&'static str, Instant>,
}

static STATE: LazyLock<Mutex<State>> = LazyLock::new(Mutex::default);

/// A one-line reason for what operators can fix, or `None` for everything else.
pub fn classify(code: Option<RDKafkaErrorCode>, text: &str) -> Option<&'static str> {
    let lower = text.to_ascii_lowercase();
    // Checked before the error code: librdkafka reports a token it could not get as an
    // authentication failure too, but the fix is at the identity provider, not the broker.
    if lower.contains("oidc token") || lower.contains("oauthbearer token") {
        return Some("OAUTHBEARER: no token from the identity provider (kafka.oauth_*)");
    }
    match code {
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
            return Some("SASL authentication failed");
        }
        Some(
            RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed,
        ) => return Some("not authorized (missing ACL)"),
        _ => {}
    }
    if lower.contains("sasl authentication error") || lower.contains("authentication failed") {
        Some("SASL authentication failed")
    } else if lower.contains("certificate verify failed")
        || lower.contains("unable to get local issuer")
    {
        Some("TLS: the broker's certificate is not trusted (kafka.ssl_ca_location)")
    } else if lower.contains("ssl handshake failed") || lower.contains("ssl_read") {
        Some("TLS handshake failed")
    } else if lower.contains("authorization failed") || lower.contains("not authorized") {
        Some("not authorized (missing ACL)")
    } else {
        None
    }
}

fn note(reason: &'static str, detail: &str) {
    let Ok(mut state) = STATE.lock() else { return };
    state.last_failure = Some((reason, Instant::now()));
    drop(state);
    if due(reason) {
        tracing::error!(
            detail,
            "kafka: {reason} (retrying; logged once per {}s while it lasts)",
            LOG_WINDOW.as_secs()
        );
    }
}

/// True when `reason` was not logged within the last [`LOG_WINDOW`] (and counts as logged now).
fn due(reason: &'static str) -> bool {
    let now = Instant::now();
    let Ok(mut state) = STATE.lock() else {
        return true;
    };
    let due = state
        .last_logged
        .get(reason)
        .is_none_or(|at| now.duration_since(*at) >= LOG_WINDOW);
    if due {
        state.last_logged.insert(reason, now);
    }
    due
}

const UNREACHABLE: &str = "brokers unreachable";

/// No broker answers: it is down, restarting, or `kafka.brokers` names the wrong address. Kept
/// apart from [`classify`]'s reasons: a refused password also leaves every broker down, and
/// `/readyz` should keep naming the password.
fn unreachable(code: Option<RDKafkaErrorCode>, text: &str) -> bool {
    if matches!(code, Some(RDKafkaErrorCode::AllBrokersDown)) {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    lower.contains("all broker connections are down")
        || (lower.contains("connect to ") && lower.contains(" failed"))
}

fn note_unreachable(detail: &str) {
    if due(UNREACHABLE) {
        tracing::error!(
            detail,
            "kafka: {UNREACHABLE} (kafka.brokers; retrying, logged once per {}s while it lasts)",
            LOG_WINDOW.as_secs()
        );
    }
}

/// A request's error in words, once: rdkafka's errors carry their code as their source too, so
/// printed with its chain "Broker transport failure" came twice, and said nothing of why.
pub fn explain(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
            "no broker answers (down, restarting, or kafka.brokers names the wrong address)"
                .to_owned()
        }
        Some(code) => code.to_string(),
        None => error.to_string(),
    }
}

/// An error a consumer's `recv` returned; the loop goes on polling (librdkafka reconnects).
pub fn on_consumer_error(error: &KafkaError) {
    if unreachable(error.rdkafka_error_code(), "") {
        note_unreachable(&error.to_string());
    } else {
        tracing::warn!(%error, "Kafka consumer error");
    }
}

/// A client context's `error` callback.
pub fn on_error(error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if matches!(code, Some(RDKafkaErrorCode::PartitionEOF)) {
        // A reader that asked to be told where a partition ends (a restore) was told.
        tracing::debug!(target: "librdkafka", reason, "partition end reached");
        return;
    }
    match classify(code, reason) {
        Some(kind) => note(kind, reason),
        None if unreachable(code, reason) => note_unreachable(reason),
        None => tracing::error!(target: "librdkafka", %error, reason, "librdkafka error"),
    }
}

/// A client context's `log` callback: classified failures are rate-limited, the rest is logged
/// as librdkafka's default would.
pub fn on_log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    let serious = matches!(
        level,
        RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning
    );
    if serious && let Some(kind) = classify(None, message) {
        note(kind, message);
        return;
    }
    if serious && unreachable(None, message) {
        note_unreachable(message);
        return;
    }
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => tracing::error!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// The reason of the latest classified failure, if it is recent.
pub fn recent_failure() -> Option<&'static str> {
    let state = STATE.lock().ok()?;
    let (reason, at) = state.last_failure?;
    (at.elapsed() < FAILURE_MEMORY).then_some(reason)
}

/// Called when the brokers answered: earlier failures no longer explain anything.
pub fn clear_failure() {
    if let Ok(mut state) = STATE.lock() {
        state.last_failure = None;
    }
}

/// A client context for clients that need nothing else (admin clients, readiness checks).
#[derive(Clone, Copy, Default)]
pub struct ReportingContext;

impl rdkafka::client::ClientContext for ReportingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        on_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        on_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for ReportingContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_get_reasons_people_can_act_on() {
        assert_eq!(
            classify(
                None,
                "SASL authentication error: Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-512"
            ),
            Some("SASL authentication failed")
        );
        assert_eq!(
            classify(
                Some(RDKafkaErrorCode::SSL),
                "ssl://127.0.0.1:9094/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed"
            ),
            Some("TLS: the broker's certificate is not trusted (kafka.ssl_ca_location)")
        );
        assert_eq!(
            classify(Some(RDKafkaErrorCode::TopicAuthorizationFailed), ""),
            Some("not authorized (missing ACL)")
        );
        assert_eq!(
            classify(
                Some(RDKafkaErrorCode::Authentication),
                "Failed to acquire SASL OAUTHBEARER token: Failed to retrieve OIDC token from \"https://idp/token\": 401"
            ),
            Some("OAUTHBEARER: no token from the identity provider (kafka.oauth_*)")
        );
        assert_eq!(classify(None, "Connection refused"), None);
    }

    #[test]
    fn unreachable_brokers_are_told_apart_from_reasons_readyz_names() {
        let refused = "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in state CONNECT)";
        assert!(unreachable(None, refused));
        assert_eq!(
            classify(None, refused),
            None,
            "readyz keeps a better reason"
        );
        assert!(unreachable(
            Some(RDKafkaErrorCode::AllBrokersDown),
            "2/2 brokers are down"
        ));
        assert!(!unreachable(
            Some(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9092/1: Disconnected (after 600000ms in state UP)"
        ));
    }

    #[test]
    fn an_unreachable_broker_is_explained_once_in_words() {
        let told = explain(&KafkaError::MetadataFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(told.starts_with("no broker answers"), "{told}");
        let told = explain(&KafkaError::MetadataFetch(
            RDKafkaErrorCode::SaslAuthenticationFailed,
        ));
        assert_eq!(told.matches("SASL").count(), 1, "{told}");
    }

    #[test]
    fn a_lasting_failure_is_logged_once_per_window() {
        assert!(due("a reason only this test uses"));
        assert!(!due("a reason only this test uses"));
        assert!(!due("a reason only this test uses"));
    }
}
