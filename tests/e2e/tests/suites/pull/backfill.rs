//! The backfill on connect: run by one of two replicas at a time, SIGKILLed mid-way and resumed
//! from its checkpoint by the other, every won record becomes exactly one activity.

use std::collections::HashMap;
use std::time::Duration;

use crm_sync_e2e::eventually;
use crm_sync_store::sync_jobs::JobKind;

use super::connectors::count;
use super::*;

/// Opportunities in the fake CRM; every third one is won. The scale: the test took
/// 110 s on the shared 2-vCPU machine (debug build, load average 8–12).
const RECORDS: usize = 100_000;

fn id(n: usize) -> String {
    format!("0065g{n:013}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_killed_mid_way_resumes_on_the_other_replica_with_nothing_lost_or_doubled() {
    let fake = fake_salesforce().await;
    for n in 0..RECORDS {
        let stage = if n % 3 == 0 {
            "Closed Won"
        } else {
            "Prospecting"
        };
        fake.put("Opportunity", &id(n), opportunity(stage, n as u64 + 1));
    }
    let won = RECORDS.div_ceil(3);
    let s = salesforce_setup("pull-backfill", &fake).await;
    let pull = [
        ("CRM_SYNC__PULL__BACKFILL_ON_CONNECT_DAYS", "30"),
        ("CRM_SYNC__PULL__PAGE_SIZE", "500"),
        ("CRM_SYNC__PULL__RECORDS_PER_SECOND", "2000"),
        // Long enough that a page never outlasts it on a loaded machine (a lease lost mid-run
        // hands the job over and publishes the page in hand twice), short enough that the
        // survivor takes over soon after the kill.
        ("CRM_SYNC__PULL__LEASE_SECS", "20"),
    ];
    let replica = |name: &'static str| {
        let mut vars = pull.to_vec();
        vars.push(("HOSTNAME", name));
        vars
    };
    let a = ingest(&s.env, "ingest-a", &replica("replica-a")).await;
    let b = ingest(&s.env, "ingest-b", &replica("replica-b")).await;
    let evaluator = s
        .env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let provisioner = s
        .env
        .start_service(
            "provisioner",
            "provisioner",
            &super::connectors::SERVICE_ENV,
        )
        .await;

    // A third of the way, the replica running the backfill is SIGKILLed.
    let running = wait_for_job(&s.env, s.integration_id, "the backfill a third done", |j| {
        j.kind == JobKind::Backfill && j.records_published >= (RECORDS / 3) as i64
    })
    .await;
    let owner = running.lease_owner.clone().unwrap();
    let survivor = if owner.starts_with("replica-a-") {
        a.kill().await;
        b
    } else {
        assert!(owner.starts_with("replica-b-"), "{owner}");
        b.kill().await;
        a
    };
    let done = eventually(
        "the backfill to succeed",
        Duration::from_secs(240),
        || async {
            jobs(&s.env, s.integration_id)
                .await
                .into_iter()
                .find(|j| j.id == running.id && j.state == "succeeded")
        },
    )
    .await;
    // Resumed from the checkpoint: at most the page in flight at the kill was published twice.
    assert!(
        (RECORDS as i64..=RECORDS as i64 + 500).contains(&done.records_published),
        "{done:?}"
    );

    // Every won opportunity exactly one activity (the table holds one row per record and
    // workflow; the outcomes topic shows no record matched twice).
    let activities = eventually(
        "an activity per won opportunity",
        Duration::from_secs(300),
        || async {
            let n = count(
                &s.env,
                "SELECT count(*) FROM activities WHERE state = 'recorded'",
            )
            .await;
            (n >= won as i64).then_some(n)
        },
    )
    .await;
    assert_eq!(activities, won as i64);
    assert_eq!(
        count(&s.env, "SELECT count(*) FROM activities").await,
        won as i64
    );
    assert_eq!(
        count(&s.env, "SELECT count(*) FROM users").await,
        1,
        "the owner is created once"
    );

    // The survivor went on from the checkpoint: each page was asked for at most twice (the page
    // in flight at the kill), the whole pass not again, and never by two replicas at once.
    let pages: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/query"))
        .collect();
    let mut by_page: HashMap<String, usize> = HashMap::new();
    for page in &pages {
        let key = format!("{}?{:?}", page.path, page.query.get("q"));
        *by_page.entry(key).or_default() += 1;
    }
    let repeated = by_page.values().filter(|n| **n > 1).count();
    assert!(repeated <= 1, "pages asked for again: {by_page:?}");
    assert!(
        pages.len() <= RECORDS / 500 + 3,
        "{} page requests",
        pages.len()
    );
    drop((survivor, evaluator, provisioner));
}
