//! What tracing costs per consumed message in a transactional consumer such as the evaluator:
//! the `process {topic}` span with its fields, adopting the producer's trace context, entering
//! it while the handler runs, and the traceparent its ten outputs carry.
//!
//! The services' own subscriber is installed (JSON logs, no trace exporter), at the level in
//! `CRM_SYNC_BENCH_LOG_LEVEL` (default: the shipped
//! `info,rdkafka=warn,sqlx=warn,fjall=warn,lsm_tree=warn`); run it once at `warn` and once at
//! the default to see what `info` adds:
//! `CRM_SYNC_BENCH_LOG_LEVEL=warn cargo bench -p crm-sync-kafka --bench consume_span`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crm_sync_kafka::{Incoming, headers};
use crm_sync_runtime::settings::{LogFormat, TelemetrySettings};
use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use tracing::Instrument;

const OUTPUTS_PER_MESSAGE: usize = 10;

fn message() -> OwnedMessage {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: headers::EVENT_ID,
            value: Some("8d2f6c4a-1b3e-5f70-9a8b-7c6d5e4f3a21"),
        })
        .insert(Header {
            key: "traceparent",
            value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        });
    OwnedMessage::new(
        Some(vec![0; 400]),
        Some(b"3f1c2a9e-5b7d-4e21-9a0c-2d4b6e8f1a3c/Opportunity/006A000000XyZ12AAA".to_vec()),
        "crm.events.v1".into(),
        Timestamp::now(),
        3,
        123_456,
        Some(headers),
    )
}

/// One message's tracing as the transactional loop does it, around a handler doing nothing.
fn traced(message: &OwnedMessage) -> Vec<Arc<[(String, String)]>> {
    let incoming = Incoming::of(message);
    let span = incoming.span("workflow-evaluator");
    futures::executor::block_on(async { black_box(&incoming.payload) }.instrument(span.clone()));
    let trace: Arc<[(String, String)]> = headers::trace_context_of(&span).into();
    (0..OUTPUTS_PER_MESSAGE)
        .map(|_| Arc::clone(&trace))
        .collect()
}

fn bench(c: &mut Criterion) {
    let level = std::env::var("CRM_SYNC_BENCH_LOG_LEVEL")
        .unwrap_or_else(|_| "info,rdkafka=warn,sqlx=warn,fjall=warn,lsm_tree=warn".to_owned());
    let settings = TelemetrySettings {
        log_level: level.clone(),
        log_format: LogFormat::Json,
        otlp_endpoint: None,
        otlp_headers: None,
        otlp_headers_file: None,
    };
    let _guard = crm_sync_runtime::telemetry::init("bench", &settings).unwrap();
    let message = message();
    let mut group = c.benchmark_group("consume_span");
    group.throughput(Throughput::Elements(1));
    group.bench_function("one message, ten outputs", |b| {
        b.iter(|| traced(black_box(&message)))
    });
    group.finish();
    eprintln!("(log level {level:?})");
}

criterion_group!(benches, bench);
criterion_main!(benches);
