//! The `ingest` binary receiving Salesforce Outbound Messages, against the real local stack.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use crm_sync_e2e::app::Answer;
use crm_sync_e2e::{Record, Service, TestEnv, read_topic, topic_message_count};
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind, field_value::Kind};
use crm_sync_store::tenants::{self, IntegrationInput};
use uuid::Uuid;

const ORG: &str = "00D5g000004ABCDEAA";
/// Pinned here on purpose: if ingest's namespace changed, redelivered notifications would get new
/// event ids after a deploy and no longer deduplicate.
const EVENT_ID_NAMESPACE: &str = "3f6c9a2e-51d4-4b7a-8e0f-5c1b2d7e9a40";

struct Fixture {
    env: TestEnv,
    integration_id: Uuid,
    /// A HubSpot integration of the same company, with the same token.
    hubspot_integration_id: Uuid,
    token: String,
}

async fn fixture(name: &str) -> Fixture {
    let env = TestEnv::new(name).await;
    let company = tenants::upsert_company(&env.pool, None, "acme", "Acme Inc.")
        .await
        .unwrap();
    let token = crm_sync_store::secrets::new_token();
    let integration = |name: &str, crm: &str| IntegrationInput {
        id: None,
        company_id: company,
        name: name.into(),
        crm: crm.into(),
        crm_account_id: ORG.into(),
        auto_sync_users: false,
        webhook_token: Some(token.clone()),
    };
    let integration_id = tenants::upsert_integration(&env.pool, &integration("sf", "salesforce"))
        .await
        .unwrap();
    let hubspot_integration_id =
        tenants::upsert_integration(&env.pool, &integration("hs", "hubspot"))
            .await
            .unwrap();
    Fixture {
        env,
        integration_id,
        hubspot_integration_id,
        token,
    }
}

fn endpoint(ingest: &Service, integration_id: &str, token: Option<&str>) -> String {
    let path = format!("/v1/integrations/{integration_id}/salesforce/outbound-messages");
    match token {
        Some(token) => ingest.url(&format!("{path}?token={token}")),
        None => ingest.url(&path),
    }
}

/// POSTs an Outbound Message body as Salesforce does (an empty `SOAPAction`).
async fn post(url: &str, content_type: &str, body: String) -> Answer {
    let headers = [("content-type", content_type), ("soapaction", "\"\"")];
    crm_sync_e2e::app::post(url, &headers, body).await
}

/// A notification's sObject: its type and fields (None: `xsi:nil="true"`).
struct Notification<'a> {
    id: &'a str,
    object: &'a str,
    fields: &'a [(&'a str, Option<&'a str>)],
}

fn outbound_message(org: &str, notifications: &[Notification<'_>]) -> String {
    let mut xml = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{org}</OrganizationId>
   <ActionId>04k5g000000XYZAAA2</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/00D5g000004ABCD</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/59.0/00D5g000004ABCD</PartnerUrl>
"#
    );
    for n in notifications {
        xml.push_str(&format!(
            "   <Notification>\n    <Id>{}</Id>\n    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
            n.id, n.object
        ));
        for (name, value) in n.fields {
            match value {
                Some(v) => xml.push_str(&format!("     <sf:{name}>{v}</sf:{name}>\n")),
                None => xml.push_str(&format!("     <sf:{name} xsi:nil=\"true\"/>\n")),
            }
        }
        xml.push_str("    </sObject>\n   </Notification>\n");
    }
    xml.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
    xml
}

const OWNER_1: &str = "0055g00000AbCdEAAZ";
const OWNER_2: &str = "0055g00000ZyXwVAAQ";

fn three_notifications() -> Vec<Notification<'static>> {
    vec![
        Notification {
            id: "04l5g00000ABCDEAA1",
            object: "Opportunity",
            fields: &[
                ("Id", Some("0065g00000XyZ12AAB")),
                ("Amount", Some("1250.50")),
                ("CloseDate", Some("2026-11-20")),
                ("CreatedDate", Some("2026-11-01T09:00:00.000Z")),
                ("LastModifiedDate", Some("2026-11-20T15:04:05.000Z")),
                ("Name", Some("Smith &amp; Sons - 200 licenses")),
                ("OwnerId", Some(OWNER_1)),
                ("StageName", Some("Closed Won")),
                ("Description", None),
            ],
        },
        Notification {
            id: "04l5g00000ABCDEAA2",
            object: "Opportunity",
            fields: &[
                ("Id", Some("0065g00000XyZ13AAB")),
                ("Amount", Some("99.00")),
                ("CreatedDate", Some("2026-11-21T08:00:00.000Z")),
                ("LastModifiedDate", Some("2026-11-21T08:00:00.000Z")),
                ("OwnerId", Some(OWNER_2)),
                ("StageName", Some("Prospecting")),
            ],
        },
        Notification {
            id: "04l5g00000ABCDEAA3",
            object: "Invoice__c",
            fields: &[
                ("Id", Some("a0B5g00000Inv01AAA")),
                ("Total__c", Some("10.00")),
                ("LastModifiedDate", Some("2026-11-22T10:30:00.000+0000")),
                ("OwnerId", Some(OWNER_1)),
            ],
        },
    ]
}

