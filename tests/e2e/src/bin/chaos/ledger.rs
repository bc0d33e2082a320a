//! After the run: the pipeline drained, then the ledger checked — nothing lost, nothing
//! doubled, every poison message dead-lettered and nothing else.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crm_sync_e2e::{TestEnv, read_topic};
use crm_sync_proto::Message;
use crm_sync_proto::v1::ActivityChanged;

use crate::{Options, amount, owner, record_id};

/// One line of the ledger and whether it holds.
pub type Check = (String, bool);

/// Waits until every activity is recorded and announced (at most ten minutes); the outbox rows
/// left then. Announcements a killed provisioner left in the outbox go out once the relay sweeps
/// them up (after they count as abandoned), which can be well after the last activity was
/// recorded.
pub async fn drain(env: &TestEnv, events: usize) -> i64 {
    let drain_deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (n, outbox): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM activities), (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap_or((0, 0));
        if (n as usize >= events && outbox == 0) || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (outbox_left,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    outbox_left
}

/// Every event's activity recorded once, with its value and its owner's user.
pub async fn activities(env: &TestEnv, o: &Options) -> Check {
    let rows: Vec<(String, String, String, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT a.record_id, a.value::text, a.crm_user_id, i.user_id FROM activities a
         LEFT JOIN crm_identities i ON i.integration_id = a.integration_id AND i.crm_user_id = a.crm_user_id
         WHERE a.user_id IS NOT DISTINCT FROM i.user_id",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let by_record: HashMap<&str, (&str, &str, bool)> = rows
        .iter()
        .map(|(r, v, o, u)| (r.as_str(), (v.as_str(), o.as_str(), u.is_some())))
        .collect();
    let mut lost = 0;
    let mut wrong = 0;
    for i in 0..o.events {
        match by_record.get(record_id(i).as_str()) {
            None => lost += 1,
            Some((value, own, mapped)) => {
                let same_value =
                    value.parse::<rust_decimal::Decimal>().ok() == amount(i).parse().ok();
                if !same_value || *own != owner(i, o.owners) || !mapped {
                    wrong += 1;
                }
            }
        }
    }
    let (activity_rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM activities")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    (
        format!(
            "activities: {} expected, {activity_rows} in PostgreSQL, {lost} lost, {wrong} with a wrong value/user",
            o.events
        ),
        lost == 0 && wrong == 0 && activity_rows as usize == o.events,
    )
}

/// One platform user per distinct CRM owner.
pub async fn users(env: &TestEnv, o: &Options) -> Check {
    let users: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM users")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let owners_expected = o.owners.min(o.events);
    (
        format!(
            "users: {} for {owners_expected} distinct CRM owners",
            users.len()
        ),
        users.len() == owners_expected,
    )
}

/// Every activity announced (duplicate messages are counted: consumers deduplicate them).
pub async fn announcements(env: &TestEnv, outbox_left: i64) -> Check {
    let changes = read_topic(&env.topics.activities).await;
    let mut seen_changes: HashMap<String, usize> = HashMap::new();
    let mut announced: HashSet<String> = HashSet::new();
    for record in &changes {
        let change = ActivityChanged::decode(record.payload.as_slice()).unwrap();
        *seen_changes.entry(change.change_id).or_default() += 1;
        announced.insert(change.activity_id);
    }
    let duplicate_messages: usize = seen_changes.values().map(|n| n - 1).sum();
    let db_ids: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT id FROM activities")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    let unannounced = db_ids
        .iter()
        .filter(|(id,)| !announced.contains(&id.to_string()))
        .count();
    (
        format!(
            "salesscreen.activities: {} messages, {} activities announced, {unannounced} never announced, {duplicate_messages} duplicate messages (deduplicated by change_id), outbox left {outbox_left}",
            changes.len(),
            announced.len()
        ),
        unannounced == 0,
    )
}

/// Every poison message dead-lettered, and nothing else.
pub async fn dead_letters(env: &TestEnv, poison_ids: &HashSet<String>) -> Check {
    let mut dead: Vec<String> = Vec::new();
    for topic in [
        format!("{}.dlq", env.topics.events),
        format!("{}.dlq", env.topics.matches),
    ] {
        for record in read_topic(&topic).await {
            dead.push(
                record
                    .header("crm-sync-event-id")
                    .unwrap_or("<no id>")
                    .to_owned(),
            );
        }
    }
    let dead_set: HashSet<&String> = dead.iter().collect();
    let missing_poison = poison_ids.iter().filter(|p| !dead_set.contains(p)).count();
    let not_poison = dead.iter().filter(|d| !poison_ids.contains(*d)).count();
    (
        format!(
            "dead letters: {} injected, {} in DLQs, {missing_poison} poison missing, {not_poison} non-poison",
            poison_ids.len(),
            dead.len()
        ),
        missing_poison == 0 && not_poison == 0,
    )
}
