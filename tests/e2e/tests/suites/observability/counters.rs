//! What every service counts on `/metrics`.

use super::*;

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

/// One series a service must reach: the service, the metric, labels of the series, the value.
type Expected<'a> = (&'a Service, &'a str, &'a [&'a str], f64);

/// Waits for each of `expected` in turn.
async fn wait_for_metrics(expected: &[Expected<'_>]) {
    for (service, name, labels, value) in expected {
        wait_for_metric(service, name, labels, *value).await;
    }
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
    wait_for_metrics(&[
        (
            &ingest,
            "crm_sync_ingest_requests_total",
            &["crm=\"salesforce\"", "outcome=\"accepted\""],
            1.0,
        ),
        (
            &ingest,
            "crm_sync_http_requests_total",
            &[&route, "method=\"POST\"", "status=\"200\""],
            1.0,
        ),
        (
            &ingest,
            "crm_sync_http_requests_total",
            &[&route, &format!("status=\"{refused_status}\"")],
            1.0,
        ),
        (
            &ingest,
            "crm_sync_http_request_duration_seconds_count",
            &[&route],
            2.0,
        ),
        (
            &ingest,
            "crm_sync_messages_produced_total",
            &[&topic(&t.events)],
            2.0,
        ),
    ])
    .await;

    // workflow-evaluator: events in by outcome, the dead letter, the match out.
    wait_for_metrics(&[
        (
            &evaluator,
            "crm_sync_messages_consumed_total",
            &[&topic(&t.events), "outcome=\"ok\""],
            2.0,
        ),
        (
            &evaluator,
            "crm_sync_messages_consumed_total",
            &[&topic(&t.events), "outcome=\"dead_lettered\""],
            1.0,
        ),
        (
            &evaluator,
            "crm_sync_dead_letters_total",
            &[&topic(&t.events), "reason=\"undecodable\""],
            1.0,
        ),
        (
            &evaluator,
            "crm_sync_evaluator_events_total",
            &["outcome=\"matched\""],
            1.0,
        ),
        (
            &evaluator,
            "crm_sync_evaluator_events_total",
            &["outcome=\"no_match\""],
            1.0,
        ),
    ])
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
    wait_for_metrics(&[
        (
            &provisioner,
            "crm_sync_messages_produced_total",
            &[&topic(&t.users)],
            users,
        ),
        (
            &provisioner,
            "crm_sync_messages_produced_total",
            &[&topic(&t.activities)],
            activities,
        ),
    ])
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
