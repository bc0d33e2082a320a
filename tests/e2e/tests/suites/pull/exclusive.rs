//! One active backfill per integration, even when an admin's start and the backfill a replica
//! makes on connect (which takes no lock on the integration) are inserted at the same moment.
//!
//! The replica's insert, reading before the admin's commit, is what made two backfills: the
//! one-active-backfill index now makes it skip its own. An admin start after the replica's
//! insert already waits for it (every insert into `sync_jobs` share-locks the integration's row
//! for its foreign key, which the admin's row lock waits for) and then refuses; the index would
//! also refuse it as 409 if that ever changed.

use std::time::Duration;

use chrono::Utc;
use crm_sync_e2e::{TestEnv, eventually};
use crm_sync_store::admin::audit::Actor;
use crm_sync_store::sync_jobs::backfills::{self, Refused};
use crm_sync_store::sync_jobs::{self, JobKind};
use tokio::task::JoinHandle;

use super::connectors::{count, key};
use super::*;

const ACTIVE_BACKFILLS: &str =
    "SELECT count(*) FROM sync_jobs WHERE kind = 'backfill' AND state IN ('pending', 'running')";

/// Inserts a pending backfill in a transaction left open: the other side's insert runs while it
/// is neither committed nor visible.
async fn uncommitted_backfill(
    env: &TestEnv,
    company_id: Uuid,
    integration_id: Uuid,
    requested_by: &str,
) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut tx = env.pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO sync_jobs (id, company_id, integration_id, kind, since, objects, requested_by)
         VALUES (gen_random_uuid(), $1, $2, 'backfill', now() - interval '30 days', '{}', $3)",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(requested_by)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

/// Until `task` ended or waits for a row lock of this test's database (the uncommitted insert's
/// index entry).
async fn ended_or_waiting<T>(env: &TestEnv, task: &JoinHandle<T>) {
    eventually(
        "the other insert to end or to wait for the first",
        Duration::from_secs(10),
        || async {
            let waiting = count(
                env,
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .await;
            (task.is_finished() || waiting > 0).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_start_while_the_backfill_on_connect_is_inserted_is_refused_as_already_running() {
    let fake = fake_salesforce().await;
    let s = salesforce_setup("pull-one-backfill-admin", &fake).await;
    let on_connect = uncommitted_backfill(&s.env, s.company_id, s.integration_id, "system").await;

    let pool = s.env.pool.clone();
    let (company_id, integration_id) = (s.company_id, s.integration_id);
    let admin = tokio::spawn(async move {
        let actor = Actor {
            token_id: None,
            name: "admin".to_owned(),
        };
        let since = Utc::now() - chrono::Duration::days(90);
        backfills::start(
            &pool,
            &key(),
            &actor,
            company_id,
            integration_id,
            since,
            None,
        )
        .await
    });
    ended_or_waiting(&s.env, &admin).await;
    on_connect.commit().await.unwrap();

    let started = admin.await.unwrap();
    assert!(
        matches!(started, Err(Refused::AlreadyActive(..))),
        "the admin's start must be refused while the backfill on connect runs: {started:?}"
    );
    assert_eq!(count(&s.env, ACTIVE_BACKFILLS).await, 1);
    assert_eq!(
        count(
            &s.env,
            "SELECT count(*) FROM audit_log WHERE action = 'backfill.started'"
        )
        .await,
        0,
        "a refused start leaves no audit entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backfill_on_connect_racing_an_admin_start_is_skipped() {
    let fake = fake_salesforce().await;
    let s = salesforce_setup("pull-one-backfill-connect", &fake).await;
    let admin = uncommitted_backfill(&s.env, s.company_id, s.integration_id, "admin").await;

    let pool = s.env.pool.clone();
    let on_connect = tokio::spawn(async move {
        sync_jobs::schedule_connected(
            &pool,
            Duration::from_secs(900),
            Duration::from_secs(300),
            30,
        )
        .await
    });
    ended_or_waiting(&s.env, &on_connect).await;
    admin.commit().await.unwrap();

    let created = on_connect.await.unwrap().unwrap();
    let kinds: Vec<JobKind> = created.iter().map(|j| j.kind).collect();
    assert_eq!(
        kinds,
        [JobKind::Reconciliation],
        "the schedule is made, the second backfill is not"
    );
    assert_eq!(count(&s.env, ACTIVE_BACKFILLS).await, 1);
    let requested_by: (String,) = sqlx::query_as(
        "SELECT requested_by FROM sync_jobs WHERE kind = 'backfill' AND state = 'pending'",
    )
    .fetch_one(&s.env.pool)
    .await
    .unwrap();
    assert_eq!(requested_by.0, "admin");
}
