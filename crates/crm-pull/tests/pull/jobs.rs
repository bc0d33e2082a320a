use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_sync_crm_directory::Crm;
use crm_sync_crm_pull::jobs::{self, JobConfig, Sink};
use crm_sync_e2e::fake_crm::Kind;
use crm_sync_e2e::{TestEnv, eventually};
use crm_sync_proto::v1::{ChangeType, CrmEvent};
use crm_sync_store::sync_jobs::{self, JobKind, Outcome};
use serde_json::json;

use super::*;

/// Keeps what was published; can be told to stall (a replica that stops mid-way) or to take its
/// time over each page (a slow Kafka transaction).
#[derive(Clone, Default)]
pub struct Memory {
    pub events: Arc<Mutex<Vec<CrmEvent>>>,
    stall_after: Arc<Mutex<Option<usize>>>,
    delay: Duration,
}

impl Sink for Memory {
    async fn publish(&self, events: Vec<CrmEvent>) -> Result<usize, String> {
        tokio::time::sleep(self.delay).await;
        let limit = *self.stall_after.lock().unwrap();
        let published = self.events.lock().unwrap().len();
        if limit.is_some_and(|limit| published >= limit) {
            std::future::pending::<()>().await;
        }
        let count = events.len();
        self.events.lock().unwrap().extend(events);
        Ok(count)
    }
}

/// One turn on `job` as replica `owner`, with the tests' job settings.
pub async fn run_once(
    env: &TestEnv,
    owner: &str,
    job: &sync_jobs::Job,
    client: &PullClient,
    scopes: &[Scope],
    sink: &impl Sink,
) -> Outcome {
    jobs::run(&env.pool, owner, &job_config(), job, client, scopes, sink)
        .await
        .unwrap()
}

pub fn job_config() -> JobConfig {
    JobConfig {
        lease: Duration::from_millis(800),
        reconcile_every: Duration::ZERO,
        overlap: Duration::from_secs(1),
        retry_backoff: Duration::from_millis(10),
        ..JobConfig::default()
    }
}

fn id(n: usize) -> String {
    format!("006{n:015}")
}

/// A fake Salesforce with `records` won opportunities, a client paging them by `page`, and a
/// 30-day backfill of them.
async fn won_opportunities_backfill(
    env: &TestEnv,
    records: usize,
    page: u32,
) -> (FakeCrm, PullClient, Vec<Scope>, sync_jobs::Job) {
    let (_, integration) = super::leases::integration(env).await;
    let fake = start(Kind::Salesforce).await;
    for n in 1..=records {
        fake.put(
            "Opportunity",
            &id(n),
            json!({"StageName": "Closed Won", "Amount": n}),
        );
    }
    let client = client(&fake, Crm::Salesforce, TOKEN, config(page));
    let scopes = vec![scope("Opportunity", &["StageName", "Amount"])];
    let since = chrono::Utc::now() - chrono::Duration::days(30);
    let job = sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Backfill,
        since,
        &["Opportunity".into()],
    )
    .await
    .unwrap()
    .unwrap();
    (fake, client, scopes, job)
}

#[tokio::test]
async fn a_killed_backfill_resumes_from_its_checkpoint_without_loss() {
    let env = TestEnv::new("pull_job_resume").await;
    let (_fake, client, scopes, job) = won_opportunities_backfill(&env, 1_000, 100).await;

    // Replica "a" stalls after 400 records and is killed (its task dropped, its lease left).
    let first = Memory::default();
    *first.stall_after.lock().unwrap() = Some(400);
    let claimed = sync_jobs::claim(&env.pool, "a", job_config().lease)
        .await
        .unwrap()
        .unwrap();
    let a = {
        let (pool, first, client, scopes) = (
            env.pool.clone(),
            first.clone(),
            Arc::new(client),
            scopes.clone(),
        );
        let run_client = client.clone();
        let handle = tokio::spawn(async move {
            jobs::run(
                &pool,
                "a",
                &job_config(),
                &claimed,
                &run_client,
                &scopes,
                &first,
            )
            .await
        });
        (handle, client)
    };
    eventually(
        "replica a published 400 records",
        Duration::from_secs(30),
        || async { (first.events.lock().unwrap().len() >= 400).then_some(()) },
    )
    .await;
    a.0.abort();
    let mid = sync_jobs::get(&env.pool, job.id).await.unwrap().unwrap();
    assert!(
        mid.records_published >= 300 && mid.records_published <= 400,
        "{mid:?}"
    );

    // Replica "b" claims it once the lease expired and resumes from the checkpoint.
    let resumed = eventually("the lease expired", Duration::from_secs(10), || async {
        sync_jobs::claim(&env.pool, "b", job_config().lease)
            .await
            .unwrap()
    })
    .await;
    let second = Memory::default();
    let outcome = run_once(&env, "b", &resumed, &a.1, &scopes, &second).await;
    assert_eq!(outcome, Outcome::Succeeded);
    let b_events = second.events.lock().unwrap().clone();
    assert!(
        b_events.len() <= 700,
        "b resumed, not restarted: {}",
        b_events.len()
    );

    // 0 lost; a record published twice carries the same event id (deduplicated downstream).
    let mut by_record: HashMap<String, BTreeSet<String>> = HashMap::new();
    for e in first.events.lock().unwrap().iter().chain(&b_events) {
        by_record
            .entry(e.record_id.clone())
            .or_default()
            .insert(e.event_id.clone());
    }
    assert_eq!(by_record.len(), 1_000);
    assert!(by_record.values().all(|ids| ids.len() == 1));
    let done = sync_jobs::get(&env.pool, job.id).await.unwrap().unwrap();
    assert_eq!(done.state, "succeeded");
    assert!(done.records_published >= 1_000);
}

