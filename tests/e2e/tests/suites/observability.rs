//! What an operator sees of one CRM notification: one trace from the CRM's HTTP request through
//! ingest, the evaluator and the provisioner down to the database write (exported over OTLP to a
//! receiver inside the test), JSON logs carrying that trace id, and `/metrics` counters, latency
//! histograms and consumer lag that move with the traffic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

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

#[tokio::test]
async fn one_trace_runs_from_the_crm_request_through_every_service_to_the_database_write() {
    let env = TestEnv::new("observability-trace").await;
    let tenant = Tenant::create(&env.pool, "traced", true, true).await;
    let receiver = Receiver::start().await;
    let otlp = [
        (
            "CRM_SYNC__TELEMETRY__OTLP_ENDPOINT",
            receiver.endpoint.as_str(),
        ),
        // Export within a fraction of a second instead of the default 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let App {
        ingest,
        evaluator: _evaluator,
        provisioner,
        ..
    } = start_pipeline(&env, &otlp).await;

    // The CRM (or a proxy in front of ingest) started the trace.
    let trace_id = random_hex(16);
    let caller_span_id = random_hex(8);
    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04l0000000TRACE1AA",
            "0060000000TRACE1AA",
            "0050000000TRACE1",
            "999.00",
        )],
    );
    let response = reqwest::Client::new()
        .post(ingest.url(&tenant.outbound_message_path()))
        .header("content-type", "text/xml; charset=utf-8")
        .header("traceparent", format!("00-{trace_id}-{caller_span_id}-01"))
        .body(xml)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let t = &env.topics;
    let spans = eventually("the whole trace exported", WAIT, || async {
        let spans = receiver.trace(&trace_id);
        let has = |service: &str, kind: SpanKind, destination: &str| {
            spans.iter().any(|s| {
                s.service == service
                    && s.kind == kind
                    && s.attr("messaging.destination.name") == Some(destination)
            })
        };
        // Spans are exported as they end, a parent after its children: wait for every one.
        let complete = spans
            .iter()
            .any(|s| s.service == "ingest" && s.kind == SpanKind::Server)
            && has("ingest", SpanKind::Producer, &t.events)
            && has("workflow-evaluator", SpanKind::Consumer, &t.events)
            && has("provisioner", SpanKind::Consumer, &t.matches)
            && has("provisioner", SpanKind::Producer, &t.users)
            && has("provisioner", SpanKind::Producer, &t.activities)
            && spans
                .iter()
                .any(|s| s.service == "provisioner" && s.kind == SpanKind::Client);
        complete.then_some(spans)
    })
    .await;

    // One trace across all three services, continuing the caller's.
    let services: std::collections::BTreeSet<&str> =
        spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        ["ingest", "provisioner", "workflow-evaluator"].into(),
        "{}",
        describe(&spans)
    );
    // No span about this request's messages landed in another trace.
    let our_topics = [&t.events, &t.matches, &t.users, &t.activities];
    for span in receiver.all() {
        if let Some(destination) = span.attr("messaging.destination.name")
            && our_topics.iter().any(|topic| *topic == destination)
        {
            assert_eq!(
                span.trace_id, trace_id,
                "a span outside the trace: {span:?}"
            );
        }
    }

    // ingest: the HTTP server span continues the caller's context...
    let http = one(&spans, "ingest HTTP server span", |s| {
        s.service == "ingest" && s.kind == SpanKind::Server
    });
    assert_eq!(http.parent_span_id, caller_span_id);
    assert_eq!(http.name, format!("POST {OUTBOUND_ROUTE}"));
    assert_eq!(http.attr("http.route"), Some(OUTBOUND_ROUTE));
    assert_eq!(http.attr("http.request.method"), Some("POST"));
    assert_eq!(http.attr("http.response.status_code"), Some("200"));
    assert!(
        !http.attributes.values().any(|v| v.contains(&tenant.token)),
        "the webhook token must not be recorded: {http:?}"
    );
    // ...the webhook handler's span is its child, and the event is produced under that.
    let send_event = one(&spans, "ingest producer span", |s| {
        s.service == "ingest" && s.kind == SpanKind::Producer
    });
    let handler = one(&spans, "ingest handler span", |s| {
        s.service == "ingest" && s.span_id == send_event.parent_span_id
    });
    assert_eq!(handler.kind, SpanKind::Internal);
    assert_child_of(handler, http, &spans);
    assert_eq!(send_event.name, format!("send {}", t.events));
    assert_eq!(send_event.attr("messaging.system"), Some("kafka"));
    assert_eq!(send_event.attr("messaging.operation.type"), Some("send"));
    assert!(
        send_event
            .attr("messaging.destination.partition.id")
            .is_some()
    );
    assert!(send_event.attr("messaging.kafka.offset").is_some());

    // workflow-evaluator: consumes the event as a child of its producer.
    let evaluate = one(&spans, "evaluator consumer span", |s| {
        s.service == "workflow-evaluator" && s.kind == SpanKind::Consumer
    });
    assert_child_of(evaluate, send_event, &spans);
    assert_eq!(evaluate.name, format!("process {}", t.events));
    assert_eq!(evaluate.attr("messaging.operation.type"), Some("process"));
    assert_eq!(
        evaluate.attr("messaging.destination.partition.id"),
        send_event.attr("messaging.destination.partition.id")
    );
    assert_eq!(
        evaluate.attr("messaging.kafka.offset"),
        send_event.attr("messaging.kafka.offset")
    );
    // One span per consumed event, none per output record: the outcome's traceparent names
    // the consumer span.
    assert!(
        !spans
            .iter()
            .any(|s| s.service == "workflow-evaluator" && s.kind == SpanKind::Producer),
        "{}",
        describe(&spans)
    );

    // provisioner: consumes the outcome, writes the database in one transaction, then forwards.
    let provision = one(&spans, "provisioner consumer span", |s| {
        s.service == "provisioner" && s.kind == SpanKind::Consumer
    });
    assert_child_of(provision, evaluate, &spans);
    let write = one(&spans, "provisioner database span", |s| {
        s.service == "provisioner" && s.kind == SpanKind::Client
    });
    assert_child_of(write, provision, &spans);
    assert_eq!(write.attr("db.system.name"), Some("postgresql"));
    for topic in [&t.users, &t.activities] {
        let forward = one(&spans, "provisioner producer span", |s| {
            s.service == "provisioner"
                && s.kind == SpanKind::Producer
                && s.attr("messaging.destination.name") == Some(topic)
        });
        assert_child_of(forward, provision, &spans);
    }

    // The records carry the same trace in their headers...
    let users = read_topic(&t.users).await;
    assert_eq!(users.len(), 1);
    let traceparent = users[0].header("traceparent").expect("traceparent header");
    assert!(traceparent.contains(&trace_id), "{traceparent}");
    // ...and the JSON logs of the request's work name it.
    for service in [&ingest, &provisioner] {
        let log = std::fs::read_to_string(&service.log_file).unwrap();
        let line = log
            .lines()
            .find(|l| l.contains(&format!("\"trace_id\":\"{trace_id}\"")))
            .unwrap_or_else(|| panic!("no log line of {} names the trace:\n{log}", service.name));
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(parsed["span_id"].as_str().is_some_and(|s| s.len() == 16));
    }
}

