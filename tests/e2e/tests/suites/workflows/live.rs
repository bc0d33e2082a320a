//! Workflows while events flow: deactivating one takes effect at once, and an evaluator killed
//! mid-stream leaves neither a duplicate nor a missing outcome.

use super::*;

#[tokio::test]
async fn a_workflow_deactivated_while_events_flow_stops_matching_within_a_second() {
    let env = TestEnv::new("wf-reload").await;
    let tenant = Tenant::create(&env.pool, "reload", true, true).await;
    // Two replicas: the change must reach every one of them.
    let evaluators = [
        env.start_service("workflow-evaluator", "workflow-evaluator-0", &[])
            .await,
        env.start_service("workflow-evaluator", "workflow-evaluator-1", &[])
            .await,
    ];
    for e in &evaluators {
        owns_partitions(e).await;
    }

    // Events flow all along: a won deal every 10 ms, each on its own record (so all partitions).
    let started = Instant::now();
    let sent: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let sent = sent.clone();
        let stop = stop.clone();
        let tenant = tenant.clone();
        let kafka = producer(&env);
        let topic = env.topics.events.clone();
        tokio::spawn(async move {
            let mut i = 0u32;
            let mut deliveries = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let record = format!("006RELOAD{i:09}");
                let e = event(
                    &tenant,
                    &record,
                    ChangeType::Updated,
                    &[
                        ("StageName", "Closed Won"),
                        ("Amount", "10"),
                        ("OwnerId", "005R"),
                    ],
                    &[],
                    1_795_000_000 + i64::from(i),
                );
                let key = format!("{}/Opportunity/{record}", tenant.integration_id);
                let payload = e.encode_to_vec();
                // Enqueued, not awaited: a slow acknowledgement must not thin out the flow. The
                // enqueue time is a lower bound of when the evaluator can see the event.
                sent.lock()
                    .unwrap()
                    .insert(e.event_id.clone(), started.elapsed());
                let delivery = kafka
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                    .map_err(|(e, _)| e)
                    .unwrap();
                deliveries.push(delivery);
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            for delivery in deliveries {
                delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        })
    };

    // Deactivate once matches flow from the replicas (a loaded machine may take a while).
    eventually("matches to flow", WAIT, || async {
        let mut matched = 0.0;
        for e in &evaluators {
            matched += metric(
                e,
                "crm_sync_evaluator_outcomes_total",
                &["kind=\"matched\""],
            )
            .await;
        }
        (matched >= 50.0).then_some(())
    })
    .await;
    assert!(
        tenants::set_workflow_active(&env.pool, tenant.company_id, tenant.workflow_id, false)
            .await
            .unwrap()
    );
    let off = started.elapsed();
    let off_ms = now_ms();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        tenants::set_workflow_active(&env.pool, tenant.company_id, tenant.workflow_id, true)
            .await
            .unwrap()
    );
    let on = started.elapsed();
    let on_ms = now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    sender.await.unwrap();

    eventually("the evaluators to process every event", WAIT, || async {
        let (brokers, group, topic) = (
            env.brokers.clone(),
            format!("{}-workflow-evaluator", env.id),
            env.topics.events.clone(),
        );
        tokio::task::spawn_blocking(move || caught_up(&brokers, &group, &topic))
            .await
            .unwrap()
            .then_some(())
    })
    .await;

    // When each match was evaluated: its outcome's Kafka timestamp (set as the evaluator
    // produced it, on this machine's clock).
    let matches: Vec<(WorkflowOutcome, i64)> = read_raw(&env.brokers, &env.topics.matches, true)
        .into_iter()
        .map(|(payload, at)| (WorkflowOutcome::decode(payload.as_slice()).unwrap(), at))
        .filter(|(o, _)| o.kind() == OutcomeKind::Matched)
        .collect();
    let matched_before = matches.iter().filter(|(_, at)| *at < off_ms).count();
    let last_match_after_off = matches
        .iter()
        .map(|(_, at)| *at)
        .filter(|at| (off_ms..on_ms).contains(at))
        .max()
        .map_or("none".to_owned(), |at| format!("{} ms", at - off_ms));
    for (outcome, at) in &matches {
        assert!(
            !(off_ms + 1000..on_ms).contains(at),
            "event {} was evaluated {} ms after deactivation and matched",
            outcome.event_id,
            at - off_ms
        );
    }
    // And an event sent a second after re-activation (so evaluated later still) matches.
    let matched: std::collections::HashSet<&str> =
        matches.iter().map(|(o, _)| o.event_id.as_str()).collect();
    let sent = sent.lock().unwrap().clone();
    let second = Duration::from_secs(1);
    let inactive = sent
        .values()
        .filter(|at| **at >= off + second && **at < on)
        .count();
    let mut after = 0;
    for (id, at) in &sent {
        if *at >= on + second {
            after += 1;
            assert!(
                matched.contains(id.as_str()),
                "an event sent {:?} after activation did not match",
                *at - on
            );
        }
    }
    println!(
        "{matched_before} matches before deactivation, the last evaluated after it: {last_match_after_off}; \
         {inactive} events sent while inactive, {after} sent over a second after re-activation"
    );
    assert!(
        matched_before > 20 && inactive > 20 && after > 20,
        "events kept flowing: {matched_before}, {inactive}, {after}"
    );
    // Both replicas saw events while the workflow was off: the change reached each of them.
    for e in &evaluators {
        assert!(
            metric(
                e,
                "crm_sync_evaluator_events_total",
                &["outcome=\"no_match\""]
            )
            .await
                > 0.0,
            "{} evaluated events while the workflow was inactive",
            e.name
        );
    }
}

