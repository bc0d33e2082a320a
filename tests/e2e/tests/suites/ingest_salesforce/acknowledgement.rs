//! A batch is acknowledged only once Kafka has every event of it, and never in part.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_only_once_kafka_has_every_event_and_redelivery_keeps_ids() {
    let f = fixture("ingest-sf-batch").await;
    let ingest = f.env.start_service("ingest", "ingest", &[]).await;
    let url = endpoint(&ingest, &f.integration_id.to_string(), Some(&f.token));
    let message = outbound_message(ORG, &three_notifications());

    let answer = post(&url, "text/xml; charset=utf-8", message.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/xml"),
        "{}",
        answer.header("content-type").unwrap_or_default()
    );
    assert!(answer.body.contains("<Ack>true</Ack>"), "{}", answer.body);
    // The Ack comes only after Kafka acknowledged: the records are there the moment it arrives.
    assert_eq!(topic_message_count(&f.env.topics.events), 3);

    let records = read_topic(&f.env.topics.events).await;
    assert_eq!(records.len(), 3);
    let namespace = Uuid::parse_str(EVENT_ID_NAMESPACE).unwrap();
    let expected_id = |notification: &str| {
        Uuid::new_v5(
            &namespace,
            format!("salesforce-outbound:{}:{notification}", f.integration_id).as_bytes(),
        )
        .to_string()
    };
    let by_delivery: BTreeMap<String, (Record, CrmEvent)> = records
        .iter()
        .map(|r| {
            let e = decode(r);
            (e.source_delivery_id.clone(), (r.clone(), e))
        })
        .collect();
    assert_eq!(by_delivery.len(), 3);
    let iid = f.integration_id.to_string();

    for (record, event) in by_delivery.values() {
        assert_eq!(event.event_id, expected_id(&event.source_delivery_id));
        assert_eq!(
            record.header("crm-sync-event-id"),
            Some(event.event_id.as_str())
        );
        assert!(
            record.header("traceparent").is_some(),
            "{:?}",
            record.headers
        );
        assert_eq!(
            record.key.as_deref(),
            Some(format!("{iid}/{}/{}", event.object_type, event.record_id).as_str())
        );
        assert_eq!(event.integration_id, iid);
        assert_eq!(event.crm, CrmKind::Salesforce as i32);
        assert_eq!(event.crm_account_id, ORG);
        assert!(event.received_at.is_some());
    }

    let (_, won) = &by_delivery["04l5g00000ABCDEAA1"];
    assert_eq!(won.object_type, "Opportunity");
    assert_eq!(won.record_id, "0065g00000XyZ12AAB");
    assert_eq!(won.change_type, ChangeType::Updated as i32);
    assert_eq!(won.owner.as_ref().unwrap().crm_user_id, OWNER_1);
    assert_eq!(text(won, "Amount"), Some(Kind::Text("1250.50".into())));
    assert_eq!(
        text(won, "Name"),
        Some(Kind::Text("Smith & Sons - 200 licenses".into()))
    );
    assert_eq!(
        text(won, "StageName"),
        Some(Kind::Text("Closed Won".into()))
    );
    assert_eq!(text(won, "Description"), Some(Kind::NullValue(true)));
    assert_eq!(
        text(won, "Id"),
        Some(Kind::Text("0065g00000XyZ12AAB".into()))
    );
    assert_eq!(won.fields.len(), 9);
    assert_eq!(
        won.occurred_at.as_ref().map(|t| (t.seconds, t.nanos)),
        Some((seconds("2026-11-20T15:04:05Z"), 0))
    );

    let (_, new) = &by_delivery["04l5g00000ABCDEAA2"];
    assert_eq!(
        new.change_type,
        ChangeType::Created as i32,
        "CreatedDate = LastModifiedDate"
    );
    assert_eq!(new.owner.as_ref().unwrap().crm_user_id, OWNER_2);
    assert_eq!(
        new.occurred_at.as_ref().unwrap().seconds,
        seconds("2026-11-21T08:00:00Z")
    );

    let (_, invoice) = &by_delivery["04l5g00000ABCDEAA3"];
    assert_eq!(invoice.object_type, "Invoice__c");
    assert_eq!(invoice.record_id, "a0B5g00000Inv01AAA");
    assert_eq!(invoice.change_type, ChangeType::Updated as i32);
    assert_eq!(invoice.owner.as_ref().unwrap().crm_user_id, OWNER_1);
    assert_eq!(text(invoice, "Total__c"), Some(Kind::Text("10.00".into())));
    assert_eq!(
        invoice.occurred_at.as_ref().unwrap().seconds,
        seconds("2026-11-22T10:30:00Z")
    );

    // Salesforce redelivers until it sees an Ack: the same notifications carry the same ids.
    let again = post(&url, "text/xml; charset=utf-8", message).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.contains("<Ack>true</Ack>"));
    let records = read_topic(&f.env.topics.events).await;
    assert_eq!(records.len(), 6);
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *ids.entry(decode(r).event_id).or_default() += 1;
    }
    let first_ids: Vec<String> = by_delivery
        .values()
        .map(|(_, e)| e.event_id.clone())
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for id in &first_ids {
        assert_eq!(ids.get(id), Some(&2), "{ids:?}");
    }

    let metrics = reqwest::get(ingest.ops_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric_value(
            &metrics,
            "crm_sync_ingest_requests_total",
            &["crm=\"salesforce\"", "outcome=\"accepted\""]
        ) == Some(2.0),
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "crm_sync_ingest_notifications_total",
            &["crm=\"salesforce\""]
        ) == Some(6.0),
        "{metrics}"
    );

    let log = ingest.log_file.clone();
    let status = ingest.terminate().await;
    assert!(
        status.success(),
        "ingest exits cleanly on SIGTERM: {status}"
    );
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains("salesforce outbound message accepted"),
        "{log}"
    );
    assert!(
        !log.contains(&f.token),
        "the webhook token must never be logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_that_kafka_did_not_acknowledge() {
    let f = fixture("ingest-sf-kafka-refuses").await;
    // The broker runs without topic auto-creation: every delivery to this topic times out.
    let missing_topic = format!("{}.missing", f.env.topics.events);
    let ingest = f
        .env
        .start_service(
            "ingest",
            "ingest",
            &[
                ("CRM_SYNC__TOPICS__EVENTS", missing_topic.as_str()),
                ("CRM_SYNC__KAFKA__DELIVERY_TIMEOUT_MS", "2000"),
            ],
        )
        .await;
    let url = endpoint(&ingest, &f.integration_id.to_string(), Some(&f.token));
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        post(
            &url,
            "text/xml",
            outbound_message(ORG, &three_notifications()),
        ),
    )
    .await
    .expect("ingest answers once the delivery timeout has passed");
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.error_code(), "kafka_unavailable");
    assert_eq!(answer.header("retry-after"), Some("5"));
    assert!(!answer.body.contains("<Ack>"));
    ingest.kill().await;
}

