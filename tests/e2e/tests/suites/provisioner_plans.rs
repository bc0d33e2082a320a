//! The provisioner's batch statements reach rows through their indexes whatever the tables'
//! statistics: run several times while the tables are empty (past the five executions after
//! which PostgreSQL may switch a prepared statement to a generic plan, made for an empty table:
//! a full scan), then once the tables hold tens of thousands of rows that no ANALYZE has seen
//! yet, and once more after ANALYZE. A full scan there would read the whole table per batch. On
//! the empty tables a scan of nothing is what PostgreSQL rightly picks, and costs nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crm_sync_e2e::TestEnv;
use crm_sync_store::provisioning::{activities, identities, users};
use crm_sync_store::record_owners::{self, RecordKey};
use sqlx::PgConnection;
use uuid::Uuid;

const ROWS: i64 = 30_000;

/// Sequential and index scans of `table` in the current transaction so far.
async fn scans(conn: &mut PgConnection, table: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(seq_scan, 0), COALESCE(idx_scan, 0) FROM pg_stat_xact_user_tables
         WHERE relname = $1",
    )
    .bind(table)
    .fetch_optional(conn)
    .await
    .unwrap()
    .unwrap_or((0, 0))
}

/// Runs every batch look-up 8 times on the same connection (beyond the 5 custom plans after
/// which a prepared statement may be planned generically), and returns the sequential scans
/// each table saw.
async fn look_ups(
    conn: &mut PgConnection,
    integration_id: Uuid,
    workflow_id: Uuid,
) -> Vec<(&'static str, i64)> {
    let records: Vec<String> = (0..64).map(|n| format!("006{n:015}")).collect();
    let activity_keys: Vec<(Uuid, &str)> =
        records.iter().map(|r| (workflow_id, r.as_str())).collect();
    let owners: Vec<String> = (0..64).map(|n| format!("005{n:015}")).collect();
    let identity_keys: Vec<(Uuid, &str)> = owners
        .iter()
        .map(|o| (integration_id, o.as_str()))
        .collect();
    let record_keys: Vec<RecordKey> = records
        .iter()
        .map(|r| RecordKey {
            integration_id,
            object_type: "Opportunity".into(),
            record_id: r.clone(),
        })
        .collect();
    let user_ids: Vec<Uuid> = (0..64u128).map(Uuid::from_u128).collect();
    let tables = ["activities", "crm_identities", "record_owners", "users"];
    let mut before = Vec::new();
    for table in tables {
        before.push(scans(conn, table).await.0);
    }
    for _ in 0..8 {
        activities::lock_all(conn, &activity_keys).await.unwrap();
        identities::find_all(conn, &identity_keys).await.unwrap();
        record_owners::last_known_all(conn, &record_keys)
            .await
            .unwrap();
        users::on_leaderboards(conn, &user_ids).await.unwrap();
    }
    let mut seq = Vec::new();
    for (table, before) in tables.into_iter().zip(before) {
        seq.push((table, scans(conn, table).await.0 - before));
    }
    seq
}

