//! Delivery guarantees on the real stack: poison goes to the dead-letter topic and the partition
//! moves on, cut to fit when it is larger than the services may write; a transient failure is retried (readiness false meanwhile) and never skipped; the
//! `crm-sync dlq` tool lists and replays dead letters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crm_sync_e2e::app::{App, AppOptions, spawn_app};
use crm_sync_e2e::salesforce::{outbound_message, won_opportunity};
use crm_sync_e2e::{
    Tenant, TestEnv, binary_path, events, eventually, metric, post_outbound_message, read_topic,
};
use crm_sync_store::views;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn poison_is_dead_lettered_with_its_reason_and_the_partition_moves_on() {
    let env = TestEnv::new("poison").await;
    let tenant = Tenant::create(&env.pool, "poison", true, true).await;
    let App {
        ingest,
        evaluator: _evaluator,
        provisioner: _provisioner,
        ..
    } = spawn_app(&env, AppOptions::default()).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .unwrap();
    let key = poison_ahead_of_a_real_event(
        &env,
        &tenant,
        &ingest,
        &producer,
        ("POISON", &[0xff_u8, 0xff, 0xff, 0x01]),
    )
    .await;
    let dead = read_topic(&format!("{}.dlq", env.topics.events)).await;
    assert_eq!(dead.len(), 1, "exactly the poison is dead-lettered");
    let letter = &dead[0];
    assert_eq!(letter.header("crm-sync-dlq-reason"), Some("undecodable"));
    assert_eq!(
        letter.header("crm-sync-dlq-origin-topic"),
        Some(env.topics.events.as_str())
    );
    assert!(letter.header("crm-sync-dlq-origin-offset").is_some());
    assert_eq!(
        letter.header("crm-sync-dlq-service"),
        Some("workflow-evaluator")
    );
    assert_eq!(letter.header("crm-sync-event-id"), Some("poison-1"));
    assert_eq!(letter.key.as_deref(), Some(key.as_str()));
    assert_eq!(
        letter.payload,
        vec![0xff, 0xff, 0xff, 0x01],
        "the original bytes are kept"
    );

    // The operator's tool sees it, and a replay sends it back to where it came from.
    let cli = |args: &[&str]| {
        let mut command = std::process::Command::new(binary_path("crm-sync"));
        command
            .args(args)
            .env("CRM_SYNC__KAFKA__BROKERS", &env.brokers)
            .env("CRM_SYNC__DATABASE__URL", &env.database_url);
        command.output().unwrap()
    };
    let dlq_topic = format!("{}.dlq", env.topics.events);
    let listed = cli(&["dlq", "list", "--topic", &dlq_topic]);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("undecodable") && listed.contains(&env.topics.events),
        "{listed}"
    );
    let before = crm_sync_e2e::topic_message_count(&env.topics.events);
    let replayed = cli(&[
        "dlq",
        "replay",
        "--topic",
        &dlq_topic,
        "--reason",
        "undecodable",
    ]);
    assert!(
        replayed.status.success(),
        "{}",
        String::from_utf8_lossy(&replayed.stderr)
    );
    assert_eq!(
        crm_sync_e2e::topic_message_count(&env.topics.events),
        before + 1,
        "replayed onto the origin topic"
    );
    eventually(
        "the replayed poison to be dead-lettered again",
        WAIT,
        || async { (read_topic(&dlq_topic).await.len() == 2).then_some(()) },
    )
    .await;
}

/// Writes `poison` onto the events topic with `producer` (event id `poison-1`), on the partition
/// of a record named after `label`, then posts a won opportunity of that record through ingest
/// and waits until it is recorded: it can only be once the poison was dealt with. Returns the
/// poison's key.
async fn poison_ahead_of_a_real_event(
    env: &TestEnv,
    tenant: &Tenant,
    ingest: &crm_sync_e2e::Service,
    producer: &FutureProducer,
    (label, poison): (&str, &[u8]),
) -> String {
    let record = format!("006{label:0<15}")[..18].to_owned();
    let key = format!("{}/Opportunity/{record}", tenant.integration_id);
    producer
        .send(
            FutureRecord::to(&env.topics.events)
                .key(&key)
                .payload(poison)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "crm-sync-event-id",
                    value: Some("poison-1"),
                })),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let notification = format!("04l{label:0<15}")[..18].to_owned();
    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(&notification, &record, "005P", "10")],
    );
    let (status, body) = post_outbound_message(ingest, tenant, xml).await;
    assert_eq!(status, 200, "{body}");
    eventually(
        "the real event behind the poison to be recorded",
        WAIT,
        || async {
            (views::activities(&env.pool, tenant.company_id)
                .await
                .unwrap()
                .len()
                == 1)
                .then_some(())
        },
    )
    .await;
    key
}

