//! The record state when evaluators die, lose their disk or scale: it is restored, and the result
//! is the same as a clean replay.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_survives_a_sigkill_with_its_disk_gone_and_missing_fields_are_asked_for_once() {
    let Stateful {
        env,
        tenant,
        evaluator,
        _provisioner,
    } = stateful("restore").await;
    let feed = Feed::new(&env, &tenant);
    let record = "006RESTORE00001AAA";
    feed.delta(
        CrmKind::Salesforce,
        record,
        &[("OwnerId", "005OWNER0000007AAA"), ("Amount", "321")],
        100,
    )
    .await;
    // The stage is won but another record lacks its amount: asked for, once within the interval.
    let partial = "006PARTIAL0001AAAA";
    for at in [100, 101] {
        feed.delta(
            CrmKind::Salesforce,
            partial,
            &[("StageName", "Closed Won")],
            at,
        )
        .await;
    }
    evaluated(&evaluator, 3.0).await;
    let requests: Vec<HydrationRequest> = read_topic(&env.topics.hydrations)
        .await
        .iter()
        .map(|r| HydrationRequest::decode(r.payload.as_slice()).unwrap())
        .collect();
    let asked: Vec<&HydrationRequest> =
        requests.iter().filter(|r| r.record_id == partial).collect();
    assert_eq!(asked.len(), 1, "{requests:?}");
    assert_eq!(
        asked[0].missing_fields,
        vec!["Amount", "CloseDate", "OwnerId"]
    );

    // SIGKILL, and the local disk is lost: the state comes back from the changelog.
    evaluator.kill().await;
    std::fs::remove_dir_all(env.state_dir(EVALUATOR)).unwrap();
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-2", EVALUATOR, 0, &[])
        .await;
    feed.delta(
        CrmKind::Salesforce,
        record,
        &[("StageName", "Closed Won")],
        120,
    )
    .await;
    eventually("the restored record counts its amount", WAIT, || async {
        recorded_value(&env, &tenant, record)
            .await
            .filter(|v| v == "321")
    })
    .await;
    let restored = metric(&evaluator, "crm_sync_evaluator_restored_records_total", &[]).await;
    assert!(restored >= 2.0, "restored {restored} records");
    let states: Vec<RecordState> = read_topic(&env.topics.records)
        .await
        .iter()
        .filter(|r| !r.payload.is_empty())
        .map(|r| RecordState::decode(r.payload.as_slice()).unwrap())
        .collect();
    let last = states.iter().rev().find(|s| s.record_id == record).unwrap();
    assert_eq!(last.matches.len(), 1);
}

/// An activity recorded before the evaluator kept record state (here: by an evaluator whose
/// changelog and disk are then replaced by empty ones) is known to the new state the first time
/// its record stops matching, and retracted; records without such an activity cost no query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_recorded_before_record_state_are_still_retracted() {
    let Stateful {
        env,
        tenant,
        evaluator,
        _provisioner,
    } = stateful("legacy").await;
    let feed = Feed::new(&env, &tenant);
    let record = "006LEGACY0000001AA";
    let won = [
        ("OwnerId", "005OWNER0000011AAA"),
        ("Amount", "700"),
        ("StageName", "Closed Won"),
    ];
    feed.delta(CrmKind::Salesforce, record, &won, 100).await;
    eventually("the activity is recorded", WAIT, || async {
        recorded_value(&env, &tenant, record)
            .await
            .filter(|v| v == "700")
    })
    .await;

    // As when record state was introduced: a new, empty changelog and local disk.
    evaluator.kill().await;
    std::fs::remove_dir_all(env.state_dir(EVALUATOR)).unwrap();
    let fresh = format!("t{}.legacy.crm.records.v1", env.id);
    crm_sync_kafka::admin::ensure_topics(
        &crm_sync_e2e::kafka_settings(),
        std::slice::from_ref(&fresh),
        crm_sync_e2e::PARTITIONS,
    )
    .await
    .unwrap();
    let evaluator = env
        .start_replica(
            "workflow-evaluator",
            "evaluator-2",
            EVALUATOR,
            0,
            &[("CRM_SYNC__TOPICS__RECORDS", &fresh)],
        )
        .await;
    let quiet = "006LEGACYQUIET01AA";
    feed.delta(
        CrmKind::Salesforce,
        quiet,
        &[("StageName", "Prospecting")],
        105,
    )
    .await;
    feed.delta(
        CrmKind::Salesforce,
        record,
        &[("StageName", "Prospecting")],
        110,
    )
    .await;
    eventually(
        "the activity from before record state is retracted",
        WAIT,
        || async {
            connectors::activity(&env, tenant.integration_id, record)
                .await
                .filter(|a| a.state == "retracted")
        },
    )
    .await;
    evaluated(&evaluator, 2.0).await;
    let retracted: Vec<WorkflowOutcome> = outcomes(&env)
        .await
        .into_iter()
        .filter(|o| o.kind() == crm_sync_proto::v1::OutcomeKind::Retracted)
        .collect();
    assert_eq!(retracted.len(), 1, "{retracted:?}");
    assert_eq!(retracted[0].record_id, record);
}

