//! Live data first: a backfill holds its next page while the evaluator is more than
//! `pull.max_evaluator_lag` records behind on the events topic, and goes on as it catches up.
//! The evaluator here is its consumer group's committed offsets, moved by the test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crm_sync_e2e::eventually;
use crm_sync_kafka::clients::{Role, base_config};
use crm_sync_store::sync_jobs::JobKind;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::*;

const RECORDS: usize = 1_000;
const PAGE: i64 = 200;

/// Commits, for `group`, every partition of `topic` at its end (`at_end`) or at its start: an
/// evaluator that has read everything, or nothing.
fn commit(group: &str, topic: &str, at_end: bool) {
    let consumer: BaseConsumer = base_config(&crm_sync_e2e::kafka_settings(), Role::Consumer)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    for p in 0..crm_sync_e2e::PARTITIONS {
        let at = if at_end { end(&consumer, topic, p) } else { 0 };
        offsets
            .add_partition_offset(topic, p, Offset::Offset(at))
            .unwrap();
    }
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
}

/// The partition's high watermark; a topic created a moment ago may not answer at once.
fn end(consumer: &BaseConsumer, topic: &str, partition: i32) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok((_, high)) => return high,
            Err(e) if Instant::now() > deadline => panic!("watermarks of {topic}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

async fn published(env: &crm_sync_e2e::TestEnv, integration_id: Uuid) -> i64 {
    jobs(env, integration_id)
        .await
        .into_iter()
        .find(|j| j.kind == JobKind::Backfill)
        .map_or(0, |j| j.records_published)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_waits_while_the_evaluator_lags_and_goes_on_as_it_catches_up() {
    let fake = fake_salesforce().await;
    for n in 0..RECORDS {
        fake.put(
            "Opportunity",
            &format!("0065gLAG{n:010}"),
            opportunity("Closed Won", n as u64 + 1),
        );
    }
    let s = salesforce_setup("pull-lag", &fake).await;
    let group = format!("{}-workflow-evaluator", s.env.id);
    let events = s.env.topics.events.clone();
    commit(&group, &events, false);
    let page = PAGE.to_string();
    // 100 records/s: the second page is due 2 s after the first, when the lag (read at most
    // once a second) already counts the first. The lease of 30 s lets a page wait 10 s at most.
    let _ingest = ingest(
        &s.env,
        "ingest",
        &[
            ("CRM_SYNC__PULL__BACKFILL_ON_CONNECT_DAYS", "30"),
            ("CRM_SYNC__PULL__PAGE_SIZE", page.as_str()),
            ("CRM_SYNC__PULL__RECORDS_PER_SECOND", "100"),
            ("CRM_SYNC__PULL__LEASE_SECS", "30"),
            ("CRM_SYNC__PULL__EVALUATOR_GROUP", group.as_str()),
            ("CRM_SYNC__PULL__MAX_EVALUATOR_LAG", "100"),
        ],
    )
    .await;

    eventually("the first page", Duration::from_secs(60), || async {
        (published(&s.env, s.integration_id).await > 0).then_some(())
    })
    .await;
    // Nothing of it was read: the backfill holds at one page.
    let hold = Instant::now() + Duration::from_secs(5);
    while Instant::now() < hold {
        assert_eq!(
            published(&s.env, s.integration_id).await,
            PAGE,
            "a page published while the evaluator was {PAGE} records behind"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The evaluator reads everything as it comes: the backfill goes on to its end.
    let caught_up = Arc::new(AtomicBool::new(false));
    let reader = tokio::task::spawn_blocking({
        let (group, events, caught_up) = (group.clone(), events.clone(), caught_up.clone());
        move || {
            while !caught_up.load(Ordering::Relaxed) {
                commit(&group, &events, true);
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let done = wait_for_job(&s.env, s.integration_id, "the backfill to succeed", |j| {
        j.kind == JobKind::Backfill && j.state == "succeeded"
    })
    .await;
    caught_up.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    assert_eq!(done.records_published, RECORDS as i64);
}
