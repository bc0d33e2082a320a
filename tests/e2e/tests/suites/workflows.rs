//! The workflow engine end to end, on real Kafka and PostgreSQL with the services as processes:
//! a win records an activity, moving the stage back or deleting the record retracts it, winning
//! again re-activates it; two workflows on one object make two activities; "changed to" uses the
//! previous values the CRM sends; a workflow deactivated (or activated) while events flow takes
//! effect in every evaluator replica within one second; an evaluator killed with SIGKILL
//! mid-stream leaves no duplicate and no missing outcome.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_sync_e2e::app::{App, AppOptions, owns_partitions, spawn_app};
use crm_sync_e2e::salesforce::{Notification, outbound_message};
use crm_sync_e2e::{
    Service, Tenant, TestEnv, eventually, metric, post_outbound_message, producer, read_topic,
    send_events,
};
use crm_sync_proto::v1::{
    ActivityChanged, ActivityState, ChangeType, CrmEvent, CrmKind, CrmUser, FieldValue,
    OutcomeKind, WorkflowOutcome, field_value,
};
use crm_sync_proto::{Message, Timestamp};
use crm_sync_store::{tenants, views};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};

const WAIT: Duration = Duration::from_secs(60);

/// A Salesforce Opportunity notification modified at `modified` (so later steps are newer).
fn opportunity<'a>(
    notification: &'a str,
    record: &'a str,
    stage: &'a str,
    amount: &'a str,
    modified: &'a str,
) -> Notification<'a> {
    Notification {
        id: notification,
        object: "Opportunity",
        fields: vec![
            ("Id", record),
            ("Amount", amount),
            ("CloseDate", "2026-11-20"),
            ("CreatedDate", "2026-11-01T09:00:00.000Z"),
            ("LastModifiedDate", modified),
            ("Name", "Acme - 200 licenses"),
            ("OwnerId", "005OWNER0000001"),
            ("StageName", stage),
        ],
    }
}

async fn post(ingest: &Service, tenant: &Tenant, n: Notification<'_>) {
    let xml = outbound_message(&tenant.organization_id, &[n]);
    let (status, body) = post_outbound_message(ingest, tenant, xml).await;
    assert_eq!(status, 200, "ingest refused the message: {body}");
}

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(field_value::Kind::Text(s.to_owned())),
    }
}

/// A `CrmEvent` as a connector that sends previous values (or deletes) would write it.
fn event(
    tenant: &Tenant,
    record: &str,
    change: ChangeType,
    fields: &[(&str, &str)],
    previous: &[(&str, &str)],
    at_secs: i64,
) -> CrmEvent {
    let owner = fields
        .iter()
        .find(|(k, _)| *k == "OwnerId")
        .map(|(_, v)| CrmUser {
            crm_user_id: v.to_string(),
            ..Default::default()
        });
    let mut e = CrmEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        integration_id: tenant.integration_id.to_string(),
        object_type: "Opportunity".into(),
        record_id: record.into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
        previous_fields: previous
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
        owner,
        occurred_at: Some(Timestamp {
            seconds: at_secs,
            nanos: 0,
        }),
        received_at: Some(Timestamp {
            seconds: at_secs,
            nanos: 0,
        }),
        crm_account_id: tenant.organization_id.clone(),
        ..Default::default()
    };
    e.set_change_type(change);
    e.set_crm(CrmKind::Generic);
    e
}

async fn outcomes(env: &TestEnv) -> Vec<WorkflowOutcome> {
    read_topic(&env.topics.matches)
        .await
        .iter()
        .map(|r| WorkflowOutcome::decode(r.payload.as_slice()).unwrap())
        .collect()
}

async fn changes(env: &TestEnv) -> Vec<ActivityChanged> {
    read_topic(&env.topics.activities)
        .await
        .iter()
        .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
        .collect()
}

async fn activity_state(env: &TestEnv, tenant: &Tenant, record: &str, state: &str) {
    eventually(&format!("activity of {record} {state}"), WAIT, || async {
        views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .iter()
            .any(|a| a.record_id == record && a.state == state)
            .then_some(())
    })
    .await;
}

/// The pipeline, its consumers owning partitions.
async fn pipeline(env: &TestEnv) -> App<'_> {
    let options = AppOptions {
        wait_for_partitions: true,
        ..AppOptions::default()
    };
    spawn_app(env, options).await
}

