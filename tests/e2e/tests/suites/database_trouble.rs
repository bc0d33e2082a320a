//! PostgreSQL away or stuck. The record trail across an outage: the events judged while the
//! evaluator could not write its trail are in it once PostgreSQL is back (the writer tries again
//! rather than drop them); PostgreSQL is shared by every test, so a TCP proxy takes it away for
//! the evaluator only. A lock held elsewhere: the provisioner's batch fails after
//! `database.lock_timeout_ms` and is retried, visibly, instead of waiting silently for good; an
//! admin request answers 503 (retry) instead of hanging.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::app::AdminClient;
use crm_sync_e2e::proxy::TcpProxy;
use crm_sync_e2e::{Service, Tenant, TestEnv, events, eventually, metric, read_topic};
use crm_sync_proto::v1::CrmUser;

use crate::admin_support::{company_path, start_admin_api_with, token};

const WAIT: Duration = Duration::from_secs(30);

/// Someone else holds `table` (a migration, a transaction left open in psql) until the returned
/// transaction ends.
async fn lock_table(env: &TestEnv, table: &str) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut held = env.pool.begin().await.unwrap();
    sqlx::query(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
        .execute(&mut *held)
        .await
        .unwrap();
    held
}

/// A provisioner whose statements give up after half a second behind a lock.
async fn impatient_provisioner(env: &TestEnv) -> Service {
    env.start_service(
        "provisioner",
        "provisioner",
        &[("CRM_SYNC__DATABASE__LOCK_TIMEOUT_MS", "500")],
    )
    .await
}

async fn trail_of(env: &TestEnv, tenant: &Tenant, record: &str) -> Vec<String> {
    crm_sync_store::trail::record_events(
        &env.pool,
        tenant.company_id,
        tenant.integration_id,
        record,
        10,
    )
    .await
    .unwrap()
    .into_iter()
    .map(|e| e.event_id)
    .collect()
}

#[tokio::test]
async fn events_judged_while_postgresql_is_away_reach_the_trail_once_it_is_back() {
    let env = TestEnv::new("trail-outage").await;
    let tenant = Tenant::create(&env.pool, "trail-outage", false, true).await;
    let proxy = TcpProxy::for_postgres(&env.database_url).await;
    let proxied = proxy.postgres_url(&env.database_url);
    let evaluator = env
        .start_service(
            "workflow-evaluator",
            "workflow-evaluator",
            &[
                ("CRM_SYNC__DATABASE__URL", proxied.as_str()),
                // The trail's write gives up on the pool within the outage below.
                ("CRM_SYNC__DATABASE__ACQUIRE_TIMEOUT_MS", "1000"),
            ],
        )
        .await;
    eventually("the workflow loaded", WAIT, || async {
        let active = metric(&evaluator, "crm_sync_evaluator_active_workflows", &[]).await;
        (active == 1.0).then_some(())
    })
    .await;

    proxy.cut();
    let owner = CrmUser {
        crm_user_id: "005T".into(),
        ..Default::default()
    };
    let event = events::won_deal(&tenant, "006TRAILOUTAGE001", owner);
    events::send(&env, &event).await;
    // Judged and committed without PostgreSQL (the workflows are in memory)...
    eventually("the event's outcome", WAIT, || async {
        (!read_topic(&env.topics.matches).await.is_empty()).then_some(())
    })
    .await;
    // ...and its trail entry could not be written.
    eventually("a trail write tried again", WAIT, || async {
        let retries = metric(&evaluator, "crm_sync_trail_write_retries_total", &[]).await;
        (retries >= 2.0).then_some(())
    })
    .await;
    assert!(
        trail_of(&env, &tenant, "006TRAILOUTAGE001")
            .await
            .is_empty()
    );

    proxy.restore();
    let trail = eventually("the event in the trail", WAIT, || async {
        let trail = trail_of(&env, &tenant, "006TRAILOUTAGE001").await;
        (!trail.is_empty()).then_some(trail)
    })
    .await;
    assert_eq!(trail, vec![event.event_id.clone()]);
    let dropped = metric(&evaluator, "crm_sync_trail_dropped_total", &[]).await;
    assert_eq!(dropped, 0.0, "nothing dropped");
}