/// True once the group's committed offsets reach the end of every partition of `topic`.
fn caught_up(brokers: &str, group: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..crm_sync_e2e::PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(5)) else {
        return false;
    };
    committed.elements().iter().all(|e| {
        let Ok((_, high)) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(5))
        else {
            return false;
        };
        match e.offset() {
            Offset::Offset(o) => o >= high,
            _ => high == 0,
        }
    })
}

#[tokio::test]
async fn an_evaluator_killed_mid_stream_leaves_no_duplicate_and_no_missing_outcome() {
    const EVENTS: usize = 2_000;
    let env = TestEnv::new("wf-sigkill").await;
    let tenant = Tenant::create(&env.pool, "sigkill", true, true).await;
    // The replica's stable transactional id: its successor fences what it left open.
    let transactional_id = format!("{}-evaluator-0", env.id);
    let extra = [(
        "CRM_SYNC__KAFKA__TRANSACTIONAL_ID",
        transactional_id.as_str(),
    )];
    let first = env
        .start_service("workflow-evaluator", "workflow-evaluator-killed", &extra)
        .await;
    owns_partitions(&first).await;

    // 2,000 won deals, sent at a steady pace (a few seconds) so the kill lands mid-stream.
    let events: Vec<CrmEvent> = (0..EVENTS)
        .map(|i| {
            event(
                &tenant,
                &format!("006KILL{i:011}"),
                ChangeType::Updated,
                &[
                    ("StageName", "Closed Won"),
                    ("Amount", "10"),
                    ("OwnerId", "005K"),
                ],
                &[],
                1_795_000_000,
            )
        })
        .collect();
    let ids: std::collections::HashSet<String> =
        events.iter().map(|e| e.event_id.clone()).collect();
    let sender = {
        let kafka = producer(&env);
        let topic = env.topics.events.clone();
        tokio::spawn(async move {
            // A steady flow, so that a transaction is open nearly all the time.
            for chunk in events.chunks(10) {
                send_events(&kafka, &topic, chunk).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    eventually("some outcomes committed", WAIT, || async {
        (metric(
            &first,
            "crm_sync_messages_consumed_total",
            &["outcome=\"ok\""],
        )
        .await
            >= 300.0)
            .then_some(())
    })
    .await;
    let pid = first.pid().expect("the evaluator runs");
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    drop(first);
    let at_kill = outcomes(&env).await.len();
    println!("{at_kill} outcomes committed when the evaluator was killed");
    assert!(
        at_kill > 0 && at_kill < EVENTS,
        "the kill must land mid-stream ({at_kill} committed)"
    );

    let second = env
        .start_service("workflow-evaluator", "workflow-evaluator-successor", &extra)
        .await;
    sender.await.unwrap();
    eventually("the successor to process every event", WAIT, || async {
        let (brokers, group, topic) = (
            env.brokers.clone(),
            format!("{}-workflow-evaluator", env.id),
            env.topics.events.clone(),
        );
        tokio::task::spawn_blocking(move || caught_up(&brokers, &group, &topic))
            .await
            .unwrap()
            .then_some(())
    })
    .await;

    let committed = outcomes(&env).await;
    let mut per_event: HashMap<String, usize> = HashMap::new();
    let mut outcome_ids = std::collections::HashSet::new();
    for o in &committed {
        assert_eq!(o.kind(), OutcomeKind::Matched);
        *per_event.entry(o.event_id.clone()).or_default() += 1;
        assert!(
            outcome_ids.insert(o.outcome_id.clone()),
            "duplicate outcome {}",
            o.outcome_id
        );
    }
    let written = records_in(&env.brokers, &env.topics.matches);
    println!(
        "{} outcomes committed; {} records written in all, the rest aborted with the killed replica's transaction",
        committed.len(),
        written
    );
    assert_eq!(committed.len(), EVENTS, "exactly one outcome per event");
    assert!(per_event.values().all(|n| *n == 1));
    assert_eq!(
        per_event
            .keys()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        ids,
        "no event is missing"
    );
    assert!(
        metric(
            &second,
            "crm_sync_messages_consumed_total",
            &["outcome=\"ok\""]
        )
        .await
            > 0.0,
        "the successor took over"
    );
}

/// How many records the topic holds, committed or aborted (a `read_uncommitted` count).
fn records_in(brokers: &str, topic: &str) -> usize {
    read_raw(brokers, topic, false).len()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Every record's payload and timestamp (ms), `read_committed` or not.
fn read_raw(brokers: &str, topic: &str, committed: bool) -> Vec<(Vec<u8>, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("raw-{}", uuid::Uuid::new_v4()))
        .set(
            "isolation.level",
            if committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..crm_sync_e2e::PARTITIONS {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .unwrap();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .unwrap();
        ends.insert(p, high);
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut records = Vec::new();
    while Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            records.push((
                message.payload().unwrap_or_default().to_vec(),
                message.timestamp().to_millis().unwrap_or_default(),
            ));
            continue;
        }
        // Transaction markers occupy offsets: the end is reached by position, not by message.
        let positions = consumer.position().unwrap();
        let done = positions.elements().iter().all(|e| match e.offset() {
            Offset::Offset(o) => o >= ends[&e.partition()],
            _ => ends[&e.partition()] == 0,
        });
        if done {
            break;
        }
    }
    records
}
