//! A reconciliation schedule over several objects: each object's next run starts from its own
//! changes, so a quiet object neither holds the others back nor is read again from the start.

use std::time::Duration;

use chrono::Utc;
use crm_sync_crm_directory::Crm;
use crm_sync_e2e::fake_crm::Kind;
use crm_sync_e2e::{TestEnv, eventually};
use crm_sync_proto::v1::ChangeType;
use crm_sync_store::sync_jobs::{self, Job, JobKind, Outcome};
use serde_json::json;
use uuid::Uuid;

use super::jobs::{Memory, job_config, run_once};
use super::*;

/// A reconciliation of `objects` created `days` ago.
async fn schedule(env: &TestEnv, integration: Uuid, objects: &[&str], days: i64) -> Job {
    let objects: Vec<String> = objects.iter().map(|o| (*o).to_owned()).collect();
    sync_jobs::create(
        &env.pool,
        integration,
        JobKind::Reconciliation,
        Utc::now() - chrono::Duration::days(days),
        &objects,
    )
    .await
    .unwrap()
    .unwrap()
}

/// Claims the schedule's next run once it is due.
async fn next_run(env: &TestEnv, owner: &str) -> Job {
    eventually("the next run is due", Duration::from_secs(10), || async {
        sync_jobs::claim(&env.pool, owner, job_config().lease)
            .await
            .unwrap()
    })
    .await
}

#[tokio::test]
async fn a_quiet_object_does_not_make_every_run_reread_the_others_since_connecting() {
    let env = TestEnv::new("pull_schedule_quiet").await;
    let (_, integration) = super::leases::integration(&env).await;
    let fake = start(Kind::Salesforce).await;
    let now = Utc::now();
    for n in 1..=10i64 {
        fake.put_at(
            "Opportunity",
            &format!("006{n:015}"),
            json!({"StageName": "Prospecting", "Amount": n}),
            now - chrono::Duration::days(20) + chrono::Duration::minutes(n),
        );
    }
    let client = client(&fake, Crm::Salesforce, TOKEN, config(50));
    // Quotes are rarely edited: none in this run, none in the next.
    let scopes = vec![
        scope("Opportunity", &["StageName", "Amount"]),
        scope("Quote", &["Status"]),
    ];
    schedule(&env, integration, &["Opportunity", "Quote"], 30).await;
    let sink = Memory::default();
    let first = next_run(&env, "a").await;
    let outcome = run_once(&env, "a", &first, &client, &scopes, &sink).await;
    assert!(matches!(outcome, Outcome::Reschedule { .. }), "{outcome:?}");
    assert_eq!(sink.events.lock().unwrap().len(), 10);

    fake.put(
        "Opportunity",
        "006000000000000003",
        json!({"StageName": "Closed Won"}),
    );
    sink.events.lock().unwrap().clear();
    let second = next_run(&env, "b").await;
    run_once(&env, "b", &second, &client, &scopes, &sink).await;
    let read: Vec<String> = sink
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.record_id.clone())
        .collect();
    assert_eq!(
        read,
        vec!["006000000000000003".to_owned()],
        "only the change since the first run, not every change since connecting"
    );
}

/// An object the integration's API user cannot read, either way Salesforce says so: a field it
/// cannot see (400 `INVALID_FIELD`), or no access to the object at all (403, which is not a
/// refusal of the credentials).
#[tokio::test]
async fn an_object_the_api_user_cannot_read_is_reported_and_the_others_are_still_reconciled() {
    let hidden: fn(&FakeCrm) = |fake| fake.hide_field("Quote", "Discount__c");
    let denied: fn(&FakeCrm) = |fake| fake.deny_object("Quote");
    for (name, refuse, code) in [
        ("pull_schedule_bad_field", hidden, "INVALID_FIELD"),
        (
            "pull_schedule_denied_object",
            denied,
            "INSUFFICIENT_ACCESS_OR_READONLY",
        ),
    ] {
        a_refused_object_is_reported_and_the_others_reconciled(name, refuse, code).await;
    }
}

async fn a_refused_object_is_reported_and_the_others_reconciled(
    name: &str,
    refuse: fn(&FakeCrm),
    code: &str,
) {
    let env = TestEnv::new(name).await;
    let (_, integration) = super::leases::integration(&env).await;
    let fake = start(Kind::Salesforce).await;
    let now = Utc::now();
    for n in 1..=5i64 {
        fake.put_at(
            "Opportunity",
            &format!("006{n:015}"),
            json!({"StageName": "Prospecting", "Amount": n}),
            now - chrono::Duration::hours(2) + chrono::Duration::minutes(n),
        );
    }
    // A workflow reads a Quote field the integration's API user cannot read.
    refuse(&fake);
    let client = client(&fake, Crm::Salesforce, TOKEN, config(50));
    let scopes = vec![
        scope("Quote", &["Discount__c"]),
        scope("Opportunity", &["StageName", "Amount"]),
    ];
    let job = schedule(&env, integration, &["Quote", "Opportunity"], 1).await;
    let sink = Memory::default();
    let first = next_run(&env, "a").await;
    let outcome = run_once(&env, "a", &first, &client, &scopes, &sink).await;
    let Outcome::Reschedule {
        error,
        objects_not_read,
        ..
    } = &outcome
    else {
        panic!("the schedule goes on: {outcome:?}");
    };
    // One by one for the sync status: the object and the CRM's answer.
    assert_eq!(objects_not_read.len(), 1, "{objects_not_read:?}");
    assert_eq!(objects_not_read[0].object, "Quote");
    assert!(
        objects_not_read[0].error.contains(code),
        "{objects_not_read:?}"
    );
    let error = error.clone().unwrap_or_default();
    assert!(
        error.contains("Quote") && error.contains(code),
        "the object and the CRM's error: {error}"
    );
    assert!(
        !error.contains("refused the integration's API credentials"),
        "{error}"
    );
    let recorded = sync_jobs::get(&env.pool, job.id).await.unwrap().unwrap();
    assert_eq!(recorded.last_error.as_deref(), Some(error.as_str()));
    let reconciled = sink.events.lock().unwrap().len();
    assert_eq!(reconciled, 5, "the readable object was reconciled");

    // The next run still finds Opportunity's deletes, and only what changed since.
    fake.delete("Opportunity", "006000000000000002");
    sink.events.lock().unwrap().clear();
    let second = next_run(&env, "b").await;
    run_once(&env, "b", &second, &client, &scopes, &sink).await;
    let events = sink.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].record_id, "006000000000000002");
    assert_eq!(events[0].change_type, ChangeType::Deleted as i32);
    // The unreadable object is asked for again each run, from where it was, until it is fixed.
    assert_eq!(queries_of(&fake, "Quote"), 2);
}

fn queries_of(fake: &FakeCrm, object: &str) -> usize {
    let from = format!("FROM {object}");
    fake.requests_to("/queryAll")
        .into_iter()
        .filter(|r| r.query.get("q").is_some_and(|q| q.contains(&from)))
        .count()
}
