//! A record state that cannot be read does not stall its partition: the partition is restored
//! from scratch once, and a value the changelog itself holds that does not decode is counted and
//! taken as never seen.

use super::*;

use rdkafka::producer::FutureRecord;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_state_that_does_not_decode_is_counted_and_the_record_judged_anew() {
    let env = TestEnv::new("state-unreadable").await;
    let tenant = Tenant::create(&env.pool, "unreadable", true, true).await;
    let record = "006UNREADABLE001AA";
    // Same key and producer as the event below: the same partition of either topic.
    let key = format!("{}/Opportunity/{record}", tenant.integration_id);
    producer(&env)
        .send(
            FutureRecord::to(&env.topics.records)
                .key(&key)
                .payload(b"\xff\xff not a record state".as_slice()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let feed = Feed::new(&env, &tenant);
    feed.delta(
        CrmKind::Salesforce,
        record,
        &[
            ("Amount", "700"),
            ("CloseDate", "2026-11-20"),
            ("OwnerId", "005OWNER0000012AAA"),
            ("StageName", "Closed Won"),
        ],
        100,
    )
    .await;
    eventually("the record's event is judged", WAIT, || async {
        outcomes(&env)
            .await
            .into_iter()
            .find(|o| o.record_id == record && o.value == "700")
    })
    .await;
    let undecodable = metric(
        &evaluator,
        "crm_sync_evaluator_undecodable_states_total",
        &[],
    )
    .await;
    assert_eq!(undecodable, 1.0);
}
