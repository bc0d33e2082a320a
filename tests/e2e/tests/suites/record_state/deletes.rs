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

    // The record's trail tells an admin why each activity went: its workflow was deactivated,
    // or moved to another object, before the record was deleted.
    let delete = delete_in_the_trail(&env, &tenant, record).await;
    assert_eq!(delete["summary"], "retracted", "{delete}");
    let said = verdicts(&delete);
    assert_eq!(
        said,
        [
            ("Won opportunities", "retracted", "workflow_inactive"),
            ("won_count", "retracted", "workflow_moved"),
        ],
        "{delete}"
    );
    let explained = delete["decisions"].to_string();
    assert!(
        explained.contains("the workflow was inactive by then"),
        "{explained}"
    );
    assert!(
        explained.contains("now reads Account records"),
        "{explained}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_after_a_deactivation_still_names_the_workflow_in_the_trail() {
    let env = TestEnv::new("state-delete-inactive-restart").await;
    let tenant = Tenant::create(&env.pool, "delete-inactive-restart", true, true).await;
    let first = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let feed = Feed::new(&env, &tenant);
    let record = "006DELETERESTARTAA";
    feed.all(&[won(&tenant, record, 100)]).await;
    eventually("the workflow counts the record", WAIT, || async {
        let states = activity_states(&env, &tenant, record).await;
        (states.len() == 1 && states[0].1 == "recorded").then_some(())
    })
    .await;

    // Deactivated while no evaluator runs: the next replica never judged with the workflow,
    // and finds its definition in the database to name it.
    first.terminate().await;
    sqlx::query("UPDATE workflows SET active = false WHERE id = $1")
        .bind(tenant.workflow_id)
        .execute(&env.pool)
        .await
        .unwrap();
    let _second = env
        .start_replica("workflow-evaluator", "evaluator-2", EVALUATOR, 0, &[])
        .await;
    feed.all(&[deleted(&tenant, record, 200)]).await;
    let delete = delete_in_the_trail(&env, &tenant, record).await;
    assert_eq!(
        verdicts(&delete),
        [("Won opportunities", "retracted", "workflow_inactive")],
        "{delete}"
    );
    eventually("the delete retracts the activity", WAIT, || async {
        let states = activity_states(&env, &tenant, record).await;
        states.iter().all(|(_, s)| s == "retracted").then_some(())
    })
    .await;
}

/// Each decision of a trail event: workflow, decision and reason, sorted.
fn verdicts(event: &serde_json::Value) -> Vec<(&str, &str, &str)> {
    let mut said: Vec<(&str, &str, &str)> = event["decisions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let text = |key: &str| d[key].as_str().unwrap_or_default();
            (text("workflow"), text("decision"), text("reason"))
        })
        .collect();
    said.sort_unstable();
    said
}

/// The record's newest trail event once it is the delete, as a viewer reads it through
/// admin-api.
async fn delete_in_the_trail(env: &TestEnv, tenant: &Tenant, record: &str) -> serde_json::Value {
    let api = crate::admin_support::start_admin_api(env).await;
    let token = crate::admin_support::token(env, tenant.company_id, "viewer").await;
    let viewer = crm_sync_e2e::app::AdminClient::new(&api, Some(&token));
    let path = crate::admin_support::company_path(
        tenant.company_id,
        &format!(
            "/integrations/{}/records/{record}/trail",
            tenant.integration_id
        ),
    );
    eventually("the delete in the record trail", WAIT, || async {
        let trail = viewer.get(&path).await.expect(200);
        let newest = &trail["events"][0];
        (newest["change_type"] == "deleted").then(|| newest.clone())
    })
    .await
}