/// Creates a topic whose broker-side record-batch limit is tiny, so that one large notification
/// is refused by Kafka while the others in the same request would fit.
async fn topic_refusing_large_messages(name: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", crm_sync_e2e::brokers())
        .create()
        .unwrap();
    let topic = NewTopic::new(name, crm_sync_e2e::PARTITIONS, TopicReplication::Fixed(1))
        .set("max.message.bytes", "2048");
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .unwrap()
    {
        result.unwrap();
    }
    // Partition leaders take a moment after creation: wait until the topic is readable.
    crm_sync_e2e::eventually(
        "the new topic to be usable",
        Duration::from_secs(30),
        || async {
            let n = name.to_owned();
            tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(|| topic_message_count(&n))
            })
            .await
            .unwrap()
            .ok()
        },
    )
    .await;
}

/// `count` won opportunities with distinct notification ids, records and keys.
fn opportunities(prefix: &str, count: usize, description: Option<&str>) -> String {
    let ids: Vec<(String, String)> = (0..count)
        .map(|i| {
            (
                format!("04l{prefix}{i:05}AAA"),
                format!("006{prefix}{i:05}AAB"),
            )
        })
        .collect();
    let notifications: Vec<Notification<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, (id, record))| {
            let fields: Vec<(&str, Option<&str>)> = vec![
                ("Id", Some(record.as_str())),
                ("Amount", Some("100.00")),
                ("LastModifiedDate", Some("2026-11-20T15:04:05.000Z")),
                ("OwnerId", Some(OWNER_1)),
                ("StageName", Some("Closed Won")),
                ("Description", if i == 0 { description } else { None }),
            ];
            Notification {
                id: id.as_str(),
                object: "Opportunity",
                fields: Box::leak(fields.into_boxed_slice()),
            }
        })
        .collect();
    outbound_message(ORG, &notifications)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_kafka_refuses_in_part_is_published_not_at_all() {
    let f = fixture("ingest-sf-atomic").await;
    let topic = format!("{}.small", f.env.topics.events);
    topic_refusing_large_messages(&topic).await;
    let ingest = f
        .env
        .start_service(
            "ingest",
            "ingest",
            &[("CRM_SYNC__TOPICS__EVENTS", topic.as_str())],
        )
        .await;
    let url = endpoint(&ingest, &f.integration_id.to_string(), Some(&f.token));
    // Random hex does not compress below the topic's limit.
    let large: String = (0..80)
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect();

    // Twelve notifications over six partitions: all but the large one's fit, and without a
    // transaction the ones on other partitions would be written.
    let refused = post(&url, "text/xml", opportunities("A", 12, Some(&large))).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.error_code(), "kafka_unavailable");
    assert_eq!(
        topic_message_count(&topic),
        0,
        "no event of a refused batch is visible to read_committed consumers"
    );

    // The producer is usable again, and a refused request sharing a transaction with others
    // fails alone.
    let (good, bad) = tokio::join!(
        post(&url, "text/xml", opportunities("B", 12, None)),
        post(&url, "text/xml", opportunities("C", 12, Some(&large))),
    );
    assert_eq!(good.status, 200, "{}", good.body);
    assert_eq!(bad.status, 503, "{}", bad.body);
    let records = read_topic(&topic).await;
    assert_eq!(records.len(), 12, "exactly the accepted batch");
    assert!(
        records
            .iter()
            .all(|r| decode(r).record_id.starts_with("006B")),
        "only the accepted batch's records"
    );
    let partitions: std::collections::HashSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "the batch spans partitions: {partitions:?}"
    );
    ingest.kill().await;
}
