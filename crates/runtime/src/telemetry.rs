//! Logs (JSON in containers, readable on a terminal) and traces (OTLP when an endpoint is set).

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::settings::{LogFormat, TelemetrySettings};

use std::fmt;

use opentelemetry::trace::TraceId;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OtelData;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Flushes pending spans when dropped at the end of `main`.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("flushing traces at shutdown failed: {error}");
        }
    }
}

/// Installs the global subscriber, tracer provider and W3C trace-context propagator.
///
/// The tracer provider is installed even without an exporter: spans still get trace ids, so
/// `traceparent` headers are written on every Kafka message and logs carry the trace id.
pub fn init(service: &str, settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(&settings.log_level).map_err(|e| {
        anyhow::anyhow!(
            "invalid configuration: key `telemetry.log_level`: {e} (got {:?})",
            settings.log_level
        )
    })?;

    let mut provider = SdkTracerProvider::builder().with_resource(
        Resource::builder()
            .with_service_name(service.to_owned())
            .build(),
    );
    if let Some(endpoint) = settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
        use secrecy::ExposeSecret;
        // Hosted collectors take their API key as a header; https:// endpoints use TLS with the
        // system's roots (SSL_CERT_FILE adds a private CA).
        let headers = match &settings.otlp_headers {
            Some(text) => crate::security::parse_headers(text.expose_secret()).map_err(|e| {
                anyhow::anyhow!("invalid configuration: key `telemetry.otlp_headers`: {e}")
            })?,
            None => Vec::new(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .with_headers(headers.into_iter().collect())
            .build()
            .map_err(|e| {
                anyhow::anyhow!("invalid configuration: key `telemetry.otlp_endpoint`: {e}")
            })?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    // Busy/idle timings read the clock on every poll of an instrumented future, and the thread
    // name is a string per span: both are paid on every consumed message and neither is worth
    // it there (a span's duration and its service say enough).
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_tracer(provider.tracer(service.to_owned()));

    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    // The JSON event format expects span fields recorded as JSON.
                    .fmt_fields(crate::span_fields::SpanJsonFields)
                    .event_format(WithTraceId(
                        tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(false),
                    )),
            )
            .try_init()?;
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(TextWithTraceId(tracing_subscriber::fmt::format())),
            )
            .try_init()?;
    }
    Ok(TelemetryGuard { provider })
}

/// Wraps the JSON event format so that every line logged inside a trace starts with its
/// `trace_id` and `span_id`: a log line found in a log search leads straight to its trace.
struct WithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = trace_of(ctx) else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_ids(&line, trace_id, &span_id))
    }
}

/// Wraps the human-readable format: a line logged inside a trace starts with the trace id, so
/// the lines of one request can be picked out on a terminal too.
struct TextWithTraceId<F>(F);

impl<S, N, F> FormatEvent<S, N> for TextWithTraceId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if let Some((trace_id, _)) = trace_of(ctx) {
            write!(writer, "[{trace_id}] ")?;
        }
        self.0.format_event(ctx, writer, event)
    }
}

/// The trace and span id of the innermost span around the event that has an OpenTelemetry
/// context (spans get one when first entered).
fn trace_of<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(TraceId, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    ctx.event_scope()?.find_map(|span| {
        let extensions = span.extensions();
        let data = extensions.get::<OtelData>()?;
        let trace_id = data.trace_id().filter(|id| *id != TraceId::INVALID)?;
        let span_id = data.span_id().map(|id| id.to_string()).unwrap_or_default();
        Some((trace_id, span_id))
    })
}

/// Inserts the ids as the first fields of a JSON object line.
fn with_ids(line: &str, trace_id: TraceId, span_id: &str) -> String {
    match line.strip_prefix('{') {
        Some(rest) => format!("{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_the_first_fields_of_a_json_line() {
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let line = with_ids("{\"level\":\"INFO\"}\n", trace_id, "00f067aa0ba902b7");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed["span_id"], "00f067aa0ba902b7");
        assert_eq!(parsed["level"], "INFO");
    }
}
