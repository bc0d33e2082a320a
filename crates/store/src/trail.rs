//! The record trail: each judged event of a record with every workflow's decision (written in
//! batches by the evaluator), the messages consumers dead-lettered, and what they led to (read
//! at query time from the activities and users the provisioner keeps). Company-scoped reads for
//! the admin API and the CLI; the figures an integration's health shows. The judged events are
//! stored in pages ([`pages`]), their decisions as codes worded when read ([`words`]). Events
//! written before the pages stay readable in `trail_events` until they expire.

pub mod dead_letters;
pub mod entry;
pub mod pages;
pub mod words;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use crm_sync_workflow::WorkflowSpec;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

pub use words::{PreviousKnown, Verdict, Version};

/// Longest text kept per column: a record id or reason longer than this is cut, so that one odd
/// value never makes a whole batch fail (an index entry must fit in a page).
const MAX_TEXT: usize = 512;
/// Longest dead-letter detail kept.
const MAX_DETAIL: usize = 2_000;

/// `s` without NULs (PostgreSQL text cannot hold them), cut to `max` characters.
pub fn storable(s: &str, max: usize) -> String {
    s.chars().filter(|c| *c != '\0').take(max).collect()
}

/// One judged event, as the evaluator writes it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub integration_id: Uuid,
    pub company_id: Uuid,
    pub event_id: String,
    pub object_type: String,
    pub record_id: String,
    pub change_type: &'static str,
    pub source_change_type: String,
    pub source: &'static str,
    pub crm: &'static str,
    pub delivery_id: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub judged_at: DateTime<Utc>,
    pub summary: &'static str,
    /// Per workflow of the record's object: the version judged against, decision and reason.
    pub verdicts: Vec<Verdict>,
    /// The values the workflows that did not count read ([`words::encode_read_values`]);
    /// None when every workflow counted it or none read anything.
    pub read_values: Option<Vec<u8>>,
}

/// A workflow's definition that stored verdicts refer to.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub version: Uuid,
    pub workflow_id: Uuid,
    pub integration_id: Uuid,
    pub company_id: Uuid,
    /// The definition as JSON text.
    pub spec: String,
}

/// Keeps workflow versions (again: a version seen again is kept longer); versions of an
/// integration deleted meanwhile are skipped.
pub async fn store_versions(pool: &PgPool, versions: &[NewVersion]) -> Result<(), sqlx::Error> {
    if versions.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO trail_workflow_versions (version, workflow_id, integration_id, company_id, spec)
         SELECT v.version, v.workflow_id, v.integration_id, v.company_id, v.spec::jsonb
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[])
              AS v(version, workflow_id, integration_id, company_id, spec)
         JOIN integrations i ON i.id = v.integration_id AND i.company_id = v.company_id
         ON CONFLICT (version) DO UPDATE SET seen_at = now()",
    )
    .bind(versions.iter().map(|v| v.version).collect::<Vec<_>>())
    .bind(versions.iter().map(|v| v.workflow_id).collect::<Vec<_>>())
    .bind(versions.iter().map(|v| v.integration_id).collect::<Vec<_>>())
    .bind(versions.iter().map(|v| v.company_id).collect::<Vec<_>>())
    .bind(versions.iter().map(|v| v.spec.as_str()).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(())
}

/// Writes judged events in pages ([`pages::write`]); events of an integration deleted
/// meanwhile are skipped. Returns the entries written.
pub async fn insert_events(pool: &PgPool, events: &[NewEvent]) -> Result<u64, sqlx::Error> {
    pages::write_events(pool, events).await
}

/// A message a consumer dead-lettered, for the integration it belongs to.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub integration_id: Uuid,
    pub object_type: String,
    pub record_id: String,
    pub event_id: Option<String>,
    pub service: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub detail: String,
}

