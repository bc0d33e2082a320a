//! Header names shared by every topic, and W3C trace-context propagation through them.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use rdkafka::message::Headers;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The message's stable event id (also inside the payload), for deduplication without decoding.
pub const EVENT_ID: &str = "crm-sync-event-id";
pub const TRACEPARENT: &str = "traceparent";

pub const DLQ_REASON: &str = "crm-sync-dlq-reason";
pub const DLQ_DETAIL: &str = "crm-sync-dlq-detail";
pub const DLQ_ORIGIN_TOPIC: &str = "crm-sync-dlq-origin-topic";
pub const DLQ_ORIGIN_PARTITION: &str = "crm-sync-dlq-origin-partition";
pub const DLQ_ORIGIN_OFFSET: &str = "crm-sync-dlq-origin-offset";
pub const DLQ_SERVICE: &str = "crm-sync-dlq-service";
pub const DLQ_TIME: &str = "crm-sync-dlq-time";
/// On a dead letter that keeps only the first bytes of a message too large to write again: how
/// many bytes the message had.
pub const DLQ_TRUNCATED_FROM: &str = "crm-sync-dlq-truncated-from";

struct HeaderInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeaderInjector<'_> {
    /// An empty value (the propagator writes `tracestate` even when there is none) is left
    /// out: a header on every output record, for nothing.
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

/// The current span's W3C trace context, as header pairs (`traceparent`, maybe `tracestate`).
pub fn current_trace_context() -> Vec<(String, String)> {
    trace_context_of(&tracing::Span::current())
}

/// `span`'s W3C trace context, as header pairs (`traceparent`, maybe `tracestate`).
pub fn trace_context_of(span: &tracing::Span) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let context = span.context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(&mut pairs))
    });
    pairs
}

/// Owned copy of a message's headers as UTF-8 pairs (non-UTF-8 values are skipped).
pub fn to_pairs<H: Headers>(headers: Option<&H>) -> Vec<(String, String)> {
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .iter()
        .filter_map(|h| {
            let value = std::str::from_utf8(h.value?).ok()?;
            Some((h.key.to_owned(), value.to_owned()))
        })
        .collect()
}

pub fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.as_str())
}

struct PairExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        find(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Makes `span` a child of the trace context carried in the headers, if any.
///
/// Without a valid context in the headers the span keeps its natural parent (the span it was
/// created in), and so it does when that parent already belongs to the carried trace: an HTTP
/// server span that adopted the same headers stays the span's parent instead of a sibling.
pub fn adopt_trace_context(span: &tracing::Span, pairs: &[(String, String)]) {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&PairExtractor(pairs))
    });
    let remote = parent.span().span_context().clone();
    if !remote.is_valid() {
        return;
    }
    let current = tracing::Span::current().context();
    if current.span().span_context().trace_id() == remote.trace_id() {
        return;
    }
    let _ = span.set_parent(parent);
}

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    use super::HeaderInjector;

    fn injected(state: TraceState) -> Vec<String> {
        let remote = SpanContext::new(
            TraceId::from(7u128),
            SpanId::from(9u64),
            TraceFlags::SAMPLED,
            true,
            state,
        );
        let context = opentelemetry::Context::new().with_remote_span_context(remote);
        let mut pairs = Vec::new();
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(&mut pairs));
        pairs.into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn a_trace_without_state_writes_only_its_traceparent() {
        assert_eq!(injected(TraceState::default()), ["traceparent"]);
        let state = TraceState::from_key_value([("vendor", "x")]).unwrap();
        assert_eq!(injected(state), ["traceparent", "tracestate"]);
    }
}