fn decode(record: &Record) -> CrmEvent {
    CrmEvent::decode(record.payload.as_slice()).unwrap()
}

fn text(event: &CrmEvent, field: &str) -> Option<Kind> {
    event.fields.get(field).and_then(|v| v.kind.clone())
}

fn seconds(rfc3339: &str) -> i64 {
    // The test kit has no date library: these instants are spelled out in Unix seconds.
    match rfc3339 {
        "2026-11-20T15:04:05Z" => 1_795_187_045,
        "2026-11-21T08:00:00Z" => 1_795_248_000,
        "2026-11-22T10:30:00Z" => 1_795_343_400,
        other => panic!("no Unix time spelled out for {other}"),
    }
}

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
async fn refused_requests_say_why_and_publish_nothing() {
    let f = fixture("ingest-sf-refused").await;
    let ingest = f
        .env
        .start_service(
            "ingest",
            "ingest",
            &[("CRM_SYNC__INGEST__MAX_BODY_BYTES", "4096")],
        )
        .await;
    let iid = f.integration_id.to_string();
    let url = endpoint(&ingest, &iid, Some(&f.token));
    let one = &three_notifications()[..1];
    let valid = outbound_message(ORG, one);
    assert!(valid.len() < 4096);
    let xml = "text/xml; charset=utf-8";

    let truncated = valid[..valid.len() / 2].to_owned();
    let answer = post(&url, xml, truncated).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "malformed_message")
    );

    let answer = post(&url, xml, outbound_message(ORG, &[])).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "malformed_message")
    );
    assert!(
        answer.message().contains("no notifications"),
        "{}",
        answer.body
    );

    let without_record_id = valid.replace("<sf:Id>0065g00000XyZ12AAB</sf:Id>", "");
    let answer = post(&url, xml, without_record_id).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "malformed_message")
    );
    assert_eq!(answer.message(), "notification 1 has no sObject Id");

    let answer = post(
        &endpoint(&ingest, &iid, Some("not-the-token")),
        xml,
        valid.clone(),
    )
    .await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (401, "unauthorized")
    );

    let answer = post(&endpoint(&ingest, &iid, None), xml, valid.clone()).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (401, "unauthorized")
    );

    for unknown in [
        Uuid::new_v4().to_string(),
        "not-a-uuid".to_owned(),
        f.hubspot_integration_id.to_string(),
    ] {
        let answer = post(
            &endpoint(&ingest, &unknown, Some(&f.token)),
            xml,
            valid.clone(),
        )
        .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (404, "unknown_integration"),
            "{unknown}"
        );
    }

    let answer = post(&url, xml, outbound_message("00D000000000OTHER", one)).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (403, "foreign_organization")
    );

    let answer = post(&url, "application/json", valid.clone()).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (415, "unsupported_media_type")
    );

    let padded = valid.replace(
        "<SessionId",
        &format!("<!-- {} --><SessionId", "x".repeat(5000)),
    );
    let answer = post(&url, xml, padded).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (413, "payload_too_large")
    );

    assert_eq!(topic_message_count(&f.env.topics.events), 0);

    let metrics = reqwest::get(ingest.ops_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(
            &metrics,
            "crm_sync_ingest_requests_total",
            &["outcome=\"invalid_token\""]
        ),
        Some(2.0),
        "{metrics}"
    );
    let log_file = ingest.log_file.clone();
    ingest.kill().await;
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(
        log.contains("foreign_organization"),
        "refusals are logged with their outcome"
    );
    assert!(
        !log.contains(&f.token) && !log.contains("not-the-token"),
        "tokens are never logged"
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

/// The value of the Prometheus sample of `name` whose labels include all of `labels`.
fn metric_value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|l| line.contains(l)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
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