#[tokio::test]
async fn reconciliation_picks_up_missed_changes_and_deletes() {
    let env = TestEnv::new("pull_job_reconcile").await;
    let (_, integration) = super::leases::integration(&env).await;
    let fake = start(Kind::HubSpot).await;
    let now = chrono::Utc::now();
    for n in 1..=20i64 {
        let at = now - chrono::Duration::minutes(30 - n);
        fake.put_at(
            "deal",
            &n.to_string(),
            json!({"dealstage": "appointmentscheduled", "amount": "10"}),
            at,
        );
    }
    let client = client(&fake, Crm::HubSpot, TOKEN, config(50));
    let scopes = vec![scope("deal", &["dealstage", "amount"])];
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Reconciliation,
        since,
        &["deal".into()],
    )
    .await
    .unwrap()
    .unwrap();
    let sink = Memory::default();
    let job = sync_jobs::claim(&env.pool, "a", job_config().lease)
        .await
        .unwrap()
        .unwrap();
    let outcome = run_once(&env, "a", &job, &client, &scopes, &sink).await;
    assert!(matches!(outcome, Outcome::Reschedule { .. }), "{outcome:?}");
    assert_eq!(sink.events.lock().unwrap().len(), 20);

    // A webhook that never arrived, and a delete.
    fake.put("deal", "3", json!({"dealstage": "closedwon"}));
    fake.delete("deal", "4");
    sink.events.lock().unwrap().clear();
    let job = eventually("the next run is due", Duration::from_secs(10), || async {
        sync_jobs::claim(&env.pool, "b", job_config().lease)
            .await
            .unwrap()
    })
    .await;
    assert!(job.since > since, "incremental from the checkpoint");
    run_once(&env, "b", &job, &client, &scopes, &sink).await;
    let events = sink.events.lock().unwrap().clone();
    let won = events.iter().find(|e| e.record_id == "3").unwrap();
    assert_eq!(text(won, "dealstage").as_deref(), Some("closedwon"));
    let gone = events.iter().find(|e| e.record_id == "4").unwrap();
    assert_eq!(gone.change_type, ChangeType::Deleted as i32);
    assert!(
        events.len() < 20,
        "only what changed since the checkpoint (minus the overlap): {}",
        events.len()
    );
}

#[tokio::test]
async fn refused_credentials_fail_a_backfill_with_the_reason() {
    let env = TestEnv::new("pull_job_refused").await;
    let (_, integration) = super::leases::integration(&env).await;
    let fake = start(Kind::Pipedrive).await;
    let client = client(&fake, Crm::Pipedrive, "revoked", config(50));
    let job = sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Backfill,
        chrono::Utc::now(),
        &["deal".into()],
    )
    .await
    .unwrap()
    .unwrap();
    let claimed = sync_jobs::claim(&env.pool, "a", job_config().lease)
        .await
        .unwrap()
        .unwrap();
    let outcome = run_once(
        &env,
        "a",
        &claimed,
        &client,
        &[scope("deal", &[])],
        &Memory::default(),
    )
    .await;
    let Outcome::Failed(reason) = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        reason.contains(&integration.to_string()) && reason.contains("refused"),
        "{reason}"
    );
    let failed = sync_jobs::get(&env.pool, job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, "failed");
    assert_eq!(failed.last_error.as_deref(), Some(reason.as_str()));
}

#[tokio::test]
async fn a_page_slower_to_publish_than_the_lease_keeps_the_lease_and_is_published_once() {
    let env = TestEnv::new("pull_job_slow_publish").await;
    let (_fake, client, scopes, _job) = won_opportunities_backfill(&env, 30, 10).await;
    let claimed = sync_jobs::claim(&env.pool, "a", job_config().lease)
        .await
        .unwrap()
        .unwrap();
    // Each page takes two and a half leases to publish.
    let slow = Memory {
        delay: job_config().lease * 5 / 2,
        ..Memory::default()
    };
    let config = job_config();
    let run = jobs::run(&env.pool, "a", &config, &claimed, &client, &scopes, &slow);
    let rival = async {
        loop {
            let taken = sync_jobs::claim(&env.pool, "b", job_config().lease)
                .await
                .unwrap();
            assert!(taken.is_none(), "replica b took the job over mid-page");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let outcome = tokio::select! {
        outcome = run => outcome.unwrap(),
        () = rival => unreachable!(),
    };
    assert!(matches!(outcome, Outcome::Succeeded), "{outcome:?}");
    let ids: BTreeSet<String> = slow
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.record_id.clone())
        .collect();
    assert_eq!(
        slow.events.lock().unwrap().len(),
        30,
        "each record published once"
    );
    assert_eq!(ids.len(), 30);
}
