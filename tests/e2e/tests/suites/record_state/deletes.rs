//! Deletes: only a delete the record's state accepts is judged as one.

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