#[tokio::test]
async fn a_batch_stuck_behind_a_lock_held_elsewhere_is_retried_visibly_and_lands_once_it_is_released()
 {
    let env = TestEnv::new("lock-timeout").await;
    let tenant = Tenant::create(&env.pool, "lock-timeout", false, true).await;
    let _evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let provisioner = impatient_provisioner(&env).await;

    let held = lock_table(&env, "activities").await;
    let owner = CrmUser {
        crm_user_id: "005LOCK".into(),
        ..Default::default()
    };
    events::send(
        &env,
        &events::won_deal(&tenant, "006LOCKED000000001", owner),
    )
    .await;
    // The batch fails after the lock timeout and is retried; retried a few times, the
    // provisioner says so in /readyz.
    let body = eventually("/readyz to report the retries", WAIT, || async {
        let answer = reqwest::get(provisioner.ops_url("/readyz")).await.ok()?;
        let status = answer.status().as_u16();
        let body = answer.text().await.ok()?;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.contains("retrying a transient failure"), "{body}");
    assert!(metric(&provisioner, "crm_sync_retries_total", &[]).await >= 3.0);

    held.rollback().await.unwrap();
    eventually(
        "the activity recorded once the lock is gone",
        WAIT,
        || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM activities WHERE record_id = $1")
                .bind("006LOCKED000000001")
                .fetch_one(&env.pool)
                .await
                .unwrap();
            (n == 1).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_admin_request_behind_a_lock_held_elsewhere_answers_503_to_retry() {
    let env = TestEnv::new("lock-timeout-admin").await;
    let tenant = Tenant::create(&env.pool, "lock-timeout-admin", false, true).await;
    let admin = token(&env, tenant.company_id, "admin").await;
    let api = start_admin_api_with(&env, &[("CRM_SYNC__DATABASE__LOCK_TIMEOUT_MS", "500")]).await;
    let client = AdminClient::new(&api, Some(&admin));
    let path = company_path(tenant.company_id, "/integrations");
    client.get(&path).await.expect(200);

    let held = lock_table(&env, "integrations").await;
    let started = std::time::Instant::now();
    let answer = client.get(&path).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(answer.json()["error"], "unavailable", "{}", answer.body);
    assert_eq!(
        answer.headers.get("retry-after").map(String::as_str),
        Some("5")
    );

    held.rollback().await.unwrap();
    client.get(&path).await.expect(200);
}

/// Outcomes a provisioner holds while its batch is stuck count as lag: its buffers take a
/// thousand messages per partition, which librdkafka already counts as consumed, so the gauge
/// (and the alert on a stalled consumer) would otherwise read 0 through the whole outage.
#[tokio::test]
async fn outcomes_held_by_a_stuck_provisioner_count_as_lag_until_it_moves_on() {
    let env = TestEnv::new("lock-timeout-lag").await;
    let tenant = Tenant::create(&env.pool, "lock-timeout-lag", false, true).await;
    let provisioner = impatient_provisioner(&env).await;
    let topic = format!("topic=\"{}\"", env.topics.matches);
    let labels = [topic.as_str(), "partition=\"0\""];
    let lag = || metric(&provisioner, "crm_sync_consumer_lag", &labels);

    let held = lock_table(&env, "activities").await;
    let outcomes: Vec<(Option<i32>, String, Vec<u8>)> = (0..200)
        .map(|i| {
            let owner = CrmUser {
                crm_user_id: format!("005LAG{i:03}"),
                ..Default::default()
            };
            let outcome = events::matched_outcome(&tenant, &format!("006LAG{i:012}"), owner);
            let key = format!(
                "{}/Opportunity/{}",
                tenant.integration_id, outcome.record_id
            );
            (
                Some(0),
                key,
                crm_sync_proto::Message::encode_to_vec(&outcome),
            )
        })
        .collect();
    events::backlog_on_matches(&env, &outcomes).await;
    // All 200 are fetched at once (a few dozen KiB); the first batch is stuck behind the lock.
    eventually("the held outcomes reported as lag", WAIT, || async {
        (lag().await >= 190.0).then_some(())
    })
    .await;

    held.rollback().await.unwrap();
    eventually(
        "every outcome recorded once the lock is gone",
        WAIT,
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM activities WHERE company_id = $1")
                    .bind(tenant.company_id)
                    .fetch_one(&env.pool)
                    .await
                    .unwrap();
            (n == 200).then_some(())
        },
    )
    .await;
    eventually("no lag left", WAIT, || async {
        (lag().await == 0.0).then_some(())
    })
    .await;
}
