//! A record whose state would outgrow what Kafka takes in one message: the change that would
//! grow it past that is dead-lettered, the record keeps what it had, and every other record, of
//! this tenant and of the others sharing the evaluator, goes on being judged. The limit is the
//! smaller of the producers' largest message and the changelog topic's; a state near it is
//! restored whole.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_would_outgrow_a_kafka_message_is_dead_lettered_and_the_rest_goes_on() {
    let Stateful {
        env,
        tenant,
        evaluator,
        _provisioner,
    } = stateful("large").await;
    let feed = Feed::new(&env, &tenant);

    // Long text areas, three per change, each within what ingest takes for one field (128 KiB):
    // every change is fine alone, but the third would make a state of about 1.1 MB.
    let long = "x".repeat(120_000);
    let record = "006LARGE0000001AAA";
    for (i, names) in [
        ["Notes_1__c", "Notes_2__c", "Notes_3__c"],
        ["Notes_4__c", "Notes_5__c", "Notes_6__c"],
        ["Notes_7__c", "Notes_8__c", "Notes_9__c"],
    ]
    .iter()
    .enumerate()
    {
        let fields: Vec<(&str, &str)> = names.iter().map(|n| (*n, long.as_str())).collect();
        feed.delta(CrmKind::Salesforce, record, &fields, 100 + i as i64)
            .await;
    }
    // Then the record is won, in a small change: judged on what the record kept.
    feed.delta(
        CrmKind::Salesforce,
        record,
        &[
            ("OwnerId", "005OWNER0000009AAA"),
            ("Amount", "900"),
            ("StageName", "Closed Won"),
        ],
        110,
    )
    .await;
    // Another record, after them.
    let other = "006LARGE0000002AAA";
    feed.delta(
        CrmKind::Salesforce,
        other,
        &[
            ("OwnerId", "005OWNER0000009AAA"),
            ("Amount", "4200"),
            ("StageName", "Closed Won"),
        ],
        100,
    )
    .await;
    for (id, value) in [(other, "4200"), (record, "900")] {
        eventually(&format!("{id} is counted"), WAIT, || async {
            recorded_value(&env, &tenant, id)
                .await
                .filter(|v| v == value)
        })
        .await;
    }

    // The third change, and only it, is dead-lettered, saying why.
    let dead = read_topic(&format!("{}.dlq", env.topics.events)).await;
    assert_eq!(dead.len(), 1, "exactly the change too large to keep");
    assert_eq!(
        dead[0].header("crm-sync-dlq-reason"),
        Some("record_too_large")
    );
    let detail = dead[0].header("crm-sync-dlq-detail").unwrap_or_default();
    assert!(
        detail.contains(record) && detail.contains("bytes"),
        "{detail}"
    );
    let event = CrmEvent::decode(dead[0].payload.as_slice()).unwrap();
    assert!(event.fields.contains_key("Notes_9__c"));
    // The admin sees it in the record's trail.
    let (reason, service): (String, String) = sqlx::query_as(
        "SELECT reason, service FROM trail_dead_letters WHERE integration_id = $1 AND record_id = $2",
    )
    .bind(tenant.integration_id)
    .bind(record)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(
        (reason.as_str(), service.as_str()),
        ("record_too_large", "workflow-evaluator")
    );

    // The record kept the first two changes and the last one.
    let kept = [
        "Amount",
        "Notes_1__c",
        "Notes_2__c",
        "Notes_3__c",
        "Notes_4__c",
        "Notes_5__c",
        "Notes_6__c",
        "OwnerId",
        "StageName",
    ];
    assert_eq!(field_names(&env, &tenant, record).await, kept);
    evaluated(&evaluator, 4.0).await;
    assert_eq!(
        metric(
            &evaluator,
            "crm_sync_dead_letters_total",
            &["reason=\"record_too_large\""]
        )
        .await,
        1.0
    );

    // SIGKILL with the local disk gone: the state, near the limit, comes back whole from the
    // changelog, and the next change is judged on it.
    evaluator.kill().await;
    std::fs::remove_dir_all(env.state_dir(EVALUATOR)).unwrap();
    let _evaluator = env
        .start_replica("workflow-evaluator", "evaluator-2", EVALUATOR, 0, &[])
        .await;
    feed.delta(CrmKind::Salesforce, record, &[("Amount", "950")], 120)
        .await;
    eventually(
        "the restored record counts the new amount",
        WAIT,
        || async {
            recorded_value(&env, &tenant, record)
                .await
                .filter(|v| v == "950")
        },
    )
    .await;
    assert_eq!(field_names(&env, &tenant, record).await, kept);
}

/// The names of the fields in the record's last state in the changelog.
async fn field_names(env: &TestEnv, tenant: &Tenant, record: &str) -> Vec<String> {
    let key = format!("{}/Opportunity/{record}", tenant.integration_id);
    let states = read_topic(&env.topics.records).await;
    let last = states
        .iter()
        .rev()
        .find(|r| r.key.as_deref() == Some(key.as_str()))
        .expect("the record's state");
    let state = RecordState::decode(last.payload.as_slice()).unwrap();
    let mut names: Vec<String> = state.fields.into_keys().collect();
    names.sort_unstable();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changelog_topic_that_takes_smaller_messages_sets_the_limit() {
    use crm_sync_kafka::clients::{Role, base_config};
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let env = TestEnv::new("state-small-topic").await;
    // Replaces the topic's settings: compaction is named again.
    let admin: AdminClient<DefaultClientContext> =
        base_config(&crm_sync_e2e::kafka_settings(), Role::Admin)
            .create()
            .unwrap();
    let altered = admin
        .alter_configs(
            &[
                AlterConfig::new(ResourceSpecifier::Topic(&env.topics.records))
                    .set("max.message.bytes", "300000")
                    .set("cleanup.policy", "compact"),
            ],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(altered.iter().all(Result::is_ok), "{altered:?}");
    // The brokers apply it a moment later: the evaluator reads it once, at start.
    let topic = ResourceSpecifier::Topic(&env.topics.records);
    eventually("the topic's new limit in force", WAIT, || async {
        let described = admin
            .describe_configs(std::slice::from_ref(&topic), &AdminOptions::new())
            .await
            .ok()?;
        let config = described.into_iter().next()?.ok()?;
        let limit = config.get("max.message.bytes")?.value.clone()?;
        (limit == "300000").then_some(())
    })
    .await;
    let tenant = Tenant::create(&env.pool, "small-topic", true, true).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let feed = Feed::new(&env, &tenant);
    // Three fields of 100 kB: a third more than a whole message of the topic.
    let long = "x".repeat(100_000);
    let fields = [
        ("Notes_1__c", long.as_str()),
        ("Notes_2__c", long.as_str()),
        ("Notes_3__c", long.as_str()),
    ];
    feed.delta(CrmKind::Salesforce, "006SMALL0000001AAA", &fields, 100)
        .await;
    feed.delta(CrmKind::Salesforce, "006SMALL0000002AAA", &fields[..2], 100)
        .await;
    evaluated(&evaluator, 1.0).await;
    let dlq = format!("{}.dlq", env.topics.events);
    let dead = eventually("the change is dead-lettered", WAIT, || async {
        Some(read_topic(&dlq).await).filter(|d| !d.is_empty())
    })
    .await;
    assert_eq!(dead.len(), 1);
    let detail = dead[0].header("crm-sync-dlq-detail").unwrap_or_default();
    assert!(
        detail.contains("006SMALL0000001AAA") && detail.contains("may carry 300000 bytes"),
        "{detail}"
    );
}