/// Records dead letters under their integrations' companies in one statement (nothing for an
/// integration that does not exist), numbered in the order given so that lists show them
/// newest last-given first; the same message dead-lettered again (a replay) is recorded once.
pub async fn record_dead_letters(
    pool: &PgPool,
    letters: &[NewDeadLetter],
) -> Result<(), sqlx::Error> {
    if letters.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&NewDeadLetter) -> &str, max: usize| -> Vec<String> {
        letters.iter().map(|d| storable(f(d), max)).collect()
    };
    sqlx::query(
        "INSERT INTO trail_dead_letters (company_id, integration_id, object_type, record_id,
             event_id, service, topic, partition, \"offset\", reason, detail)
         SELECT i.company_id, i.id, d.object_type, d.record_id, d.event_id, d.service, d.topic,
                d.partition, d.at, d.reason, d.detail
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::int4[], $8::int8[], $9::text[], $10::text[]) WITH ORDINALITY
              AS d(integration_id, object_type, record_id, event_id, service, topic, partition,
                   at, reason, detail, n)
         JOIN integrations i ON i.id = d.integration_id
         ORDER BY d.n
         ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
    )
    .bind(letters.iter().map(|d| d.integration_id).collect::<Vec<_>>())
    .bind(text(|d| &d.object_type, MAX_TEXT))
    .bind(text(|d| &d.record_id, MAX_TEXT))
    .bind(
        letters
            .iter()
            .map(|d| d.event_id.as_deref().map(|e| storable(e, MAX_TEXT)))
            .collect::<Vec<_>>(),
    )
    .bind(text(|d| &d.service, MAX_TEXT))
    .bind(text(|d| &d.topic, MAX_TEXT))
    .bind(letters.iter().map(|d| d.partition).collect::<Vec<_>>())
    .bind(letters.iter().map(|d| d.offset).collect::<Vec<_>>())
    .bind(text(|d| &d.reason, MAX_TEXT))
    .bind(text(|d| &d.detail, MAX_DETAIL))
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes trail rows older than `before`, and the workflow versions not seen for a day longer
/// (an entry refers to a version seen when it was written, or up to an hour before); the number
/// of trail rows deleted.
pub async fn expire(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let mut events = sqlx::query("DELETE FROM trail_events WHERE judged_at < $1")
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected();
    let pages: Option<i64> = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM trail_pages WHERE last_judged_at < $1 RETURNING entries)
         SELECT sum(entries)::bigint FROM gone",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    events += pages.unwrap_or(0).max(0) as u64;
    // Pages are numbered in the order they are written: the lookup rows older than the oldest
    // page left are those of expired (or deleted) pages. A page being written is not seen here,
    // nor are its rows.
    sqlx::query(
        "DELETE FROM trail_page_records
         WHERE page_id < coalesce((SELECT min(id) FROM trail_pages), 9223372036854775807)",
    )
    .execute(pool)
    .await?;
    let letters = sqlx::query("DELETE FROM trail_dead_letters WHERE at < $1")
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM trail_workflow_versions WHERE seen_at < $1 - interval '1 day'")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(events + letters)
}

/// One judged event as the trail shows it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event_id: String,
    pub object_type: String,
    pub record_id: String,
    pub change_type: String,
    pub source_change_type: String,
    pub source: String,
    pub crm: String,
    pub delivery_id: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub judged_at: DateTime<Utc>,
    pub summary: String,
    /// Per workflow: `workflow_id`, `workflow`, `activity_type`, `decision`, `reason` and the
    /// reason in words (`explanation`).
    pub decisions: serde_json::Value,
}

/// A judged event as stored: its decisions still codes (a JSON array of `{"v": version, "d":
/// decision, "r": reason}`, or of worded decisions for entries written before the codes).
#[derive(Debug, sqlx::FromRow)]
pub struct StoredEvent {
    pub event_id: String,
    pub object_type: String,
    pub record_id: String,
    pub change_type: String,
    pub source_change_type: String,
    pub source: String,
    pub crm: String,
    pub delivery_id: String,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub judged_at: DateTime<Utc>,
    pub summary: String,
    pub decisions: serde_json::Value,
    pub read_values: Option<Vec<u8>>,
}

const EVENT_COLUMNS: &str = "event_id, object_type, record_id, change_type, source_change_type,
     source, crm, delivery_id, occurred_at, received_at, judged_at, summary, decisions,
     read_values";

/// The events with their decisions in words, against the workflow versions they were judged
/// against.
async fn worded(
    pool: &PgPool,
    company_id: Uuid,
    events: Vec<StoredEvent>,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut ids = Vec::new();
    for e in &events {
        words::versions_of(&e.decisions, &mut ids);
    }
    let versions = versions(pool, company_id, &ids).await?;
    Ok(events
        .into_iter()
        .map(|e| EventRow {
            decisions: words::word(
                e.decisions,
                e.read_values.as_deref(),
                &e.change_type,
                &versions,
            ),
            event_id: e.event_id,
            object_type: e.object_type,
            record_id: e.record_id,
            change_type: e.change_type,
            source_change_type: e.source_change_type,
            source: e.source,
            crm: e.crm,
            delivery_id: e.delivery_id,
            occurred_at: e.occurred_at,
            received_at: e.received_at,
            judged_at: e.judged_at,
            summary: e.summary,
        })
        .collect())
}

