//! Request metrics and server spans for every HTTP route a service serves, applied once in
//! [`crate::ops::serve`] so that no service can forget them.
//!
//! - `crm_sync_http_requests_total{method,route,status}` and
//!   `crm_sync_http_request_duration_seconds{method,route}`; `route` is the route template
//!   (`/v1/integrations/{integration_id}/…`), never the raw path, so ids do not explode the
//!   number of series; requests no route matched count as `unmatched`.
//! - A server span per API request (OpenTelemetry HTTP conventions), continuing the caller's
//!   W3C trace context. The ops routes get no span: probes and scrapes would drown the traces.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use tracing::{Instrument, field};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metric_definitions::{HTTP_REQUEST_DURATION, HTTP_REQUESTS};

/// Routes served by [`crate::ops::router`]: measured, but not traced.
const UNTRACED_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The middleware (`axum::middleware::from_fn(observe)`).
pub async fn observe(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let traced = route
        .as_deref()
        .is_some_and(|r| !UNTRACED_ROUTES.contains(&r));
    let route = route.unwrap_or_else(|| "unmatched".to_owned());

    let response = if traced {
        let span = server_span(&method, &route, &request);
        let response = next.run(request).instrument(span.clone()).await;
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
            span.record("error.type", status.as_str());
        }
        response
    } else {
        next.run(request).await
    };

    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn server_span(method: &str, route: &str, request: &Request) -> tracing::Span {
    // The query may carry credentials (Salesforce's `?token=`): only the path is recorded.
    let span = tracing::info_span!(
        "http_request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = method,
        http.route = route,
        url.path = request.uri().path(),
        url.scheme = "http",
        user_agent.original = field::Empty,
        http.response.status_code = field::Empty,
        error.type = field::Empty,
    );
    if let Some(agent) = request
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        span.record("user_agent.original", agent);
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_status() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let app = Router::new()
            .route("/items/{id}", get(|| async { "item" }))
            .layer(axum::middleware::from_fn(observe));
        // The current-thread test runtime runs the middleware on this thread.
        let _guard = metrics::set_default_local_recorder(&recorder);
        for path in ["/items/1", "/items/2", "/nothing-here"] {
            let response = app
                .clone()
                .oneshot(Request::builder().uri(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(response.status().is_success() || response.status() == 404);
        }
        let text = handle.render();
        assert!(
            text.contains(
                r#"crm_sync_http_requests_total{method="GET",route="/items/{id}",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"crm_sync_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
            ),
            "{text}"
        );
    }
}