/// Every series of a metric on a service's `/metrics`, as (labels, value).
async fn series(service: &Service, name: &str) -> Vec<(String, f64)> {
    let text = reqwest::get(service.ops_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (series_name, labels) = series.split_once('{').unwrap_or((series, ""));
            (series_name == name).then(|| (labels.to_owned(), value.parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

async fn wait_for_metric(service: &Service, name: &str, labels: &[&str], expected: f64) {
    let what = format!("{} {name}{labels:?} = {expected}", service.name);
    let mut last = 0.0;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            last = metric(service, name, labels).await;
            if last == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{what}: still {last} after {WAIT:?}");
}

#[tokio::test]
async fn metrics_count_the_traffic_of_every_service() {
    let env = TestEnv::new("observability-metrics").await;
    let tenant = Tenant::create(&env.pool, "measured", true, true).await;
    let App {
        ingest,
        evaluator,
        provisioner,
        ..
    } = start_pipeline(&env, &[]).await;
    let t = env.topics.clone();
    let topic = |name: &str| format!("topic=\"{name}\"");

    // One message with a won opportunity (matches) and an open one (matches no workflow)...
    let xml = outbound_message(
        &tenant.organization_id,
        &[
            won_opportunity(
                "04l000000METRIC1AA",
                "006000000METRIC1AA",
                "005000000METRIC1",
                "120.00",
            ),
            opportunity(
                "04l000000METRIC2AA",
                "006000000METRIC2AA",
                "005000000METRIC2",
                "80.00",
                "Prospecting",
            ),
        ],
    );
    let client = reqwest::Client::new();
    let accepted = client
        .post(ingest.url(&tenant.outbound_message_path()))
        .header("content-type", "text/xml")
        .body(xml.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    // ...one refused for a wrong token...
    let refused = client
        .post(ingest.url(&format!(
            "/v1/integrations/{}/salesforce/outbound-messages?token=wrong",
            tenant.integration_id
        )))
        .header("content-type", "text/xml")
        .body(xml)
        .send()
        .await
        .unwrap();
    let refused_status = refused.status().as_u16().to_string();
    assert!(refused_status.starts_with('4'), "{refused_status}");
    // ...and a record no evaluator can decode, written straight to the events topic.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&t.events)
                .key("garbage")
                .payload(&[0xff_u8, 0xff, 0xff][..]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // ingest: requests by outcome, HTTP requests by route template and status, events out.
    let route = format!("route=\"{OUTBOUND_ROUTE}\"");
    wait_for_metric(
        &ingest,
        "crm_sync_ingest_requests_total",
        &["crm=\"salesforce\"", "outcome=\"accepted\""],
        1.0,
    )
    .await;
    wait_for_metric(
        &ingest,
        "crm_sync_http_requests_total",
        &[&route, "method=\"POST\"", "status=\"200\""],
        1.0,
    )
    .await;
    wait_for_metric(
        &ingest,
        "crm_sync_http_requests_total",
        &[&route, &format!("status=\"{refused_status}\"")],
        1.0,
    )
    .await;
    wait_for_metric(
        &ingest,
        "crm_sync_http_request_duration_seconds_count",
        &[&route],
        2.0,
    )
    .await;
    wait_for_metric(
        &ingest,
        "crm_sync_messages_produced_total",
        &[&topic(&t.events)],
        2.0,
    )
    .await;

    // workflow-evaluator: events in by outcome, the dead letter, the match out.
    wait_for_metric(
        &evaluator,
        "crm_sync_messages_consumed_total",
        &[&topic(&t.events), "outcome=\"ok\""],
        2.0,
    )
    .await;
    wait_for_metric(
        &evaluator,
        "crm_sync_messages_consumed_total",
        &[&topic(&t.events), "outcome=\"dead_lettered\""],
        1.0,
    )
    .await;
    wait_for_metric(
        &evaluator,
        "crm_sync_dead_letters_total",
        &[&topic(&t.events), "reason=\"undecodable\""],
        1.0,
    )
    .await;
    wait_for_metric(
        &evaluator,
        "crm_sync_evaluator_events_total",
        &["outcome=\"matched\""],
        1.0,
    )
    .await;
    wait_for_metric(
        &evaluator,
        "crm_sync_evaluator_events_total",
        &["outcome=\"no_match\""],
        1.0,
    )
    .await;
    // What the evaluator wrote (a match, and whatever else its rules produce for the open
    // opportunity) is exactly what its counter says.
    let matches = read_topic(&t.matches).await.len() as f64;
    assert!(matches >= 1.0);
    wait_for_metric(
        &evaluator,
        "crm_sync_messages_produced_total",
        &[&topic(&t.matches)],
        matches,
    )
    .await;
    // Processing latency is a histogram (buckets, aggregatable across replicas).
    wait_for_metric(
        &evaluator,
        "crm_sync_processing_seconds_count",
        &[&topic(&t.events)],
        3.0,
    )
    .await;
    let buckets = series(&evaluator, "crm_sync_processing_seconds_bucket").await;
    assert!(
        buckets
            .iter()
            .any(|(labels, v)| labels.contains("le=\"+Inf\"") && *v == 3.0),
        "{buckets:?}"
    );

    // provisioner: the outcomes in, one user provisioned, the announcements out.
    wait_for_metric(
        &provisioner,
        "crm_sync_messages_consumed_total",
        &[&topic(&t.matches), "outcome=\"ok\""],
        matches,
    )
    .await;
    wait_for_metric(&provisioner, "crm_sync_users_provisioned_total", &[], 1.0).await;
    let users = read_topic(&t.users).await.len() as f64;
    assert_eq!(users, 1.0);
    let activities = read_topic(&t.activities).await.len() as f64;
    assert!(activities >= 1.0);
    wait_for_metric(
        &provisioner,
        "crm_sync_messages_produced_total",
        &[&topic(&t.users)],
        users,
    )
    .await;
    wait_for_metric(
        &provisioner,
        "crm_sync_messages_produced_total",
        &[&topic(&t.activities)],
        activities,
    )
    .await;

    // Every series says what it counts (`# HELP`), the Kafka core's as much as each service's.
    for (service, names) in [
        (
            &ingest,
            &[
                "crm_sync_ingest_requests_total",
                "crm_sync_messages_produced_total",
                "crm_sync_http_requests_total",
            ][..],
        ),
        (
            &evaluator,
            &[
                "crm_sync_evaluator_events_total",
                "crm_sync_messages_consumed_total",
            ][..],
        ),
        (
            &provisioner,
            &[
                "crm_sync_users_provisioned_total",
                "crm_sync_messages_consumed_total",
            ][..],
        ),
    ] {
        let text = reqwest::get(service.ops_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for name in names {
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "{} /metrics has no description of {name}",
                service.name
            );
        }
    }

    // Consumer lag per partition: every partition of the consumed topic is reported, and once
    // everything is picked up nothing is left behind (a transaction's markers do not count).
    for (service, consumed) in [(&evaluator, &t.events), (&provisioner, &t.matches)] {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let last: Vec<(String, f64)> = series(service, "crm_sync_consumer_lag")
                .await
                .into_iter()
                .filter(|(labels, _)| labels.contains(&topic(consumed)))
                .collect();
            let partitions: std::collections::BTreeSet<&str> = last
                .iter()
                .filter_map(|(labels, _)| labels.split("partition=\"").nth(1)?.split('"').next())
                .collect();
            if partitions.len() == crm_sync_e2e::PARTITIONS as usize
                && last.iter().all(|(_, v)| *v == 0.0)
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} should report zero lag on every partition of {consumed}: {last:?}",
                service.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
