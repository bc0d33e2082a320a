//! Building an output record's Kafka headers (event id, extra headers, trace context): the
//! evaluator does it for every record it writes, about five per event.
//! `cargo bench -p crm-sync-kafka --bench headers`; the figures are in BENCHMARKS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crm_sync_kafka::produce::{OutgoingMessage, record_headers};

fn bench(c: &mut Criterion) {
    let message = OutgoingMessage {
        topic: "crm.matches.v1".into(),
        key: "3f1c2a9e-5b7d-4e21-9a0c-2d4b6e8f1a3c/Opportunity/006A000000XyZ12AAA".into(),
        payload: vec![0; 300],
        event_id: "8d2f6c4a-1b3e-5f70-9a8b-7c6d5e4f3a21".into(),
        headers: Vec::new(),
        partition: None,
    };
    let trace = [(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    )];
    let mut group = c.benchmark_group("record_headers");
    group.throughput(Throughput::Elements(1));
    group.bench_function("event id and traceparent", |b| {
        b.iter(|| record_headers(black_box(&message), black_box(&trace)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