#[tokio::test]
async fn a_message_too_large_to_write_again_is_dead_lettered_cut_and_the_partition_moves_on() {
    const BIG: usize = 3_000_000;
    let env = TestEnv::new("oversized").await;
    let tenant = Tenant::create(&env.pool, "oversized", true, true).await;
    let App {
        ingest,
        evaluator: _evaluator,
        provisioner: _provisioner,
        ..
    } = spawn_app(&env, AppOptions::default()).await;
    // Three megabytes that are not a CrmEvent, a few kilobytes on the wire: a producer with
    // compression and a larger limit than the services' can write them (the broker limits the
    // compressed batch), the services could not write them again.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("compression.type", "lz4")
        .set("message.max.bytes", "5000000")
        .create()
        .unwrap();
    let payload = vec![0xff_u8; BIG];
    let key =
        poison_ahead_of_a_real_event(&env, &tenant, &ingest, &producer, ("OVERSIZED", &payload))
            .await;

    // Its dead letter keeps the first bytes and says how many it had.
    let dlq = format!("{}.dlq", env.topics.events);
    let dead = read_topic(&dlq).await;
    assert_eq!(dead.len(), 1);
    let letter = &dead[0];
    assert_eq!(letter.header("crm-sync-dlq-reason"), Some("undecodable"));
    assert_eq!(
        letter.header("crm-sync-dlq-truncated-from"),
        Some(BIG.to_string().as_str())
    );
    assert!(letter.payload.len() < 1_000_000, "{}", letter.payload.len());
    assert!(payload.starts_with(&letter.payload));
    assert_eq!(letter.key.as_deref(), Some(key.as_str()));

    // A replay would send the cut bytes as if they were the message: it is skipped, saying
    // where the whole message is.
    let replayed = std::process::Command::new(binary_path("crm-sync"))
        .args(["dlq", "replay", "--topic", &dlq])
        .env("CRM_SYNC__KAFKA__BROKERS", &env.brokers)
        .env("CRM_SYNC__DATABASE__URL", &env.database_url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&replayed.stderr);
    assert!(replayed.status.success(), "{said}");
    assert!(said.contains("replayed 0 of 1"), "{said}");
    assert!(said.contains(&format!("{}/", env.topics.events)), "{said}");
    assert_eq!(crm_sync_e2e::topic_message_count(&env.topics.events), 2);
}

