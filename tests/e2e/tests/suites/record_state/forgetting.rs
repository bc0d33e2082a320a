//! Deleting an integration forgets its records' state: each replica writes a tombstone per
//! record to the changelog (compaction then drops them) and removes them from its local store.
//! An integration merely missing from the database (a replica pointed at the wrong one) keeps
//! its records, counted and named, until an operator records it as deleted
//! (`crm-sync admin forget-integration`).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_integrations_records_are_tombstoned_and_a_missing_ones_kept_until_an_operator_says_so()
 {
    let env = TestEnv::new("state-forget").await;
    let gone = Tenant::create(&env.pool, "forget-gone", true, true).await;
    let kept = Tenant::create(&env.pool, "forget-kept", true, true).await;
    let evaluator = env
        .start_replica(
            "workflow-evaluator",
            "evaluator-1",
            EVALUATOR,
            0,
            &[("CRM_SYNC__EVALUATOR__PURGE_INTERVAL_SECS", "1")],
        )
        .await;
    for (tenant, records) in [(&gone, 3), (&kept, 2)] {
        let feed = Feed::new(&env, tenant);
        for n in 0..records {
            let record = format!("006FORGET{n:09}");
            feed.delta(CrmKind::Salesforce, &record, &[("Amount", "10")], 100)
                .await;
        }
    }
    evaluated(&evaluator, 5.0).await;

    // Deleted as admin-api deletes it; the other one's rows vanish without a word.
    let mut tx = env.pool.begin().await.unwrap();
    let deleted =
        crm_sync_store::admin::integrations::delete(&mut tx, gone.company_id, gone.integration_id)
            .await
            .unwrap();
    assert!(deleted);
    tx.commit().await.unwrap();
    sqlx::query("DELETE FROM integrations WHERE id = $1")
        .bind(kept.integration_id)
        .execute(&env.pool)
        .await
        .unwrap();
    forgotten_at_least(&evaluator, 3.0).await;
    let last = last_states(&env).await;
    last_are(&last, &gone, 3, true);
    last_are(&last, &kept, 2, false);

    // Gone from the local store too: later rounds find nothing more to forget.
    let rounds = || {
        metric(
            &evaluator,
            "crm_sync_evaluator_purge_rounds_total",
            &["outcome=\"ok\""],
        )
    };
    let after = rounds().await;
    eventually("two more rounds", WAIT, || async {
        (rounds().await >= after + 2.0).then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &evaluator,
            "crm_sync_evaluator_forgotten_records_total",
            &[]
        )
        .await,
        3.0
    );
    assert_eq!(last_states(&env).await.len(), 5);
    let tombstones = read_topic(&env.topics.records)
        .await
        .iter()
        .filter(|r| r.payload.is_empty())
        .count();
    assert_eq!(tombstones, 3);

    // The missing one is counted; the command refuses an integration that exists, and records
    // the missing one as deleted, whose records are then forgotten too.
    assert_eq!(
        metric(&evaluator, "crm_sync_evaluator_unknown_integrations", &[]).await,
        1.0
    );
    let live = Tenant::create(&env.pool, "forget-live", true, true).await;
    let refused = forget_integration(&env, live.integration_id);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("exists; delete it through the admin API"),
        "{said}"
    );
    let recorded = forget_integration(&env, kept.integration_id);
    let said = String::from_utf8_lossy(&recorded.stderr);
    assert!(recorded.status.success(), "{said}");
    assert!(said.contains("is recorded as deleted"), "{said}");
    forgotten_at_least(&evaluator, 5.0).await;
    last_are(&last_states(&env).await, &kept, 2, true);
    eventually("no unknown integration left", WAIT, || async {
        let unknown = metric(&evaluator, "crm_sync_evaluator_unknown_integrations", &[]).await;
        (unknown == 0.0).then_some(())
    })
    .await;
    let again = forget_integration(&env, kept.integration_id);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already recorded"));
}

fn forget_integration(env: &TestEnv, id: uuid::Uuid) -> std::process::Output {
    std::process::Command::new(crm_sync_e2e::binary_path("crm-sync"))
        .args(["admin", "forget-integration", "--id", &id.to_string()])
        .env("CRM_SYNC__DATABASE__URL", &env.database_url)
        .env_remove("CRM_SYNC_CONFIG")
        .output()
        .unwrap()
}

async fn forgotten_at_least(evaluator: &Service, records: f64) {
    eventually("the records forgotten", WAIT, || async {
        let forgotten = metric(evaluator, "crm_sync_evaluator_forgotten_records_total", &[]).await;
        (forgotten >= records).then_some(())
    })
    .await;
}

/// Whether the tenant's first `records` records' last changelog entry is a tombstone.
fn last_are(
    last: &std::collections::HashMap<String, bool>,
    tenant: &Tenant,
    records: usize,
    tombstone: bool,
) {
    for n in 0..records {
        let key = format!("{}/Opportunity/006FORGET{n:09}", tenant.integration_id);
        assert_eq!(
            last.get(&key),
            Some(&tombstone),
            "{key}: tombstone last {tombstone}"
        );
    }
}

/// Per key of the changelog: whether its last record is a tombstone.
async fn last_states(env: &TestEnv) -> std::collections::HashMap<String, bool> {
    read_topic(&env.topics.records)
        .await
        .into_iter()
        .filter_map(|r| Some((r.key?, r.payload.is_empty())))
        .collect()
}

/// Events of an integration that no longer exists, received long ago (a backlog, a replay):
/// each is dead-lettered, but the active workflows are not read again for each one: a
/// snapshot read after the events were received that lacks the integration is final.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_a_gone_integrations_events_is_dead_lettered_without_a_reload_each() {
    let env = TestEnv::new("state-gone-backlog").await;
    let tenant = Tenant::create(&env.pool, "gone-backlog", true, true).await;
    let gone = Tenant {
        integration_id: uuid::Uuid::new_v4(),
        ..tenant
    };
    let hour_ago = chrono::Utc::now().timestamp() - 3600;
    let events: Vec<CrmEvent> = (0..50)
        .map(|n| {
            let mut e = delta(
                &gone,
                CrmKind::Salesforce,
                &format!("006GONE{n:011}"),
                &[("Amount", "10")],
                hour_ago,
            );
            e.received_at = e.occurred_at;
            e
        })
        .collect();
    Feed::new(&env, &gone).all(&events).await;
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let dlq = format!("{}.dlq", env.topics.events);
    eventually("the 50 events dead-lettered", WAIT, || async {
        let dead = read_topic(&dlq).await;
        (dead.len() == 50).then_some(())
    })
    .await;
    assert!(
        read_topic(&dlq)
            .await
            .iter()
            .all(|r| r.header("crm-sync-dlq-reason") == Some("unknown_integration"))
    );
    // The start's reload, and at most one more for the first of them.
    let reloads = metric(&evaluator, "crm_sync_evaluator_reload_seconds_count", &[]).await;
    assert!(reloads <= 2.0, "{reloads} reloads of the active workflows");
}
