//! Workflows judge whole records, not deltas: the evaluator keeps each record's state (a
//! compacted changelog) and judges the merged record. HubSpot property changes sent one at a
//! time add up to a won deal with its amount; Outbound Messages (no previous values) get
//! `changed_to`; updates of records that never matched write no outcome; an older event does not
//! move a record back; the state survives a SIGKILL with its local disk gone; fields a workflow
//! needs that a record never showed are asked for on the hydration topic, once per interval.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::connectors;

use std::time::Duration;

use connectors::{FakeCrm, hubspot_signature, now_millis, post, setup, wait_for_activity};
use crm_sync_e2e::salesforce::{Notification, outbound_message};
use crm_sync_e2e::{
    Service, Tenant, TestEnv, eventually, metric, post_outbound_message, producer, read_topic,
    send_events, topic_message_count,
};
use crm_sync_proto::v1::{
    ChangeType, CrmEvent, CrmKind, FieldValue, HydrationRequest, RecordState, WorkflowOutcome,
    field_value,
};
use crm_sync_proto::{Message, Timestamp};
use crm_sync_store::credentials::{ApiCredentials, IntegrationSecrets};
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

// ---- HubSpot, through ingest -------------------------------------------------------------------

const PORTAL: &str = "62515";
const SECRET: &str = "hs-client-secret-state";
const OWNER: &str = "41629779";