#[tokio::test]
async fn closed_won_records_moving_back_retracts_and_winning_again_reactivates() {
    let env = TestEnv::new("wf-retract").await;
    let tenant = Tenant::create(&env.pool, "retract", true, true).await;
    let p = pipeline(&env).await;
    let record = "006RETRACT00001AAA";

    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lRETRACT0000001A",
            record,
            "Closed Won",
            "1250.50",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "recorded").await;

    // The stage moves back: the record no longer satisfies the workflow.
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lRETRACT0000002A",
            record,
            "Negotiation/Review",
            "1250.50",
            "2026-11-21T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "retracted").await;
    let activity = views::activities(&env.pool, tenant.company_id)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(activity.value.to_string(), "1250.50", "kept for the record");

    // Won again: the same activity is re-activated, with the new amount.
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lRETRACT0000003A",
            record,
            "Closed Won",
            "1300",
            "2026-11-22T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "recorded").await;
    let activities = views::activities(&env.pool, tenant.company_id)
        .await
        .unwrap();
    assert_eq!(activities.len(), 1, "one activity per (workflow, record)");
    assert_eq!(activities[0].value.to_string(), "1300");

    let kinds: Vec<OutcomeKind> = outcomes(&env).await.iter().map(|o| o.kind()).collect();
    assert_eq!(
        kinds,
        [
            OutcomeKind::Matched,
            OutcomeKind::Retracted,
            OutcomeKind::Matched
        ]
    );
    let states = eventually("three ActivityChanged", WAIT, || async {
        let c = changes(&env).await;
        (c.len() >= 3).then_some(c)
    })
    .await;
    let states: Vec<ActivityState> = states.iter().map(|c| c.state()).collect();
    assert_eq!(
        states,
        [
            ActivityState::Recorded,
            ActivityState::Retracted,
            ActivityState::Recorded
        ]
    );
    drop(p);
}

#[tokio::test]
async fn a_deleted_record_retracts_its_activity_and_a_delete_without_one_changes_nothing() {
    let env = TestEnv::new("wf-delete").await;
    let tenant = Tenant::create(&env.pool, "deleted", true, true).await;
    let p = pipeline(&env).await;
    let record = "006DELETE000001AAA";
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lDELETE00000001A",
            record,
            "Closed Won",
            "800",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    activity_state(&env, &tenant, record, "recorded").await;

    // Deletes carry neither the fields nor the owner (Salesforce CDC, HubSpot, Dynamics).
    let kafka = producer(&env);
    let deleted = event(
        &tenant,
        record,
        ChangeType::Deleted,
        &[],
        &[],
        // After the win (2026-11-20): an older delete would be a stale, out-of-order one.
        1_800_000_000,
    );
    let never_won = event(
        &tenant,
        "006DELETE000002AAA",
        ChangeType::Deleted,
        &[],
        &[],
        1_800_000_000,
    );
    send_events(&kafka, &env.topics.events, &[deleted, never_won]).await;
    activity_state(&env, &tenant, record, "retracted").await;
    // The record that never matched has nothing to retract: its delete writes no outcome.
    eventually("the evaluator to see both deletes", WAIT, || async {
        (metric(&p.evaluator, "crm_sync_evaluator_events_total", &[]).await >= 3.0).then_some(())
    })
    .await;
    let retracted: Vec<String> = outcomes(&env)
        .await
        .into_iter()
        .filter(|o| o.kind() == OutcomeKind::Retracted)
        .map(|o| o.record_id)
        .collect();
    assert_eq!(retracted, vec![record.to_owned()]);
    assert_eq!(
        views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .len(),
        1,
        "a delete never creates an activity"
    );
    let retraction = eventually("an ActivityChanged retraction", WAIT, || async {
        changes(&env)
            .await
            .into_iter()
            .find(|c| c.state() == ActivityState::Retracted)
    })
    .await;
    assert_eq!(retraction.record_id, record);
    assert_eq!(retraction.value, "800");
    assert!(!retraction.user_id.is_empty(), "the activity knew its user");
    drop(p);
}

