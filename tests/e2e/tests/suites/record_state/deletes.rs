//! Deletes: only a delete the record's state accepts is judged as one, and it retracts every
//! activity of the record, whatever became of the workflows that counted it.

use super::*;

const OWNER_ID: &str = "005OWNER0000011AAA";

fn won(tenant: &Tenant, record: &str, at: i64) -> CrmEvent {
    delta(
        tenant,
        CrmKind::Salesforce,
        record,
        &[
            ("Amount", "700"),
            ("CloseDate", "2026-11-20"),
            ("OwnerId", OWNER_ID),
            ("StageName", "Closed Won"),
        ],
        at,
    )
}

fn deleted(tenant: &Tenant, record: &str, at: i64) -> CrmEvent {
    let mut event = delta(tenant, CrmKind::Salesforce, record, &[], at);
    event.set_change_type(ChangeType::Deleted);
    event
}

/// The state of each of the record's activities, by workflow.
async fn activity_states(
    env: &TestEnv,
    tenant: &Tenant,
    record: &str,
) -> Vec<(uuid::Uuid, String)> {
    sqlx::query_as(
        "SELECT workflow_id, state FROM activities
         WHERE integration_id = $1 AND record_id = $2 ORDER BY workflow_id",
    )
    .bind(tenant.integration_id)
    .bind(record)
    .fetch_all(&env.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulled_delete_older_than_the_records_last_update_retracts_nothing() {
    let env = TestEnv::new("state-late-delete").await;
    let tenant = Tenant::create(&env.pool, "late-delete", true, true).await;
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let feed = Feed::new(&env, &tenant);
    let record = "006LATEDELETE001AA";
    // Won at 100; a reconciliation then pulls the record as deleted as of 50 (a snapshot older
    // than the webhook it raced), the rest of it as the record was then.
    let mut late = won(&tenant, record, 50);
    late.set_change_type(ChangeType::Deleted);
    late.full_snapshot = true;
    feed.all(&[won(&tenant, record, 100), late]).await;
    evaluated(&evaluator, 2.0).await;
    let kinds: Vec<_> = outcomes(&env)
        .await
        .iter()
        .filter(|o| o.record_id == record)
        .map(WorkflowOutcome::kind)
        .collect();
    assert_eq!(
        kinds,
        vec![crm_sync_proto::v1::OutcomeKind::Matched],
        "the record lives on and still counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_retracts_the_activities_of_workflows_deactivated_or_moved_since() {
    let env = TestEnv::new("state-delete-inactive").await;
    let tenant = Tenant::create(&env.pool, "delete-inactive", true, true).await;
    let moved = add_workflow(
        &env,
        &tenant,
        "won_count",
        json!({"field": "StageName", "op": "eq", "value": "Closed Won"}),
    )
    .await;
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let feed = Feed::new(&env, &tenant);
    let record = "006DELETEINACTIVEA";
    feed.all(&[won(&tenant, record, 100)]).await;
    eventually("both workflows count the record", WAIT, || async {
        let states = activity_states(&env, &tenant, record).await;
        (states.len() == 2 && states.iter().all(|(_, s)| s == "recorded")).then_some(())
    })
    .await;

    // The admin moves one workflow to another object and deactivates the other.
    crm_sync_e2e::upsert_workflow(
        &env.pool,
        tenant.company_id,
        tenant.integration_id,
        Some(moved),
        json!({
            "name": "won_count", "object_type": "Account", "triggers": ["updated"],
            "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
            "user_field": "OwnerId", "value_field": "Amount", "activity_type": "won_count"
        }),
        true,
    )
    .await;
    sqlx::query("UPDATE workflows SET active = false WHERE id = $1")
        .bind(tenant.workflow_id)
        .execute(&env.pool)
        .await
        .unwrap();
    eventually("the evaluator sees one active workflow", WAIT, || async {
        let n = metric(&evaluator, "crm_sync_evaluator_active_workflows", &[]).await;
        (n == 1.0).then_some(())
    })
    .await;

    feed.all(&[deleted(&tenant, record, 200)]).await;
    eventually("the delete retracts both activities", WAIT, || async {
        let states = activity_states(&env, &tenant, record).await;
        states.iter().all(|(_, s)| s == "retracted").then_some(())
    })
    .await;
}