/// True once the consumer group has committed every event of `topic`.
fn caught_up(env: &TestEnv, group: &str, topic: &str) -> bool {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..crm_sync_e2e::PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
        return false;
    };
    committed.elements().iter().all(|e| {
        let (_, high) = consumer
            .fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
            .unwrap();
        match e.offset() {
            rdkafka::Offset::Offset(o) => o >= high,
            _ => high == 0,
        }
    })
}

/// A digest of every record's last state in a changelog (the hydration request time, a wall
/// clock reading, left out).
async fn digest(topic: &str) -> (usize, String) {
    use sha2::Digest;
    let mut last: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    for r in read_topic(topic).await {
        let mut state = RecordState::decode(r.payload.as_slice()).unwrap();
        state.hydration_requested_at = None;
        last.insert(r.key.clone().unwrap(), state.encode_to_vec());
    }
    let mut hash = sha2::Sha256::new();
    for (key, state) in &last {
        hash.update(key.as_bytes());
        hash.update(state);
    }
    (last.len(), format!("{:x}", hash.finalize()))
}

fn chaos_events(tenant: &Tenant, round: u32) -> Vec<CrmEvent> {
    let stages = ["Prospecting", "Negotiation", "Closed Won", "Closed Lost"];
    (0..600u32)
        .map(|i| {
            let record = format!("006CHAOS{:010}", i % 150);
            let n = round * 600 + i;
            // Every fifth event is late: older than what its record has already seen.
            let at = if n % 5 == 4 {
                1_000 + i64::from(n) - 40
            } else {
                1_000 + i64::from(n)
            };
            let fields: Vec<(&str, String)> = match n % 3 {
                0 => vec![("StageName", stages[(n as usize / 3) % 4].to_owned())],
                1 => vec![("Amount", (100 + n % 50).to_string())],
                _ => vec![("OwnerId", format!("005CHAOS{:07}AAA", n % 4))],
            };
            let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            delta(tenant, CrmKind::Salesforce, &record, &pairs, at)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_and_scaling_leave_the_same_state_as_a_clean_replay() {
    let env = TestEnv::new("state-chaos").await;
    let tenant = Tenant::create(&env.pool, "chaos", true, true).await;
    let feed = Feed::new(&env, &tenant);
    let group = format!("{}-workflow-evaluator", env.id);
    let first = env
        .start_service("workflow-evaluator", "evaluator-a", &[])
        .await;
    feed.all(&chaos_events(&tenant, 0)).await;
    evaluated(&first, 100.0).await;
    first.kill().await;
    let b = env
        .start_service("workflow-evaluator", "evaluator-b", &[])
        .await;
    feed.all(&chaos_events(&tenant, 1)).await;
    // Scale to three while events flow, then back to one.
    let c = env
        .start_service("workflow-evaluator", "evaluator-c", &[])
        .await;
    let d = env
        .start_service("workflow-evaluator", "evaluator-d", &[])
        .await;
    feed.all(&chaos_events(&tenant, 2)).await;
    c.terminate().await;
    d.terminate().await;
    feed.all(&chaos_events(&tenant, 3)).await;
    eventually(
        "every event evaluated",
        Duration::from_secs(120),
        || async { caught_up(&env, &group, &env.topics.events).then_some(()) },
    )
    .await;
    b.terminate().await;

    // The same events, once, by one evaluator from scratch.
    let replay_records = format!("{}.replay", env.topics.records);
    let replay_matches = format!("{}.replay", env.topics.matches);
    crm_sync_kafka::admin::ensure_topics(
        &crm_sync_e2e::kafka_settings(),
        &[replay_records.clone(), replay_matches.clone()],
        crm_sync_e2e::PARTITIONS,
    )
    .await
    .unwrap();
    let replay_group = format!("{}-replay", env.id);
    let _replay = env
        .start_service(
            "workflow-evaluator",
            "evaluator-replay",
            &[
                ("CRM_SYNC__TOPICS__RECORDS", &replay_records),
                ("CRM_SYNC__TOPICS__MATCHES", &replay_matches),
                ("CRM_SYNC__KAFKA__CONSUMER_GROUP", &replay_group),
            ],
        )
        .await;
    eventually(
        "the replay evaluated every event",
        Duration::from_secs(120),
        || async { caught_up(&env, &replay_group, &env.topics.events).then_some(()) },
    )
    .await;
    let chaotic = digest(&env.topics.records).await;
    let clean = digest(&replay_records).await;
    assert_eq!(chaotic.0, 150);
    assert_eq!(
        chaotic, clean,
        "the state after crashes and rebalances is a clean replay's"
    );
}
