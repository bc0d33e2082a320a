//! A replica stopped with SIGTERM mid-backfill hands the job over at once: it finishes the page
//! in hand, checkpoints and releases the lease, and the other replica goes on from there long
//! before the lease would have expired. Also: the hydration consumer is part of `/readyz`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crm_sync_e2e::eventually;
use crm_sync_store::sync_jobs::JobKind;

use super::*;

const RECORDS: usize = 6_000;
const PAGE: usize = 200;
/// Long next to the handover the test allows: a job resumed only when its lease expired fails.
const LEASE_SECS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_backfill_hands_the_job_to_the_other_replica_at_once() {
    let fake = fake_salesforce().await;
    for n in 0..RECORDS {
        let stage = if n % 3 == 0 {
            "Closed Won"
        } else {
            "Prospecting"
        };
        fake.put(
            "Opportunity",
            &format!("0065gTERM{n:09}"),
            opportunity(stage, n as u64 + 1),
        );
    }
    let s = salesforce_setup("pull-sigterm", &fake).await;
    let lease = LEASE_SECS.to_string();
    let page = PAGE.to_string();
    let replica = |name: &'static str| {
        vec![
            ("CRM_SYNC__PULL__BACKFILL_ON_CONNECT_DAYS", "30"),
            ("CRM_SYNC__PULL__PAGE_SIZE", page.as_str()),
            ("CRM_SYNC__PULL__RECORDS_PER_SECOND", "1000"),
            ("CRM_SYNC__PULL__LEASE_SECS", lease.as_str()),
            ("HOSTNAME", name),
        ]
    };
    let a = ingest(&s.env, "ingest-a", &replica("replica-a")).await;
    let b = ingest(&s.env, "ingest-b", &replica("replica-b")).await;

    let running = wait_for_job(&s.env, s.integration_id, "the backfill a third done", |j| {
        j.kind == JobKind::Backfill && j.records_published >= (RECORDS / 3) as i64
    })
    .await;
    let owner = running.lease_owner.clone().unwrap();
    let (stopping, survivor) = if owner.starts_with("replica-a-") {
        (a, b)
    } else {
        (b, a)
    };
    let terminated_at = Instant::now();
    let status = stopping.terminate().await;
    assert!(status.success(), "a clean exit on SIGTERM: {status:?}");

    let taken_over = eventually(
        "the other replica to take the job over",
        Duration::from_secs(60),
        || async {
            jobs(&s.env, s.integration_id)
                .await
                .into_iter()
                .find(|j| j.id == running.id && j.lease_owner.as_ref().is_some_and(|o| *o != owner))
        },
    )
    .await;
    let handover = terminated_at.elapsed();
    assert!(
        handover < Duration::from_secs(LEASE_SECS / 3),
        "taken over {handover:?} after SIGTERM; the lease lasts {LEASE_SECS} s: {taken_over:?}"
    );
    assert!(taken_over.records_published >= running.records_published);

    let done = eventually(
        "the backfill to succeed",
        Duration::from_secs(120),
        || async {
            jobs(&s.env, s.integration_id)
                .await
                .into_iter()
                .find(|j| j.id == running.id && j.state == "succeeded")
        },
    )
    .await;
    // The stopping replica checkpointed the page it had published: nothing published twice.
    assert_eq!(done.records_published, RECORDS as i64, "{done:?}");
    let mut by_page: HashMap<String, usize> = HashMap::new();
    for page in fake.requests().iter().filter(|r| r.path.contains("/query")) {
        let key = format!("{}?{:?}", page.path, page.query.get("q"));
        *by_page.entry(key).or_default() += 1;
    }
    assert!(
        by_page.values().all(|n| *n == 1),
        "pages asked for twice: {by_page:?}"
    );
    drop(survivor);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_covers_the_hydration_consumer() {
    let env = crm_sync_e2e::TestEnv::new("pull-readyz").await;
    let replica = ingest(&env, "ingest", &[]).await;
    let body: Value = eventually("ingest to be ready", Duration::from_secs(30), || async {
        let answer = reqwest::get(replica.ops_url("/readyz")).await.ok()?;
        answer.json::<Value>().await.ok()
    })
    .await;
    assert_eq!(
        body["checks"]["hydration_consumer"], "ok",
        "the hydration consumer is among ingest's readiness checks: {body}"
    );
}