/// The company's workflow versions of `ids`; one whose definition no longer parses is left out
/// (its decisions are shown without words).
async fn versions(
    pool: &PgPool,
    company_id: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Version>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, Uuid, serde_json::Value)> = sqlx::query_as(
        "SELECT version, workflow_id, spec FROM trail_workflow_versions
         WHERE company_id = $1 AND version = ANY($2)",
    )
    .bind(company_id)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(version, workflow_id, spec)| {
            let spec = serde_json::from_value::<WorkflowSpec>(spec)
                .map_err(|error| tracing::warn!(%version, %error, "a stored workflow version does not parse"))
                .ok()?;
            Some((version, Version { workflow_id, spec }))
        })
        .collect())
}

/// A record's judged events, newest first.
pub async fn record_events(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    record_id: &str,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut events: Vec<StoredEvent> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM trail_events
         WHERE company_id = $1 AND integration_id = $2 AND record_id = $3
         ORDER BY judged_at DESC, event_id LIMIT $4"
    ))
    .bind(company_id)
    .bind(integration_id)
    .bind(record_id)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut seen = events.iter().map(|e| e.event_id.clone()).collect();
    let pages = pages::of_record(pool, company_id, integration_id, record_id, limit).await?;
    events.extend(pages::entries(
        pages,
        |e| e.record_id == record_id,
        &mut seen,
    ));
    events.sort_by(|a, b| (b.judged_at, &a.event_id).cmp(&(a.judged_at, &b.event_id)));
    events.truncate(usize::try_from(limit).unwrap_or(0));
    worded(pool, company_id, events).await
}

/// Pages of an integration read at once while looking for its latest events.
const RECENT_CHUNK: i64 = 8;
/// Pages read at most for one list: a summary that matches rarely lists what these hold.
const RECENT_PAGES: i64 = 128;

/// The integration's latest judged events, newest first (ties by event id, descending); only
/// those of `summary` when given; only those before `before` (the last of the previous page).
pub async fn recent_events(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    summary: Option<&str>,
    before: Option<(DateTime<Utc>, &str)>,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let mut events: Vec<StoredEvent> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM trail_events
         WHERE company_id = $1 AND integration_id = $2 AND ($3::text IS NULL OR summary = $3)
           AND ($5::timestamptz IS NULL OR (judged_at, event_id) < ($5, $6::text))
         ORDER BY judged_at DESC, event_id DESC LIMIT $4"
    ))
    .bind(company_id)
    .bind(integration_id)
    .bind(summary)
    .bind(limit)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .fetch_all(pool)
    .await?;
    let mut seen: HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let keep = |e: &StoredEvent| {
        summary.is_none_or(|s| e.summary == s)
            && before.is_none_or(|(at, id)| (e.judged_at, e.event_id.as_str()) < (at, id))
    };
    let newest_first = |events: &mut Vec<StoredEvent>| {
        events.sort_by(|a, b| (b.judged_at, &b.event_id).cmp(&(a.judged_at, &a.event_id)))
    };
    let want = usize::try_from(limit).unwrap_or(0);
    let mut after = None;
    for _ in 0..RECENT_PAGES / RECENT_CHUNK {
        let pages = pages::recent(
            pool,
            (company_id, integration_id),
            before.map(|b| b.0),
            after,
            RECENT_CHUNK,
        )
        .await?;
        let read = pages.len() as i64;
        let Some(&(last_id, last_at, _)) = pages.last() else {
            break;
        };
        after = Some((last_at, last_id));
        let pages = pages.into_iter().map(|(id, _, body)| (id, body)).collect();
        events.extend(pages::entries(pages, keep, &mut seen));
        newest_first(&mut events);
        // Every page not read yet holds only entries judged at `last_at` or before.
        let enough = want
            .checked_sub(1)
            .and_then(|i| events.get(i))
            .is_some_and(|e| e.judged_at > last_at);
        if read < RECENT_CHUNK || enough || want == 0 {
            break;
        }
    }
    newest_first(&mut events);
    events.truncate(want);
    worded(pool, company_id, events).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetterRow {
    pub id: i64,
    pub object_type: String,
    pub record_id: String,
    pub event_id: Option<String>,
    pub service: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// The integration's dead letters, newest first; only the record's when `record_id` is given;
/// only those before `before` (the last of the previous page: its time and id).
pub async fn dead_letters<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    integration_id: Uuid,
    record_id: Option<&str>,
    before: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, object_type, record_id, event_id, service, topic, partition, \"offset\",
             reason, detail, at
         FROM trail_dead_letters
         WHERE company_id = $1 AND integration_id = $2 AND ($3::text IS NULL OR record_id = $3)
           AND ($5::timestamptz IS NULL OR (at, id) < ($5, $6::bigint))
         ORDER BY at DESC, id DESC LIMIT $4",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(record_id)
    .bind(limit)
    .bind(before.map(|b| b.0))
    .bind(before.map(|b| b.1))
    .fetch_all(db)
    .await
}

