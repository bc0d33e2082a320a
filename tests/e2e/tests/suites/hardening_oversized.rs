//! Messages larger than the services may write. A producer with compression and a larger
//! `message.max.bytes` than the services' can put a message of several megabytes on a topic
//! (the broker limits the compressed batch): its dead letter keeps the first bytes and says how
//! many it had, the partition moves on, and `crm-sync dlq replay` leaves the cut letter alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::app::{App, AppOptions, spawn_app};
use crm_sync_e2e::salesforce::{outbound_message, won_opportunity};
use crm_sync_e2e::{Tenant, TestEnv, binary_path, eventually, post_outbound_message, read_topic};
use crm_sync_store::views;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(60);
const BIG: usize = 3_000_000;

#[tokio::test]
async fn a_message_too_large_to_write_again_is_dead_lettered_cut_and_the_partition_moves_on() {
    let env = TestEnv::new("oversized").await;
    let tenant = Tenant::create(&env.pool, "oversized", true, true).await;
    let App {
        ingest,
        evaluator: _evaluator,
        provisioner: _provisioner,
        ..
    } = spawn_app(&env, AppOptions::default()).await;

    // Three megabytes that are not a CrmEvent, compressed to a few kilobytes on the wire, on the
    // partition of the real event that follows.
    let key = format!("{}/Opportunity/006OVERSIZED0001AA", tenant.integration_id);
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("compression.type", "lz4")
        .set("message.max.bytes", "5000000")
        .create()
        .unwrap();
    let payload = vec![0xff_u8; BIG];
    producer
        .send(
            FutureRecord::to(&env.topics.events)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04lOVERSIZED00001A",
            "006OVERSIZED0001AA",
            "005O",
            "10",
        )],
    );
    let (status, body) = post_outbound_message(&ingest, &tenant, xml).await;
    assert_eq!(status, 200, "{body}");
    eventually("the real event behind it to be recorded", WAIT, || async {
        (views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .len()
            == 1)
            .then_some(())
    })
    .await;

    let dlq = format!("{}.dlq", env.topics.events);
    let dead = read_topic(&dlq).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.header("crm-sync-dlq-reason"), Some("undecodable"));
    assert_eq!(
        letter.header("crm-sync-dlq-truncated-from"),
        Some(BIG.to_string().as_str())
    );
    assert!(letter.payload.len() < 1_000_000, "{}", letter.payload.len());
    assert!(payload.starts_with(&letter.payload));
    assert_eq!(letter.key.as_deref(), Some(key.as_str()));

    // A replay would send the cut bytes as if they were the message: it is refused, saying where
    // the whole message still is.
    let replayed = std::process::Command::new(binary_path("crm-sync"))
        .args(["dlq", "replay", "--topic", &dlq])
        .env("CRM_SYNC__KAFKA__BROKERS", &env.brokers)
        .env("CRM_SYNC__DATABASE__URL", &env.database_url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{said}");
    assert!(said.contains("replayed 0 of 1"), "{said}");
    assert!(said.contains(&format!("{}/", env.topics.events)), "{said}");
    assert_eq!(crm_sync_e2e::topic_message_count(&env.topics.events), 2);
}