#[tokio::test]
async fn batch_look_ups_use_the_indexes_on_empty_and_on_large_tables() {
    let env = TestEnv::new("provisioner_plans").await;
    let (company, integration, workflow) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // One transaction throughout: its own scan counts are what pg_stat_xact_user_tables shows.
    let mut conn = env.pool.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "INSERT INTO companies (id, slug, name) VALUES ('{company}', 'plans-{company}', 'Plans');
         INSERT INTO integrations (id, company_id, name, crm, crm_account_id)
         VALUES ('{integration}', '{company}', 'sf', 'salesforce', '00D');
         INSERT INTO workflows (id, company_id, integration_id, name, object_type, triggers,
                                conditions, user_field, activity_type)
         VALUES ('{workflow}', '{company}', '{integration}', 'w', 'Opportunity', '{{updated}}',
                 '{{}}', 'OwnerId', 'deal_won');
         ANALYZE"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();

    look_ups(&mut conn, integration, workflow).await;

    sqlx::raw_sql(&format!(
        "INSERT INTO users (id, company_id, display_name, status, source)
         SELECT md5('u' || n)::uuid, '{company}', 'User ' || n, 'active', 'manual'
         FROM generate_series(1, {ROWS}) AS n;
         INSERT INTO crm_identities (company_id, integration_id, crm_user_id, user_id)
         SELECT '{company}', '{integration}', 'x' || n, md5('u' || n)::uuid
         FROM generate_series(1, {ROWS}) AS n;
         INSERT INTO record_owners (company_id, integration_id, object_type, record_id, crm_user_id)
         SELECT '{company}', '{integration}', 'Opportunity', 'r' || n, 'x' || n
         FROM generate_series(1, {ROWS}) AS n;
         INSERT INTO activities (id, company_id, integration_id, workflow_id, object_type, record_id,
                                 crm_user_id, user_id, activity_type, value, activity_date, state,
                                 last_event_at, last_event_id)
         SELECT md5('a' || n)::uuid, '{company}', '{integration}', '{workflow}', 'Opportunity',
                'r' || n, 'x' || n, md5('u' || n)::uuid, 'deal_won', n, now(), 'recorded', now(), 'e' || n
         FROM generate_series(1, {ROWS}) AS n"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let grown = look_ups(&mut conn, integration, workflow).await;
    assert!(
        grown.iter().all(|(_, seq)| *seq == 0),
        "sequential scans on tables of {ROWS} rows not yet analyzed: {grown:?}"
    );

    sqlx::raw_sql("ANALYZE").execute(&mut *conn).await.unwrap();
    let analyzed = look_ups(&mut conn, integration, workflow).await;
    assert!(
        analyzed.iter().all(|(_, seq)| *seq == 0),
        "sequential scans on tables of {ROWS} rows: {analyzed:?}"
    );
}

/// Deletes 8 batches of the given outbox rows on `conn` (past the five executions after which a
/// prepared statement may be planned generically); the sequential scans of the outbox meanwhile.
async fn outbox_deletes(conn: &mut PgConnection, ids: &[i64]) -> i64 {
    let before = scans(conn, "outbox").await.0;
    for batch in ids.chunks(64).take(8) {
        crm_sync_store::outbox::delete(&mut *conn, batch)
            .await
            .unwrap();
    }
    scans(conn, "outbox").await.0 - before
}

/// The outbox is a queue: autovacuum finds it empty and truncates it, and the delete's plan is
/// then made for an empty table, a full scan, and kept while the table fills again with rows
/// and with rows deleted since. Every batch's delete must still go through the primary key.
#[tokio::test]
async fn outbox_deletes_use_the_primary_key_after_the_table_was_seen_empty() {
    let env = TestEnv::new("outbox_plans").await;
    sqlx::raw_sql("VACUUM ANALYZE outbox")
        .execute(&env.pool)
        .await
        .unwrap();
    let mut conn = env.pool.begin().await.unwrap();
    let fake: Vec<i64> = (1..=512).collect();
    outbox_deletes(&mut conn, &fake).await;
    let ids: Vec<i64> = sqlx::query_scalar(&format!(
        "INSERT INTO outbox (event_id, topic, message_key, message_id, payload)
         SELECT 'e' || n, 'activities', 'k' || n, 'm' || n, '\\x00'
         FROM generate_series(1, {ROWS}) AS n RETURNING id"
    ))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let seq = outbox_deletes(&mut conn, &ids).await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(left, ROWS - 8 * 64, "every row asked for is deleted");
    assert_eq!(
        seq, 0,
        "the deletes scanned the whole outbox of {ROWS} rows"
    );
}

/// Sequential scans of activities and record_owners in the current transaction so far.
async fn owned_table_scans(conn: &mut PgConnection) -> (i64, i64) {
    (
        scans(conn, "activities").await.0,
        scans(conn, "record_owners").await.0,
    )
}

/// An integration an admin deletes takes its activities and record owners with it, and reaches
/// them through indexes: a company's other integrations may hold millions of rows, which a
/// sequential scan per delete would read (under locks) every time.
#[tokio::test]
async fn deleting_an_integration_reaches_its_activities_and_record_owners_through_indexes() {
    const DELETED_ROWS: i64 = 100;
    let env = TestEnv::new("delete_plans").await;
    let company = Uuid::new_v4();
    let (kept, deleted) = (
        (Uuid::new_v4(), Uuid::new_v4()),
        (Uuid::new_v4(), Uuid::new_v4()),
    );
    let mut conn = env.pool.begin().await.unwrap();
    let mut seed = format!(
        "INSERT INTO companies (id, slug, name) VALUES ('{company}', 'plans-{company}', 'Plans');"
    );
    for (n, ((integration, workflow), rows)) in [(kept, ROWS), (deleted, DELETED_ROWS)]
        .into_iter()
        .enumerate()
    {
        seed.push_str(&format!(
            "INSERT INTO integrations (id, company_id, name, crm, crm_account_id)
             VALUES ('{integration}', '{company}', 'sf{n}', 'salesforce', '00D{n}');
             INSERT INTO workflows (id, company_id, integration_id, name, object_type, triggers,
                                    conditions, user_field, activity_type)
             VALUES ('{workflow}', '{company}', '{integration}', 'w', 'Opportunity', '{{updated}}',
                     '{{}}', 'OwnerId', 'deal_won');
             INSERT INTO record_owners (company_id, integration_id, object_type, record_id, crm_user_id)
             SELECT '{company}', '{integration}', 'Opportunity', 'r' || n, 'x' || n
             FROM generate_series(1, {rows}) AS n;
             INSERT INTO activities (id, company_id, integration_id, workflow_id, object_type,
                                     record_id, crm_user_id, activity_type, value, activity_date,
                                     state, last_event_at, last_event_id)
             SELECT gen_random_uuid(), '{company}', '{integration}', '{workflow}', 'Opportunity',
                    'r' || n, 'x' || n, 'deal_won', n, now(), 'recorded', now(), 'e' || n
             FROM generate_series(1, {rows}) AS n;"
        ));
    }
    seed.push_str("ANALYZE");
    sqlx::raw_sql(&seed).execute(&mut *conn).await.unwrap();

    let before = owned_table_scans(&mut conn).await;
    sqlx::query("DELETE FROM integrations WHERE id = $1")
        .bind(deleted.0)
        .execute(&mut *conn)
        .await
        .unwrap();
    let after = owned_table_scans(&mut conn).await;

    for table in ["activities", "record_owners"] {
        let count = format!("SELECT count(*) FROM {table} WHERE integration_id = $1");
        let mut left = Vec::new();
        for integration in [deleted.0, kept.0] {
            let rows: i64 = sqlx::query_scalar(&count)
                .bind(integration)
                .fetch_one(&mut *conn)
                .await
                .unwrap();
            left.push(rows);
        }
        assert_eq!(
            left,
            [0, ROWS],
            "{table}: the deleted integration's rows only"
        );
    }
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0, 0),
        "sequential scans of activities and record_owners ({ROWS} rows of another integration) \
         while deleting an integration with {DELETED_ROWS}"
    );
}