/// What a workflow's match on the record led to, as the provisioner keeps it now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActivityRow {
    pub workflow_id: Uuid,
    pub workflow_name: String,
    pub activity_type: String,
    /// `recorded` or `retracted`.
    pub state: String,
    pub value: rust_decimal::Decimal,
    pub activity_date: DateTime<Utc>,
    pub crm_user_id: String,
    pub user_id: Option<Uuid>,
    pub user_name: Option<String>,
    /// The user's status (`pending`, `active`); None while the CRM user is unmapped.
    pub user_status: Option<String>,
    /// How the account came to be (`auto_sync`, `manual`).
    pub user_source: Option<String>,
    pub updated_at: DateTime<Utc>,
}

pub async fn record_activities<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    integration_id: Uuid,
    record_id: &str,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT a.workflow_id, w.name AS workflow_name, a.activity_type, a.state, a.value,
             a.activity_date, a.crm_user_id, a.user_id, u.display_name AS user_name,
             u.status AS user_status, u.source AS user_source, a.updated_at
         FROM activities a
         JOIN workflows w ON w.id = a.workflow_id
         LEFT JOIN users u ON u.id = a.user_id
         WHERE a.company_id = $1 AND a.integration_id = $2 AND a.record_id = $3
         ORDER BY w.name, a.workflow_id",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(record_id)
    .fetch_all(db)
    .await
}

/// The trail's figures of an integration's last hour, for its health.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Figures {
    /// Events judged in the last hour (replays and older versions included; counted by page,
    /// so a page that ends within the hour counts whole).
    pub events_last_hour: i64,
    /// Of those, the ones some workflow counted.
    pub matched_events_last_hour: i64,
    pub dead_letters_last_hour: i64,
    pub dead_letters_last_day: i64,
    /// CRM users whose name and email lookup in the CRM's directory is failing (retried) or
    /// was given up.
    pub directory_lookups_failing: i64,
}

pub async fn figures<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    integration_id: Uuid,
) -> Result<Figures, sqlx::Error> {
    sqlx::query_as(
        "SELECT
             (SELECT count(*) FROM trail_events t WHERE t.company_id = $1
                  AND t.integration_id = $2 AND t.judged_at > now() - interval '1 hour')
                 + (SELECT coalesce(sum(p.entries), 0) FROM trail_pages p
                    WHERE p.company_id = $1 AND p.integration_id = $2
                      AND p.last_judged_at > now() - interval '1 hour')
                 AS events_last_hour,
             (SELECT count(*) FROM trail_events t WHERE t.company_id = $1
                  AND t.integration_id = $2 AND t.judged_at > now() - interval '1 hour'
                  AND t.summary = 'matched')
                 + (SELECT coalesce(sum(p.matched), 0) FROM trail_pages p
                    WHERE p.company_id = $1 AND p.integration_id = $2
                      AND p.last_judged_at > now() - interval '1 hour')
                 AS matched_events_last_hour,
             (SELECT count(*) FROM trail_dead_letters d WHERE d.company_id = $1
                  AND d.integration_id = $2 AND d.at > now() - interval '1 hour')
                 AS dead_letters_last_hour,
             (SELECT count(*) FROM trail_dead_letters d WHERE d.company_id = $1
                  AND d.integration_id = $2 AND d.at > now() - interval '1 day')
                 AS dead_letters_last_day,
             (SELECT count(*) FROM crm_identities c WHERE c.company_id = $1
                  AND c.integration_id = $2 AND c.directory_state IN ('pending', 'failed'))
                 AS directory_lookups_failing",
    )
    .bind(company_id)
    .bind(integration_id)
    .fetch_one(db)
    .await
}
