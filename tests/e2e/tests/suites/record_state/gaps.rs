//! Changes whose fields the CRM left out (Salesforce CDC gap events, Dataverse contexts stripped
//! for size): the record is fetched whole, however much of it was seen before.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_event_of_a_record_known_whole_asks_for_the_record() {
    let env = TestEnv::new("state-gap").await;
    let tenant = Tenant::create(&env.pool, "gap", true, true).await;
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let feed = Feed::new(&env, &tenant);
    let record = "006GAPEVENT00001AA";
    // Every field the workflow reads is known: nothing to ask for.
    feed.delta(
        CrmKind::Salesforce,
        record,
        &[
            ("Amount", "700"),
            ("CloseDate", "2026-11-20"),
            ("OwnerId", "005OWNER0000013AAA"),
            ("StageName", "Prospecting"),
        ],
        100,
    )
    .await;
    // The deal is won, but CDC could only say that the record changed.
    let mut gap = delta(&tenant, CrmKind::Salesforce, record, &[], 110);
    gap.source_change_type = "GAP_UPDATE".into();
    gap.fields_omitted = true;
    feed.all(&[gap]).await;
    evaluated(&evaluator, 2.0).await;
    let asked: Vec<HydrationRequest> = read_topic(&env.topics.hydrations)
        .await
        .iter()
        .map(|r| HydrationRequest::decode(r.payload.as_slice()).unwrap())
        .filter(|r| r.record_id == record)
        .collect();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].workflow_ids, vec![tenant.workflow_id.to_string()]);
}