#[tokio::test]
async fn two_workflows_on_one_object_make_two_activities() {
    let env = TestEnv::new("wf-two").await;
    let tenant = Tenant::create(&env.pool, "two-workflows", true, true).await;
    let big_deals: crm_sync_workflow::WorkflowSpec = serde_json::from_value(serde_json::json!({
        "name": "Big deals",
        "object_type": "Opportunity",
        "triggers": ["created", "updated"],
        "conditions": {"all": [
            {"field": "StageName", "op": "in", "value": ["closed won", "Closed - Signed"]},
            {"field": "Amount", "op": "gte", "value": 1000}
        ]},
        "user_field": "OwnerId",
        "activity_type": "big_deal"
    }))
    .unwrap();
    let big_id = tenants::upsert_workflow(
        &env.pool,
        None,
        tenant.company_id,
        tenant.integration_id,
        &big_deals,
        true,
    )
    .await
    .unwrap();
    let p = pipeline(&env).await;
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lTWO00000000001A",
            "006TWO0000001AAAA",
            "Closed Won",
            "1250.50",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    post(
        &p.ingest,
        &tenant,
        opportunity(
            "04lTWO00000000002A",
            "006TWO0000002AAAA",
            "Closed Won",
            "500",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    let activities = eventually("three activities", WAIT, || async {
        let a = views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap();
        (a.len() >= 3).then_some(a)
    })
    .await;
    let mut seen: Vec<(String, String, String)> = activities
        .iter()
        .map(|a| {
            (
                a.record_id.clone(),
                a.activity_type.clone(),
                a.value.to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("006TWO0000001AAAA".into(), "big_deal".into(), "1".into()),
            (
                "006TWO0000001AAAA".into(),
                "deal_won".into(),
                "1250.50".into()
            ),
            ("006TWO0000002AAAA".into(), "deal_won".into(), "500".into()),
        ]
    );
    let big = activities
        .iter()
        .find(|a| a.activity_type == "big_deal")
        .unwrap();
    assert_eq!(big.workflow_id, big_id);
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(users.len(), 1, "two activities, one user");
    drop(p);
}

#[tokio::test]
async fn stage_changed_to_closed_won_and_amount_at_least_1000() {
    let env = TestEnv::new("wf-changed").await;
    let tenant = Tenant::create(&env.pool, "changed-to", true, false).await;
    let spec: crm_sync_workflow::WorkflowSpec = serde_json::from_value(serde_json::json!({
        "name": "New big wins",
        "object_type": "Opportunity",
        "triggers": ["created", "updated"],
        "conditions": {"all": [
            {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
            {"field": "Amount", "op": "gte", "value": 1000}
        ]},
        "user_field": "OwnerId",
        "value_field": "Amount",
        "activity_type": "new_big_win"
    }))
    .unwrap();
    tenants::upsert_workflow(
        &env.pool,
        None,
        tenant.company_id,
        tenant.integration_id,
        &spec,
        true,
    )
    .await
    .unwrap();
    let p = pipeline(&env).await;
    let kafka = producer(&env);
    let (a, b) = ("006CHANGED0001AAAA", "006CHANGED0002AAAA");
    let won = [
        ("StageName", "Closed Won"),
        ("Amount", "1500"),
        ("OwnerId", "005C"),
    ];
    send_events(
        &kafka,
        &env.topics.events,
        &[
            // A won update of a deal that was already won: not a change to Closed Won.
            event(
                &tenant,
                b,
                ChangeType::Updated,
                &won,
                &[("StageName", "Closed Won"), ("Amount", "900")],
                1_795_000_000,
            ),
            // A deal that moves to Closed Won: a new big win.
            event(
                &tenant,
                a,
                ChangeType::Updated,
                &won,
                &[("StageName", "Negotiation/Review")],
                1_795_000_001,
            ),
        ],
    )
    .await;
    activity_state(&env, &tenant, a, "recorded").await;
    // Its amount edited later while still won: no new win, no retraction; the activity's value
    // follows the record.
    send_events(
        &kafka,
        &env.topics.events,
        &[event(
            &tenant,
            a,
            ChangeType::Updated,
            &[
                ("StageName", "Closed Won"),
                ("Amount", "2000"),
                ("OwnerId", "005C"),
            ],
            &[("StageName", "Closed Won"), ("Amount", "1500")],
            1_795_000_002,
        )],
    )
    .await;
    eventually("the activity to follow the amount", WAIT, || async {
        views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .iter()
            .any(|a| a.record_id == "006CHANGED0001AAAA" && a.value.to_string() == "2000")
            .then_some(())
    })
    .await;
    // Then reduced below 1000: the record no longer satisfies the workflow.
    send_events(
        &kafka,
        &env.topics.events,
        &[event(
            &tenant,
            a,
            ChangeType::Updated,
            &[
                ("StageName", "Closed Won"),
                ("Amount", "700"),
                ("OwnerId", "005C"),
            ],
            &[("Amount", "2000")],
            1_795_000_003,
        )],
    )
    .await;
    activity_state(&env, &tenant, a, "retracted").await;
    let activities = views::activities(&env.pool, tenant.company_id)
        .await
        .unwrap();
    assert_eq!(activities.len(), 1, "{activities:?}");
    assert_eq!(activities[0].value.to_string(), "2000");
    let kinds: Vec<(String, OutcomeKind)> = outcomes(&env)
        .await
        .iter()
        .map(|o| (o.record_id.clone(), o.kind()))
        .collect();
    assert_eq!(
        kinds,
        [
            (a.to_owned(), OutcomeKind::Matched),
            (a.to_owned(), OutcomeKind::Matched),
            (a.to_owned(), OutcomeKind::Retracted)
        ]
    );
    drop(p);
}

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
