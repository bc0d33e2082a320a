//! Pulled snapshots: a pull selects only the fields the active workflows read, so the record is
//! known whole only for those. A workflow added later that reads another field gets it by
//! hydration, and a value first seen after the pull is no change from empty.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_of_some_fields_leaves_the_others_to_hydration_and_to_no_invented_change() {
    let env = TestEnv::new("state-partial-pull").await;
    let tenant = Tenant::create(&env.pool, "partial-pull", true, true).await;
    // Added after the record was pulled with the fields of "Won opportunities" only.
    let emea = add_workflow(
        &env,
        &tenant,
        "emea_deal",
        json!({"field": "Region__c", "op": "eq", "value": "EMEA"}),
    )
    .await;
    let moved = add_workflow(
        &env,
        &tenant,
        "moved_to_emea",
        json!({"field": "Region__c", "op": "changed_to", "value": "EMEA"}),
    )
    .await;
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let feed = Feed::new(&env, &tenant);
    let record = "006PARTIALPULL01AA";
    let mut pulled = delta(
        &tenant,
        CrmKind::Salesforce,
        record,
        &[
            ("Amount", "900"),
            ("CloseDate", "2026-11-20"),
            ("OwnerId", "005OWNER0000009AAA"),
            ("StageName", "Prospecting"),
        ],
        100,
    );
    pulled.full_snapshot = true;
    feed.all(&[pulled]).await;
    evaluated(&evaluator, 1.0).await;
    let requests: Vec<HydrationRequest> = read_topic(&env.topics.hydrations)
        .await
        .iter()
        .map(|r| HydrationRequest::decode(r.payload.as_slice()).unwrap())
        .collect();
    assert!(
        requests
            .iter()
            .any(|r| r.record_id == record && r.missing_fields == ["Region__c"]),
        "the region the new workflows read was never asked for: {requests:?}"
    );

    // An Outbound Message with the region, unchanged in the CRM (it sends no previous values).
    feed.delta(
        CrmKind::Salesforce,
        record,
        &[
            ("Amount", "900"),
            ("OwnerId", "005OWNER0000009AAA"),
            ("Region__c", "EMEA"),
            ("StageName", "Prospecting"),
        ],
        110,
    )
    .await;
    evaluated(&evaluator, 2.0).await;
    let matched: Vec<String> = outcomes(&env)
        .await
        .into_iter()
        .filter(|o| o.record_id == record && o.kind() == crm_sync_proto::v1::OutcomeKind::Matched)
        .map(|o| o.workflow_id)
        .collect();
    assert_eq!(
        matched,
        vec![emea.to_string()],
        "the region in EMEA counts; nothing says it changed to EMEA (moved: {moved})"
    );
}
