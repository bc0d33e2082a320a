//! Changes made while a service's PostgreSQL connections are down still take effect: the
//! `NOTIFY` sent meanwhile is lost, so the service reloads after reconnecting. PostgreSQL is
//! shared by every test, so it is taken "away" by a TCP proxy between the service and the server
//! that closes every connection and refuses new ones, then lets them through again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::proxy::TcpProxy;
use crm_sync_e2e::{Tenant, TestEnv, events, eventually, metric, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::{CrmUser, WorkflowOutcome};

const WAIT: Duration = Duration::from_secs(30);

/// Waits until no session listens on `channel` any more (the proxy closed it).
async fn no_listener_on(env: &TestEnv, channel: &str) {
    eventually(&format!("the listening session on {channel} is gone"), WAIT, || async {
        let listening: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND query LIKE '%' || $1 || '%'",
        )
        .bind(channel)
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (listening == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_workflow_deactivated_while_postgresql_is_away_stops_matching_after_the_reconnect() {
    let env = TestEnv::new("listener-evaluator").await;
    let tenant = Tenant::create(&env.pool, "listener", false, true).await;
    // A second active workflow on the same object, left active: it shows the evaluator works.
    let kept = crm_sync_e2e::upsert_workflow(
        &env.pool,
        tenant.company_id,
        tenant.integration_id,
        None,
        serde_json::json!({
            "name": "Any won deal counted", "object_type": "Opportunity",
            "triggers": ["created", "updated"],
            "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
            "user_field": "OwnerId", "activity_type": "deal_count"
        }),
        true,
    )
    .await;

    let proxy = TcpProxy::for_postgres(&env.database_url).await;
    let proxied = proxy.postgres_url(&env.database_url);
    let evaluator = env
        .start_service(
            "workflow-evaluator",
            "workflow-evaluator",
            &[("CRM_SYNC__DATABASE__URL", proxied.as_str())],
        )
        .await;
    let active = || metric(&evaluator, "crm_sync_evaluator_active_workflows", &[]);
    eventually("both workflows loaded", WAIT, || async {
        (active().await == 2.0).then_some(())
    })
    .await;

    // PostgreSQL goes down for the evaluator (refusing connections, as a stopped server does);
    // meanwhile an admin deactivates the first workflow (its NOTIFY reaches no listener of the
    // evaluator's); then PostgreSQL is back, briefly enough that the pool's own reconnection
    // would hide the outage.
    let reconnects = || metric(&evaluator, "crm_sync_listener_reconnects_total", &[]);
    assert_eq!(reconnects().await, 0.0);
    proxy.refuse();
    no_listener_on(&env, "crm_sync_workflows_changed").await;
    // Its connection lost, then at least two attempts refused.
    eventually(
        "the listener tried to connect again, twice",
        WAIT,
        || async { (evaluator.log_count("change listener") >= 3).then_some(()) },
    )
    .await;
    sqlx::query("UPDATE workflows SET active = false WHERE id = $1")
        .bind(tenant.workflow_id)
        .execute(&env.pool)
        .await
        .unwrap();
    proxy.restore();

    eventually(
        "the deactivation takes effect without a new NOTIFY",
        WAIT,
        || async { (active().await == 1.0).then_some(()) },
    )
    .await;
    // One connection lost, however many attempts the outage took: the alert on frequent
    // reconnects must not fire for every retry while PostgreSQL is down.
    assert_eq!(reconnects().await, 1.0);
    let owner = CrmUser {
        crm_user_id: "005L".into(),
        ..Default::default()
    };
    events::send(&env, &events::won_deal(&tenant, "006LISTENER000001", owner)).await;
    let outcomes = eventually("the active workflow's outcome", WAIT, || async {
        let outcomes: Vec<WorkflowOutcome> = read_topic(&env.topics.matches)
            .await
            .iter()
            .map(|r| WorkflowOutcome::decode(r.payload.as_slice()).unwrap())
            .collect();
        (!outcomes.is_empty()).then_some(outcomes)
    })
    .await;
    // Both workflows' outcomes of one event commit in one transaction: the deactivated one's
    // would be here by now.
    let workflows: Vec<String> = outcomes.iter().map(|o| o.workflow_id.clone()).collect();
    assert_eq!(workflows, vec![kept.to_string()]);
}

#[tokio::test]
async fn auto_sync_turned_on_while_postgresql_is_away_provisions_after_the_reconnect() {
    let env = TestEnv::new("listener-auto-sync").await;
    let tenant = Tenant::create(&env.pool, "listener", false, true).await;
    let proxy = TcpProxy::for_postgres(&env.database_url).await;
    let proxied = proxy.postgres_url(&env.database_url);
    let _evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let _provisioner = env
        .start_service(
            "provisioner",
            "provisioner",
            &[("CRM_SYNC__DATABASE__URL", proxied.as_str())],
        )
        .await;
    let owner = CrmUser {
        crm_user_id: "005WAITING0000001".into(),
        ..Default::default()
    };
    events::send(&env, &events::won_deal(&tenant, "006LISTENER000002", owner)).await;
    let identity = || async {
        sqlx::query_scalar::<_, Option<uuid::Uuid>>(
            "SELECT user_id FROM crm_identities WHERE integration_id = $1 AND crm_user_id = $2",
        )
        .bind(tenant.integration_id)
        .bind("005WAITING0000001")
        .fetch_optional(&env.pool)
        .await
        .unwrap()
    };
    eventually("the activity waits unmapped", WAIT, || async {
        identity().await.filter(Option::is_none).map(|_| ())
    })
    .await;

    // Auto-sync is turned on while PostgreSQL is away for the provisioner: its NOTIFY is lost.
    proxy.cut();
    no_listener_on(&env, "crm_sync_auto_sync_enabled").await;
    sqlx::query("UPDATE integrations SET auto_sync_users = true WHERE id = $1")
        .bind(tenant.integration_id)
        .execute(&env.pool)
        .await
        .unwrap();
    proxy.restore();
    eventually(
        "the waiting CRM user gets an account after the reconnect",
        WAIT,
        || async { identity().await.flatten() },
    )
    .await;
}

/// A service opens `database.min_connections` connections as it starts, before any work needs
/// one, so that its first batches do not each wait for a connection to be set up.
#[tokio::test]
async fn a_service_opens_its_database_connections_at_start_before_any_traffic() {
    let env = TestEnv::new("min-conns").await;
    let url = format!("{}?application_name=crm-sync-min-conns", env.database_url);
    let _provisioner = env
        .start_service(
            "provisioner",
            "provisioner",
            &[
                ("CRM_SYNC__DATABASE__URL", &url),
                ("CRM_SYNC__DATABASE__MIN_CONNECTIONS", "6"),
            ],
        )
        .await;
    let open = eventually("six connections open without traffic", WAIT, || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'crm-sync-min-conns'",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        (open >= 6).then_some(open)
    })
    .await;
    assert!(open <= 10, "no more than the pool's size: {open}");
}
