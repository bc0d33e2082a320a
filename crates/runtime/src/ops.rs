//! The operations endpoints every service serves: `/healthz`, `/readyz`, `/metrics`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub use crate::server::Limits;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// Named dependency checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Check)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks
            .push((name, Arc::new(move || Box::pin(check()) as CheckFuture)));
        self
    }

    async fn evaluate(&self) -> (bool, serde_json::Map<String, serde_json::Value>) {
        let mut ready = true;
        let mut report = serde_json::Map::new();
        for (name, check) in &self.checks {
            let outcome = tokio::time::timeout(Duration::from_secs(3), check()).await;
            let status = match outcome {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => {
                    ready = false;
                    e
                }
                Err(_) => {
                    ready = false;
                    "timed out after 3 s".to_owned()
                }
            };
            report.insert((*name).to_owned(), status.into());
        }
        (ready, report)
    }
}

/// Bucket bounds (seconds) of every latency histogram: from a fast in-memory decision to a
/// request stuck behind retries.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bucket bounds of the histograms that count (messages per transaction or batch, outcomes
/// per database transaction): named `…_messages` or `…_outcomes`. On the latency buckets every
/// batch over 30 fell in `+Inf`, so a 250-message transaction looked like a 31-message one.
pub const COUNT_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0,
];

/// Installs the global Prometheus recorder. Call once per process. Histograms are exported as
/// Prometheus histograms (not summaries), so they can be aggregated across replicas.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = exporter()?
        .install_recorder()
        .context("installing the metrics recorder")?;
    crate::metric_definitions::describe();
    Ok(handle)
}

fn exporter() -> anyhow::Result<PrometheusBuilder> {
    let counts = |suffix: &str| Matcher::Suffix(suffix.to_owned());
    PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(counts("_messages"), &COUNT_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(counts("_outcomes"), &COUNT_BUCKETS))
        .context("configuring histogram buckets")
}

#[derive(Clone)]
struct OpsState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// `/healthz`, `/readyz` and `/metrics`, to be merged into a service's router.
pub fn router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(OpsState { readiness, metrics })
}

async fn readyz(State(state): State<OpsState>) -> Response {
    let (ready, report) = state.readiness.evaluate().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({"ready": ready, "checks": report});
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): State<OpsState>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Binds the HTTP listener, naming the address in the error so a taken port is obvious.
pub async fn bind(host: &str, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("binding http.host/http.port {host}:{port}"))
}

/// An HTTP service's two listeners, bound: the API's on `http.port` and the ops endpoints' on
/// `http.ops_port` (or `default_ops_port`). Logs `<service> listening` with the bound addresses,
/// not the configured ones: with port 0 the system picks them, and whoever started the process
/// (the e2e kit) learns them from this line.
pub async fn bind_api_and_ops(
    service: &'static str,
    http: &crate::settings::HttpSettings,
    default_ops_port: u16,
    topic: &str,
) -> anyhow::Result<(tokio::net::TcpListener, tokio::net::TcpListener)> {
    let ops_port = http.ops_port_or(default_ops_port)?;
    let api = bind(&http.host, http.port).await?;
    let ops = bind(&http.host, ops_port).await?;
    let ops_port = ops
        .local_addr()
        .context("reading the ops listener's address")?
        .port();
    tracing::info!(
        address = %api.local_addr().context("reading the listener's address")?,
        ops_port,
        topic,
        "{service} listening"
    );
    Ok((api, ops))
}

/// Serves `router` until `shutdown` is cancelled, then lets in-flight requests finish, with the
/// `http.*` timeouts and connection limit (`Limits::from(&settings.http)`, see [`crate::server`]). Every route gets request
/// metrics and (API routes) a server span: see [`crate::http_telemetry`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: tokio_util::sync::CancellationToken,
    limits: crate::server::Limits,
) -> anyhow::Result<()> {
    crate::server::serve(listener, router, shutdown, limits)
        .await
        .context("http server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_histograms_have_count_buckets_and_the_others_latency_buckets() {
        let recorder = exporter().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            metrics::histogram!("crm_sync_transaction_messages").record(250.0);
            metrics::histogram!("crm_sync_provisioner_transaction_outcomes").record(40.0);
            metrics::histogram!("crm_sync_processing_seconds").record(0.002);
        });
        let text = handle.render();
        for line in [
            "crm_sync_transaction_messages_bucket{le=\"100\"} 0",
            "crm_sync_transaction_messages_bucket{le=\"250\"} 1",
            "crm_sync_provisioner_transaction_outcomes_bucket{le=\"25\"} 0",
            "crm_sync_provisioner_transaction_outcomes_bucket{le=\"50\"} 1",
            "crm_sync_processing_seconds_bucket{le=\"0.001\"} 0",
            "crm_sync_processing_seconds_bucket{le=\"0.0025\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("crm_sync_transaction_messages_bucket{le=\"0.001\"}"));
    }
}
