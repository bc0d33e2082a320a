use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crm_sync_e2e::TestEnv;
use crm_sync_store::sync_jobs::{self, JobKind, Outcome, Progress};
use serde_json::json;
use uuid::Uuid;

pub async fn integration(env: &TestEnv) -> (Uuid, Uuid) {
    let company = Uuid::new_v4();
    let integration = Uuid::new_v4();
    crm_sync_store::sqlx::query("INSERT INTO companies (id, slug, name) VALUES ($1, $2, $2)")
        .bind(company)
        .bind(format!("company {company}"))
        .execute(&env.pool)
        .await
        .unwrap();
    crm_sync_store::sqlx::query(
        "INSERT INTO integrations (id, company_id, name, crm, crm_account_id) VALUES ($1, $2, 'sf', 'salesforce', '00D')",
    )
    .bind(integration)
    .bind(company)
    .execute(&env.pool)
    .await
    .unwrap();
    (company, integration)
}

#[tokio::test]
async fn two_replicas_never_hold_the_same_job() {
    let env = TestEnv::new("pull_leases").await;
    let since = at("2026-11-01T00:00:00Z");
    let mut ids = HashSet::new();
    // One backfill per integration: an integration has at most one active at a time.
    for _ in 0..20 {
        let (_, integration) = integration(&env).await;
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
        ids.insert(job.id);
    }
    // Eight replicas race for the jobs: each job is claimed exactly once.
    let pool = Arc::new(env.pool.clone());
    let mut tasks = Vec::new();
    for r in 0..8 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            while let Some(job) =
                sync_jobs::claim(&pool, &format!("replica-{r}"), Duration::from_secs(30))
                    .await
                    .unwrap()
            {
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    assert_eq!(claimed.len(), 20, "each job claimed once");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), ids);
}

#[tokio::test]
async fn an_expired_lease_moves_on_and_fences_the_old_holder() {
    let env = TestEnv::new("pull_lease_expiry").await;
    let (company, integration) = integration(&env).await;
    let job = sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Backfill,
        at("2026-11-01T00:00:00Z"),
        &["Opportunity".into()],
    )
    .await
    .unwrap()
    .unwrap();
    let a = sync_jobs::claim(&env.pool, "a", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.id, job.id);
    assert!(
        sync_jobs::claim(&env.pool, "b", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
    let progress = Progress {
        checkpoint: json!({"Opportunity": {"stream": 0, "since": "2026-11-02T00:00:00Z", "token": null}}),
        scanned: 200,
        published: 200,
        api_calls: 1,
    };
    assert!(
        sync_jobs::checkpoint(&env.pool, job.id, "a", &progress)
            .await
            .unwrap()
    );
    // "a" stalls (or is SIGKILLed) past its lease: "b" takes over from the checkpoint.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = sync_jobs::claim(&env.pool, "b", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.id, job.id);
    assert_eq!(b.checkpoint, progress.checkpoint);
    assert_eq!(b.records_published, 200);
    assert_eq!(b.attempts, 2);
    // "a" learns at its next write that the job is no longer its own.
    assert!(
        !sync_jobs::checkpoint(&env.pool, job.id, "a", &progress)
            .await
            .unwrap()
    );
    assert!(
        !sync_jobs::renew(&env.pool, job.id, "a", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !sync_jobs::finish(&env.pool, job.id, "a", &Outcome::Succeeded)
            .await
            .unwrap()
    );
    assert!(
        sync_jobs::renew(&env.pool, job.id, "b", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        sync_jobs::finish(&env.pool, job.id, "b", &Outcome::Succeeded)
            .await
            .unwrap()
    );
    let done = sync_jobs::get(&env.pool, job.id).await.unwrap().unwrap();
    assert_eq!(done.state, "succeeded");
    assert!(done.finished_at.is_some() && done.lease_owner.is_none());
    assert_eq!(
        sync_jobs::list(&env.pool, company, integration)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        sync_jobs::list(&env.pool, Uuid::new_v4(), integration)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn reconciliation_reschedules_and_cancel_stops_pending_jobs() {
    let env = TestEnv::new("pull_lease_schedule").await;
    let (company, integration) = integration(&env).await;
    let job = sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Reconciliation,
        at("2026-11-01T00:00:00Z"),
        &["deal".into()],
    )
    .await
    .unwrap()
    .unwrap();
    // One reconciliation schedule per integration.
    assert!(
        sync_jobs::create(
            &env.pool,
            integration,
            JobKind::Reconciliation,
            at("2026-11-01T00:00:00Z"),
            &[]
        )
        .await
        .is_err()
    );
    let claimed = sync_jobs::claim(&env.pool, "a", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let next_since = at("2026-11-30T23:45:00Z");
    let later = chrono::Utc::now() + chrono::Duration::minutes(15);
    assert!(
        sync_jobs::finish(
            &env.pool,
            claimed.id,
            "a",
            &Outcome::Reschedule {
                since: next_since,
                run_after: later,
                carry: serde_json::json!({}),
                error: None,
                objects_not_read: Vec::new(),
            }
        )
        .await
        .unwrap()
    );
    let pending = sync_jobs::get(&env.pool, job.id).await.unwrap().unwrap();
    assert_eq!(
        (pending.state.as_str(), pending.since),
        ("pending", next_since)
    );
    assert_eq!(pending.checkpoint, json!({}));
    assert!(
        sync_jobs::claim(&env.pool, "b", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none(),
        "not due yet"
    );

    let backfill = sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Backfill,
        at("2026-11-01T00:00:00Z"),
        &["deal".into()],
    )
    .await
    .unwrap()
    .unwrap();
    assert!(
        !sync_jobs::cancel(&env.pool, Uuid::new_v4(), backfill.id)
            .await
            .unwrap(),
        "another company's job"
    );
    assert!(
        sync_jobs::cancel(&env.pool, company, backfill.id)
            .await
            .unwrap()
    );
    assert_eq!(
        sync_jobs::get(&env.pool, backfill.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "cancelled"
    );
    assert!(
        sync_jobs::claim(&env.pool, "b", Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
}

fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&chrono::Utc)
}
