//! One trace from the CRM's request through every service to the database write.

use super::*;

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
