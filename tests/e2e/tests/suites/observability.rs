//! What an operator sees of one CRM notification: one trace from the CRM's HTTP request through
//! ingest, the evaluator and the provisioner down to the database write (exported over OTLP to a
//! receiver inside the test), JSON logs carrying that trace id, and `/metrics` counters, latency
//! histograms and consumer lag that move with the traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod counters;
mod traces;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use crm_sync_e2e::app::{App, AppOptions, Vars, spawn_app};
use crm_sync_e2e::salesforce::{opportunity, outbound_message, won_opportunity};
use crm_sync_e2e::{Service, Tenant, TestEnv, eventually, metric, read_topic};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(60);
const OUTBOUND_ROUTE: &str = "/v1/integrations/{integration_id}/salesforce/outbound-messages";

/// One span as the services exported it.
#[derive(Debug, Clone)]
struct ExportedSpan {
    service: String,
    name: String,
    kind: SpanKind,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

impl ExportedSpan {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// An OTLP/HTTP (protobuf) traces endpoint.
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { endpoint, spans }
    }

    fn trace(&self, trace_id: &str) -> Vec<ExportedSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<ExportedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<ExportedSpan>>>>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let service = attributes(&resource.attributes)
            .remove("service.name")
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                received.push(ExportedSpan {
                    service: service.clone(),
                    kind: span.kind(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    (
        [("content-type", "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attributes(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..bytes * 2].to_owned()
}

/// The pipeline with `extra_env` on top of every service's environment, its consumers owning
/// partitions.
async fn start_pipeline<'e>(env: &'e TestEnv, extra_env: Vars<'_>) -> App<'e> {
    let options = AppOptions {
        ingest_env: extra_env,
        evaluator_env: extra_env,
        provisioner_env: extra_env,
        wait_for_partitions: true,
        ..AppOptions::default()
    };
    spawn_app(env, options).await
}

/// Exactly one span matching `what`, with its description in the failure message.
fn one<'a>(
    spans: &'a [ExportedSpan],
    what: &str,
    matches: impl Fn(&ExportedSpan) -> bool,
) -> &'a ExportedSpan {
    let found: Vec<&ExportedSpan> = spans.iter().filter(|s| matches(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {what} in the trace, found {}; the trace:\n{}",
        found.len(),
        describe(spans)
    );
    found[0]
}

fn describe(spans: &[ExportedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} {:?} {:?} span={} parent={} dest={:?}",
                s.service,
                s.kind,
                s.name,
                s.span_id,
                s.parent_span_id,
                s.attr("messaging.destination.name")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_child_of(child: &ExportedSpan, parent: &ExportedSpan, spans: &[ExportedSpan]) {
    assert_eq!(
        child.parent_span_id,
        parent.span_id,
        "{} ({}) should be a child of {} ({}); the trace:\n{}",
        child.name,
        child.service,
        parent.name,
        parent.service,
        describe(spans)
    );
}