#[tokio::test]
async fn a_transient_database_failure_is_retried_and_never_skipped() {
    let env = TestEnv::new("transient").await;
    let tenant = Tenant::create(&env.pool, "transient", true, true).await;
    let App {
        ingest,
        evaluator: _evaluator,
        provisioner,
        ..
    } = spawn_app(&env, AppOptions::default()).await;

    // The provisioner's writes fail while the table is away, as they would with the database down.
    sqlx::query("ALTER TABLE activities RENAME TO activities_away")
        .execute(&env.pool)
        .await
        .unwrap();
    let xml = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04lTRANSIENT00001A",
            "006TRANSIENT001AAA",
            "005T",
            "42",
        )],
    );
    let (status, body) = post_outbound_message(&ingest, &tenant, xml).await;
    assert_eq!(status, 200, "{body}");

    let client = reqwest::Client::new();
    eventually(
        "the provisioner to report itself not ready while stuck",
        WAIT,
        || async {
            let r = client
                .get(provisioner.ops_url("/readyz"))
                .send()
                .await
                .ok()?;
            (r.status() == 503 && metric(&provisioner, "crm_sync_retries_total", &[]).await >= 3.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        read_topic(&format!("{}.dlq", env.topics.matches))
            .await
            .len(),
        0,
        "a transient failure is never dead-lettered"
    );

    sqlx::query("ALTER TABLE activities_away RENAME TO activities")
        .execute(&env.pool)
        .await
        .unwrap();
    eventually("the held-back activity to be recorded", WAIT, || async {
        (views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap()
            .len()
            == 1)
            .then_some(())
    })
    .await;
    eventually("readiness to recover", WAIT, || async {
        let r = client
            .get(provisioner.ops_url("/readyz"))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

/// A workflow outcome of the tenant's workflow for an Opportunity, as the evaluator writes them;
/// a matched one names `owner`.
fn outcome_of(
    tenant: &Tenant,
    id: &str,
    kind: crm_sync_proto::v1::OutcomeKind,
    (record_id, owner): (String, String),
    value: String,
    seconds: i64,
) -> crm_sync_proto::v1::WorkflowOutcome {
    use crm_sync_proto::v1::{CrmUser, OutcomeKind, WorkflowOutcome};
    WorkflowOutcome {
        outcome_id: id.to_owned(),
        event_id: format!("event-{id}"),
        company_id: tenant.company_id.to_string(),
        integration_id: tenant.integration_id.to_string(),
        workflow_id: tenant.workflow_id.to_string(),
        kind: kind as i32,
        object_type: "Opportunity".into(),
        record_id,
        owner: (kind == OutcomeKind::Matched).then(|| CrmUser {
            crm_user_id: owner,
            ..CrmUser::default()
        }),
        activity_type: "deal_won".into(),
        value,
        activity_date: None,
        occurred_at: Some(crm_sync_proto::Timestamp {
            seconds: 1_795_000_000 + seconds,
            nanos: 0,
        }),
        crm: 0,
    }
}

/// The provisioner applies a partition's backlog in batches (one transaction per batch). A batch
/// with poison in it falls back to one message at a time: the poison is dead-lettered, everything
/// else is applied exactly once (duplicates change nothing), accounts are created once per CRM
/// user, and every change is forwarded.
#[tokio::test]
async fn a_backlog_is_applied_in_batches_exactly_once_and_poison_still_dead_lettered() {
    use crm_sync_proto::Message as _;
    use crm_sync_proto::v1::{ActivityChanged, ActivityState, OutcomeKind, UserProvisioned};

    let env = TestEnv::new("batches").await;
    let tenant = Tenant::create(&env.pool, "batches", true, true).await;
    const RECORDS: usize = 120;
    const OWNERS: usize = 7;
    const RETRACTED: usize = 9;
    let outcome = |id: String, kind: OutcomeKind, i: usize, seconds: i64| {
        let record = (format!("006BATCH{i:05}"), format!("005BATCH{}", i % OWNERS));
        outcome_of(&tenant, &id, kind, record, format!("{i}.5"), seconds)
    };
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for i in 0..RECORDS {
        payloads.push(outcome(format!("m-{i}"), OutcomeKind::Matched, i, i as i64).encode_to_vec());
        if i == 100 {
            payloads.push(vec![0xff, 0xff, 0xff, 0x01]);
        }
        if i == 110 {
            // Decodes, but names an integration that does not exist: refused inside the
            // transaction, after other outcomes of the batch were written.
            let mut unknown = outcome("unknown".into(), OutcomeKind::Matched, i, 0);
            unknown.integration_id = uuid::Uuid::new_v4().to_string();
            payloads.push(unknown.encode_to_vec());
        }
    }
    for i in 0..20 {
        // Replays: the same outcome ids again.
        payloads.push(outcome(format!("m-{i}"), OutcomeKind::Matched, i, i as i64).encode_to_vec());
    }
    for i in 0..RETRACTED {
        payloads.push(
            outcome(format!("r-{i}"), OutcomeKind::Retracted, i, 1000 + i as i64).encode_to_vec(),
        );
    }
    // One key: one partition, in this order, all waiting before the provisioner starts.
    let key = format!("{}/Opportunity/batch", tenant.integration_id);
    let records: Vec<(Option<i32>, String, Vec<u8>)> = payloads
        .into_iter()
        .map(|payload| (None, key.clone(), payload))
        .collect();
    events::backlog_on_matches(&env, &records).await;

    let provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let activities = eventually("the backlog to be applied", WAIT, || async {
        let all = views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap();
        let retracted = all.iter().filter(|a| a.state == "retracted").count();
        (all.len() == RECORDS && retracted == RETRACTED).then_some(all)
    })
    .await;
    for a in &activities {
        let i: usize = a.record_id.trim_start_matches("006BATCH").parse().unwrap();
        assert_eq!(a.value.to_string(), format!("{i}.5"), "{a:?}");
        assert_eq!(a.crm_user_id, format!("005BATCH{}", i % OWNERS));
        assert!(a.user_id.is_some(), "every owner got an account: {a:?}");
    }
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(users.len(), OWNERS, "one account per CRM user");

    let dead = read_topic(&format!("{}.dlq", env.topics.matches)).await;
    let mut reasons: Vec<&str> = dead
        .iter()
        .filter_map(|d| d.header("crm-sync-dlq-reason"))
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["undecodable", "unknown_integration"]);

    eventually("every change to be forwarded", WAIT, || async {
        let changes: Vec<ActivityChanged> = read_topic(&env.topics.activities)
            .await
            .iter()
            .map(|r| ActivityChanged::decode(r.payload.as_slice()).unwrap())
            .collect();
        let recorded: std::collections::HashSet<&str> = changes
            .iter()
            .filter(|c| c.state == ActivityState::Recorded as i32)
            .map(|c| c.activity_id.as_str())
            .collect();
        let retracted = changes
            .iter()
            .filter(|c| c.state == ActivityState::Retracted as i32)
            .count();
        (recorded.len() == RECORDS && retracted == RETRACTED).then_some(())
    })
    .await;
    let provisioned: std::collections::HashSet<String> = read_topic(&env.topics.users)
        .await
        .iter()
        .map(|r| {
            UserProvisioned::decode(r.payload.as_slice())
                .unwrap()
                .event_id
        })
        .collect();
    assert_eq!(provisioned.len(), OWNERS);
    eventually("the outbox to be empty", WAIT, || async {
        let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        (left == 0).then_some(())
    })
    .await;
    // At least the 20 replays (a batch that fell back after part of it committed adds more).
    assert!(
        metric(
            &provisioner,
            "crm_sync_provisioner_outcomes_total",
            &["result=\"duplicate\""]
        )
        .await
            >= 20.0,
        "the replays were recognized"
    );
    assert!(
        metric(&provisioner, "crm_sync_batch_fallbacks_total", &[]).await >= 1.0,
        "the poison's batch fell back to one message at a time"
    );
}

/// Outcomes of CRM users new to the platform, waiting on two partitions in opposite orders:
/// each partition's batches create their accounts together, in shared transactions, and the
/// two partitions' transactions, which meet the same new users, lock them in one order, so that
/// neither waits on the other for ever (a deadlock would abort a batch, which then falls back to
/// one message at a time). Every user gets exactly one account.
#[tokio::test]
async fn new_owners_get_their_accounts_in_shared_transactions_without_deadlocks() {
    use crm_sync_proto::Message as _;
    use crm_sync_proto::v1::OutcomeKind;

    const OWNERS: usize = 60;
    let env = TestEnv::new("new_owners").await;
    let tenant = Tenant::create(&env.pool, "new-owners", true, true).await;
    let forward: Vec<usize> = (0..OWNERS).collect();
    let mut records = Vec::new();
    for (partition, owners) in [
        (0, forward.clone()),
        (1, forward.into_iter().rev().collect()),
    ] {
        for owner in owners {
            let id = format!("p{partition}-{owner}");
            let record = (
                format!("006NEW{partition}{owner:05}"),
                format!("005NEW{owner:03}"),
            );
            let payload = outcome_of(&tenant, &id, OutcomeKind::Matched, record, "1".into(), 0);
            let key = format!("{}/Opportunity/{owner}", tenant.integration_id);
            records.push((Some(partition), key, payload.encode_to_vec()));
        }
    }
    events::backlog_on_matches(&env, &records).await;

    let provisioner = env.start_service("provisioner", "provisioner", &[]).await;
    let activities = eventually("both partitions' backlogs to be applied", WAIT, || async {
        let all = views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap();
        (all.len() == 2 * OWNERS).then_some(all)
    })
    .await;
    assert!(
        activities.iter().all(|a| a.user_id.is_some()),
        "every activity is attributed to its owner's account"
    );
    let users = views::users(&env.pool, tenant.company_id).await.unwrap();
    assert_eq!(users.len(), OWNERS, "one account per CRM user");
    assert_eq!(
        metric(&provisioner, "crm_sync_batch_fallbacks_total", &[]).await,
        0.0,
        "no batch failed (a deadlock between the partitions would have aborted one)"
    );
    let transactions = metric(
        &provisioner,
        "crm_sync_provisioner_transaction_outcomes_count",
        &[],
    )
    .await;
    assert!(
        transactions > 0.0 && transactions <= (2 * OWNERS / 8) as f64,
        "{transactions} transactions for {} outcomes of {OWNERS} new owners: accounts are \
         created in the batches' shared transactions, not one transaction each",
        2 * OWNERS
    );
}
