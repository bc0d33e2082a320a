//! Deleting an integration forgets its records' state: each replica writes a tombstone per
//! record to the changelog (compaction then drops them) and removes them from its local store.
//! An integration merely missing from the database (a replica pointed at the wrong one) keeps
//! its records.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_integrations_records_are_tombstoned_in_the_changelog_and_a_missing_ones_kept() {
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
    eventually(
        "the deleted integration's records forgotten",
        WAIT,
        || async {
            let forgotten = metric(
                &evaluator,
                "crm_sync_evaluator_forgotten_records_total",
                &[],
            )
            .await;
            (forgotten >= 3.0).then_some(())
        },
    )
    .await;
    let last = last_states(&env).await;
    for n in 0..3 {
        let key = format!("{}/Opportunity/006FORGET{n:09}", gone.integration_id);
        assert_eq!(last.get(&key), Some(&true), "{key}: a tombstone last");
    }
    for n in 0..2 {
        let key = format!("{}/Opportunity/006FORGET{n:09}", kept.integration_id);
        assert_eq!(last.get(&key), Some(&false), "{key}: its state last");
    }

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
}

/// Per key of the changelog: whether its last record is a tombstone.
async fn last_states(env: &TestEnv) -> std::collections::HashMap<String, bool> {
    read_topic(&env.topics.records)
        .await
        .into_iter()
        .filter_map(|r| Some((r.key?, r.payload.is_empty())))
        .collect()
}
