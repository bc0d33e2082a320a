//! The record trail across a PostgreSQL outage: the events judged while the evaluator could not
//! write its trail are in it once PostgreSQL is back (the writer tries again rather than drop
//! them). PostgreSQL is shared by every test, so a TCP proxy takes it away for the evaluator only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::proxy::TcpProxy;
use crm_sync_e2e::{Tenant, TestEnv, events, eventually, metric, read_topic};
use crm_sync_proto::v1::CrmUser;

const WAIT: Duration = Duration::from_secs(30);

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
