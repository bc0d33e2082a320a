//! A record state changelog whose records expire by time is refused at start: a restore would
//! miss the state of every record unchanged for longer, and judge its next event as its first.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_changelog_deleted_by_time_instead_of_compacted_is_refused_at_start_saying_how_to_fix_it()
{
    let env = TestEnv::new("changelog-retention").await;
    // Not named like the records topic, so the kit creates it with Kafka's default policy.
    let expiring = format!("{}.expiring-state", env.id);
    crm_sync_kafka::admin::ensure_topics(
        &crm_sync_e2e::kafka_settings(),
        std::slice::from_ref(&expiring),
        crm_sync_e2e::PARTITIONS,
    )
    .await
    .unwrap();
    let mut evaluator = env.spawn_service(
        "workflow-evaluator",
        "workflow-evaluator",
        &[("CRM_SYNC__TOPICS__RECORDS", &expiring)],
    );
    let exited = eventually("the evaluator exits", Duration::from_secs(60), || {
        let status = evaluator.exited();
        async move { status }
    })
    .await;
    assert!(!exited.success());
    let log = evaluator.log_tail();
    assert!(log.contains("cleanup.policy=delete"), "{log}");
    assert!(log.contains("--add-config cleanup.policy=compact"), "{log}");
}