async fn hubspot(url: &str, events: serde_json::Value) {
    let body = events.to_string();
    let timestamp = now_millis().to_string();
    let signature = hubspot_signature(SECRET, url, &body, &timestamp);
    let answer = post(
        url,
        &[
            ("content-type", "application/json"),
            ("x-hubspot-request-timestamp", &timestamp),
            ("x-hubspot-signature-v3", &signature),
            ("x-hubspot-signature-version", "v3"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

fn property_change(id: u64, deal: u64, property: &str, value: &str) -> serde_json::Value {
    json!([{
        "eventId": id, "subscriptionId": 2456, "portalId": 62515, "appId": 1160452,
        "occurredAt": 1_795_187_045_000_u64 + id, "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0, "objectId": deal, "changeSource": "CRM_UI",
        "propertyName": property, "propertyValue": value
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_property_changes_add_up_to_a_won_deal_with_its_amount() {
    let crm = FakeCrm::start().await;
    crm.add_user(OWNER, "Mary Major", "mary.major@example.com");
    let secrets = IntegrationSecrets {
        webhook_secret: Some(SECRET.into()),
        api: Some(ApiCredentials {
            base_url: Some(crm.base_url.clone()),
            access_token: Some("pat-na1-e2e".into()),
            oauth: None,
        }),
        ..IntegrationSecrets::default()
    };
    let workflow = json!({
        "name": "Won deals", "object_type": "deal", "triggers": ["updated"],
        "conditions": {"all": [{"field": "dealstage", "op": "eq", "value": "closedwon"}]},
        "user_field": "hubspot_owner_id", "value_field": "amount", "activity_type": "deal_won"
    });
    let s = setup("state-hubspot", "hubspot", PORTAL, secrets, None, workflow).await;
    let p = connectors::start_pipeline(&s.env, &[]).await;
    let url = p.ingest.url(&format!(
        "/v1/integrations/{}/hubspot/webhooks",
        s.integration_id
    ));

    // Three separate requests, each with one property: the owner, the amount, the stage.
    hubspot(&url, property_change(1, 901, "hubspot_owner_id", OWNER)).await;
    hubspot(&url, property_change(2, 901, "amount", "1500")).await;
    hubspot(&url, property_change(3, 901, "dealstage", "closedwon")).await;
    let won = wait_for_activity(&s.env, s.integration_id, "901", "recorded").await;
    assert_eq!(won.value, "1500");
    assert_eq!(won.crm_user_id, OWNER);
    // Named through the owners API (inline, or by the background completion when slow).
    eventually("the owner is named from the directory", WAIT, || async {
        connectors::activity(&s.env, s.integration_id, "901")
            .await
            .filter(|a| a.display_name.as_deref() == Some("Mary Major"))
    })
    .await;

    // The amount changes: the activity follows.
    hubspot(&url, property_change(4, 901, "amount", "2500")).await;
    eventually("the activity's value follows the amount", WAIT, || async {
        connectors::activity(&s.env, s.integration_id, "901")
            .await
            .filter(|a| a.value == "2500" && a.state == "recorded")
    })
    .await;

    // Lost: retracted.
    hubspot(&url, property_change(5, 901, "dealstage", "closedlost")).await;
    let lost = wait_for_activity(&s.env, s.integration_id, "901", "retracted").await;
    assert_eq!(lost.crm_user_id, OWNER);
    assert_eq!(
        connectors::count(&s.env, "SELECT count(*) FROM users").await,
        1
    );
    assert_eq!(
        connectors::count(&s.env, "SELECT count(*) FROM activities").await,
        1
    );
}

// ---- Salesforce Outbound Messages, through ingest ----------------------------------------------

fn opportunity<'a>(id: &'a str, stage: &'a str, modified: &'a str) -> Notification<'a> {
    Notification {
        id,
        object: "Opportunity",
        fields: vec![
            ("Id", "006STATE00000001AA"),
            ("Amount", "700"),
            ("CloseDate", "2026-11-20"),
            ("LastModifiedDate", modified),
            ("OwnerId", "005OWNER0000001AAA"),
            ("StageName", stage),
        ],
    }
}

async fn outbound(ingest: &Service, tenant: &Tenant, n: Notification<'_>) {
    let xml = outbound_message(&tenant.organization_id, &[n]);
    let (status, body) = post_outbound_message(ingest, tenant, xml).await;
    assert_eq!(status, 200, "{body}");
}

async fn outcomes(env: &TestEnv) -> Vec<WorkflowOutcome> {
    read_topic(&env.topics.matches)
        .await
        .iter()
        .map(|r| WorkflowOutcome::decode(r.payload.as_slice()).unwrap())
        .collect()
}

/// Waits until the evaluator has committed `n` events (each counted once, after its commit).
async fn evaluated(evaluator: &Service, n: f64) {
    eventually(&format!("{n} events evaluated"), WAIT, || async {
        (metric(evaluator, "crm_sync_evaluator_events_total", &[]).await >= n).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_messages_get_changed_to_from_the_records_state() {
    let env = TestEnv::new("state-outbound").await;
    // The tenant's own "Closed Won" workflow stays inactive; this one looks at the change.
    let tenant = Tenant::create(&env.pool, "outbound", true, false).await;
    let spec: crm_sync_workflow::WorkflowSpec = serde_json::from_value(json!({
        "name": "Just won", "object_type": "Opportunity", "triggers": ["created", "updated"],
        "conditions": {"field": "StageName", "op": "changed_to", "value": "Closed Won"},
        "user_field": "OwnerId", "value_field": "Amount", "activity_type": "deal_just_won"
    }))
    .unwrap();
    crm_sync_store::tenants::upsert_workflow(
        &env.pool,
        None,
        tenant.company_id,
        tenant.integration_id,
        &spec,
        true,
    )
    .await
    .unwrap();
    let ingest = env.start_service("ingest", "ingest", &[]).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;

    // First message: the record is new to the pipeline; Outbound Messages say nothing of
    // previous values, so "changed to" cannot be known and nothing matches.
    outbound(
        &ingest,
        &tenant,
        opportunity(
            "04lSTATE000000001A",
            "Negotiation",
            "2026-11-20T10:00:00.000Z",
        ),
    )
    .await;
    evaluated(&evaluator, 1.0).await;
    assert!(outcomes(&env).await.is_empty());
    // Second: the stage changed to Closed Won, as the record's state tells.
    outbound(
        &ingest,
        &tenant,
        opportunity(
            "04lSTATE000000002A",
            "Closed Won",
            "2026-11-21T10:00:00.000Z",
        ),
    )
    .await;
    evaluated(&evaluator, 2.0).await;
    let after_second = outcomes(&env).await;
    assert_eq!(after_second.len(), 1, "{after_second:?}");
    assert_eq!(after_second[0].value, "700");
    // Third, identical but newer: not a change, no outcome.
    outbound(
        &ingest,
        &tenant,
        opportunity(
            "04lSTATE000000003A",
            "Closed Won",
            "2026-11-22T10:00:00.000Z",
        ),
    )
    .await;
    evaluated(&evaluator, 3.0).await;
    assert_eq!(outcomes(&env).await.len(), 1);
}

// ---- Events written straight to the events topic ----------------------------------------------

fn text(s: &str) -> FieldValue {
    FieldValue {
        kind: Some(field_value::Kind::Text(s.to_owned())),
    }
}

fn delta(
    tenant: &Tenant,
    crm: CrmKind,
    record: &str,
    fields: &[(&str, &str)],
    at_secs: i64,
) -> CrmEvent {
    let mut e = CrmEvent {
        event_id: uuid::Uuid::new_v4().to_string(),
        integration_id: tenant.integration_id.to_string(),
        object_type: "Opportunity".into(),
        record_id: record.into(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), text(v)))
            .collect(),
        occurred_at: Some(Timestamp {
            seconds: at_secs,
            nanos: 0,
        }),
        ..Default::default()
    };
    e.set_change_type(ChangeType::Updated);
    e.set_crm(crm);
    e
}

/// Writes Salesforce-shaped deltas of the tenant's records onto the events topic.
struct Feed<'a> {
    kafka: FutureProducer,
    env: &'a TestEnv,
    tenant: &'a Tenant,
}

impl Feed<'_> {
    fn new<'a>(env: &'a TestEnv, tenant: &'a Tenant) -> Feed<'a> {
        Feed {
            kafka: producer(env),
            env,
            tenant,
        }
    }

    async fn delta(&self, crm: CrmKind, record: &str, fields: &[(&str, &str)], at: i64) {
        let event = delta(self.tenant, crm, record, fields, at);
        send_events(&self.kafka, &self.env.topics.events, &[event]).await;
    }

    async fn all(&self, events: &[CrmEvent]) {
        send_events(&self.kafka, &self.env.topics.events, events).await;
    }
}

async fn recorded_value(env: &TestEnv, tenant: &Tenant, record: &str) -> Option<String> {
    connectors::activity(env, tenant.integration_id, record)
        .await
        .filter(|a| a.state == "recorded")
        .map(|a| a.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdc_and_dataverse_partial_updates_merge_and_old_events_do_not_move_records_back() {
    let env = TestEnv::new("state-partial").await;
    let tenant = Tenant::create(&env.pool, "partial", true, true).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let feed = Feed::new(&env, &tenant);
    let owner = ("OwnerId", "005OWNER0000009AAA");
    for (crm, record) in [
        (CrmKind::Salesforce, "006CDC0000000001AA"),
        (CrmKind::Dynamics, "5f0c0f8e-0000-0000-0000-00000000d365"),
    ] {
        // Each change carries only what changed, as CDC and Dataverse without images send it.
        feed.delta(crm, record, &[owner], 100).await;
        feed.delta(crm, record, &[("Amount", "4200")], 110).await;
        feed.delta(crm, record, &[("StageName", "Closed Won")], 120)
            .await;
        eventually("the merged record counts the amount", WAIT, || async {
            recorded_value(&env, &tenant, record)
                .await
                .filter(|v| v == "4200")
        })
        .await;
    }
    // An older amount arrives late (a retried webhook): the record keeps the newer one.
    let record = "006CDC0000000001AA";
    feed.delta(CrmKind::Salesforce, record, &[("Amount", "10")], 105)
        .await;
    // A newer one moves it; the older amount never shows.
    feed.delta(CrmKind::Salesforce, record, &[("Amount", "5000")], 130)
        .await;
    eventually("the newer amount wins", WAIT, || async {
        recorded_value(&env, &tenant, record)
            .await
            .filter(|v| v == "5000")
    })
    .await;
    let values: Vec<String> = outcomes(&env).await.into_iter().map(|o| o.value).collect();
    assert!(!values.contains(&"10".to_owned()), "{values:?}");
    evaluated(&evaluator, 8.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_of_records_that_never_matched_write_no_outcome() {
    let env = TestEnv::new("state-quiet").await;
    let tenant = Tenant::create(&env.pool, "quiet", true, true).await;
    let evaluator = env
        .start_service("workflow-evaluator", "workflow-evaluator", &[])
        .await;
    let feed = Feed::new(&env, &tenant);
    let events: Vec<CrmEvent> = (0..10_000)
        .map(|i| {
            delta(
                &tenant,
                CrmKind::Salesforce,
                &format!("006QUIET{:010}", i % 2_000),
                &[
                    ("StageName", "Prospecting"),
                    ("Amount", &(i % 97).to_string()),
                ],
                1_000 + i64::from(i),
            )
        })
        .collect();
    feed.all(&events).await;
    evaluated(&evaluator, 10_000.0).await;
    assert_eq!(topic_message_count(&env.topics.matches), 0);
    // Every record's state is in the changelog.
    let records = read_topic(&env.topics.records).await;
    let keys: std::collections::BTreeSet<_> = records.iter().map(|r| r.key.clone()).collect();
    assert_eq!(keys.len(), 2_000);
}

/// The evaluator replica of the record-state tests.
const EVALUATOR: &str = "evaluator";

/// A tenant's evaluator, the replica [`EVALUATOR`] a test can restart (its state folder and
/// transactional id are the replica's), and a provisioner.
struct Stateful {
    env: TestEnv,
    tenant: Tenant,
    evaluator: Service,
    _provisioner: Service,
}

async fn stateful(name: &str) -> Stateful {
    let env = TestEnv::new(&format!("state-{name}")).await;
    let tenant = Tenant::create(&env.pool, name, true, true).await;
    let evaluator = env
        .start_replica("workflow-evaluator", "evaluator-1", EVALUATOR, 0, &[])
        .await;
    let _provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    Stateful {
        env,
        tenant,
        evaluator,
        _provisioner,
    }
}

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

// ---- Crash and rebalance: the state equals a clean replay's -------------------------------------

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
