//! The trail's pages: the entries of an integration written as one row of up to [`PAGE_ENTRIES`]
//! entries in a compact binary form, plus one narrow row per record of the page (found by the
//! record's readers). One row per event, with its key, indexes and `jsonb`, cost PostgreSQL
//! about as much as the evaluator's judging of the event.
//!
//! A page's body: the format byte, the workflow versions its verdicts refer to (each verdict
//! names one by its index), then the entries. Strings are a `u32` length and UTF-8 bytes, times
//! microseconds since the epoch; all integers little-endian.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{MAX_TEXT, NewEvent, StoredEvent, storable};

/// Entries per page at most.
pub const PAGE_ENTRIES: usize = 256;
/// A page is closed once its body is this large.
const PAGE_BYTES: usize = 64 * 1024;
const FORMAT: u8 = 1;
/// The read values' length when there are none.
const NONE: u32 = u32::MAX;

/// One page being written.
struct Page<'a> {
    integration_id: Uuid,
    company_id: Uuid,
    versions: Vec<Uuid>,
    entries: Vec<u8>,
    events: Vec<&'a NewEvent>,
    matched: i32,
}

impl<'a> Page<'a> {
    fn new(e: &NewEvent) -> Page<'a> {
        Page {
            integration_id: e.integration_id,
            company_id: e.company_id,
            versions: Vec::new(),
            entries: Vec::with_capacity(PAGE_BYTES),
            events: Vec::new(),
            matched: 0,
        }
    }

    fn full(&self) -> bool {
        self.events.len() >= PAGE_ENTRIES || self.entries.len() >= PAGE_BYTES
    }

    fn push(&mut self, e: &'a NewEvent) {
        let out = &mut self.entries;
        for s in [&e.event_id, &e.object_type, &e.record_id] {
            put_str(out, s);
        }
        put_str(out, e.change_type);
        put_str(out, &e.source_change_type);
        put_str(out, e.source);
        put_str(out, e.crm);
        put_str(out, &e.delivery_id);
        for t in [e.occurred_at, e.received_at] {
            match t {
                Some(t) => {
                    out.push(1);
                    out.extend_from_slice(&t.timestamp_micros().to_le_bytes());
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&e.judged_at.timestamp_micros().to_le_bytes());
        put_str(out, e.summary);
        // An event is judged by a workflow of its object at most once: a byte counts them.
        let verdicts = &e.verdicts[..e.verdicts.len().min(usize::from(u8::MAX))];
        out.push(verdicts.len() as u8);
        for v in verdicts {
            let index = match self.versions.iter().position(|known| *known == v.version) {
                Some(i) => i,
                None => {
                    self.versions.push(v.version);
                    self.versions.len() - 1
                }
            };
            out.extend_from_slice(&(index as u16).to_le_bytes());
            put_str(out, v.decision);
            put_str(out, v.reason.unwrap_or(""));
        }
        match &e.read_values {
            Some(bytes) => put_bytes(out, bytes),
            None => out.extend_from_slice(&NONE.to_le_bytes()),
        }
        if e.summary == "matched" {
            self.matched += 1;
        }
        self.events.push(e);
    }

    fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(7 + self.versions.len() * 16 + self.entries.len());
        body.push(FORMAT);
        body.extend_from_slice(&(self.versions.len() as u16).to_le_bytes());
        for v in &self.versions {
            body.extend_from_slice(v.as_bytes());
        }
        body.extend_from_slice(&(self.events.len() as u32).to_le_bytes());
        body.extend_from_slice(&self.entries);
        body
    }

    fn span(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let times = self.events.iter().map(|e| e.judged_at);
        let first = times.clone().min().unwrap_or_else(Utc::now);
        (first, times.max().unwrap_or(first))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Event fields are far below 4 GiB (a Kafka message is); a longer one is cut.
    let b = &b[..b.len().min(NONE as usize - 1)];
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// The events in pages: per integration, in their order, at most [`PAGE_ENTRIES`] or about
/// 64 kB per page.
fn paginate(events: &[NewEvent]) -> Vec<Page<'_>> {
    let mut open: HashMap<(Uuid, Uuid), Page<'_>> = HashMap::new();
    let mut done = Vec::new();
    for e in events {
        let page = open
            .entry((e.integration_id, e.company_id))
            .or_insert_with(|| Page::new(e));
        page.push(e);
        if page.full()
            && let Some(page) = open.remove(&(e.integration_id, e.company_id))
        {
            done.push(page);
        }
    }
    done.extend(open.into_values());
    done
}

/// The bodies of the pages the events are written in (for tests reading back what is stored).
pub fn encode(events: &[NewEvent]) -> Vec<Vec<u8>> {
    paginate(events).iter().map(Page::body).collect()
}

/// Writes the events in pages, in one transaction; events of an integration deleted meanwhile
/// (or not of that company) are skipped. Returns the entries written.
pub async fn write(pool: &PgPool, events: &[NewEvent]) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let pages = paginate(events);
    let mut tx = pool.begin().await?;
    let mut lookups = Vec::new();
    let mut written = 0;
    for page in &pages {
        let (first, last) = page.span();
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO trail_pages (integration_id, company_id, first_judged_at,
                 last_judged_at, entries, matched, body)
             SELECT $1, $2, $3, $4, $5, $6, $7 FROM integrations WHERE id = $1 AND company_id = $2
             RETURNING id",
        )
        .bind(page.integration_id)
        .bind(page.company_id)
        .bind(first)
        .bind(last)
        .bind(page.events.len() as i32)
        .bind(page.matched)
        .bind(page.body())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            written += page.events.len() as u64;
            lookups.push((id, page));
        }
    }
    copy_lookups(&mut tx, &lookups).await?;
    tx.commit().await?;
    Ok(written)
}

/// One row per record of each page, in PostgreSQL's binary COPY format (the cheapest way in).
async fn copy_lookups(
    tx: &mut Transaction<'_, Postgres>,
    pages: &[(i64, &Page<'_>)],
) -> Result<(), sqlx::Error> {
    if pages.is_empty() {
        return Ok(());
    }
    let mut data = Vec::with_capacity(64 * PAGE_ENTRIES * pages.len());
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes()); // flags
    data.extend_from_slice(&0i32.to_be_bytes()); // header extension
    for (id, page) in pages {
        let mut seen = HashSet::with_capacity(page.events.len());
        for e in &page.events {
            if !seen.insert(e.record_id.as_str()) {
                continue;
            }
            let record = if e.record_id.len() <= MAX_TEXT && !e.record_id.contains('\0') {
                std::borrow::Cow::Borrowed(e.record_id.as_str())
            } else {
                std::borrow::Cow::Owned(storable(&e.record_id, MAX_TEXT))
            };
            data.extend_from_slice(&3i16.to_be_bytes());
            data.extend_from_slice(&16i32.to_be_bytes());
            data.extend_from_slice(page.integration_id.as_bytes());
            data.extend_from_slice(&(record.len() as i32).to_be_bytes());
            data.extend_from_slice(record.as_bytes());
            data.extend_from_slice(&8i32.to_be_bytes());
            data.extend_from_slice(&id.to_be_bytes());
        }
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    let mut copy = tx
        .copy_in_raw(
            "COPY trail_page_records (integration_id, record_id, page_id) FROM STDIN (FORMAT binary)",
        )
        .await?;
    let sent = copy.send(data).await.map(|_| ());
    if let Err(error) = sent {
        // The copy is ended either way; the send's error is the one that tells what happened.
        let _ = copy.abort(error.to_string()).await;
        return Err(error);
    }
    copy.finish().await?;
    Ok(())
}

/// A page's entries; None when the body does not decode (then the page is not shown).
pub fn decode(body: &[u8]) -> Option<Vec<StoredEvent>> {
    let mut r = Reader(body);
    if r.u8()? != FORMAT {
        return None;
    }
    let versions = (0..r.u16()?)
        .map(|_| Uuid::from_slice(r.take(16)?).ok())
        .collect::<Option<Vec<_>>>()?;
    let n = r.u32()?;
    let mut entries = Vec::with_capacity((n as usize).min(PAGE_ENTRIES));
    for _ in 0..n {
        entries.push(r.entry(&versions)?);
    }
    Some(entries)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn time(&mut self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn optional_time(&mut self) -> Option<Option<DateTime<Utc>>> {
        match self.u8()? {
            0 => Some(None),
            _ => self.time().map(Some),
        }
    }

    fn bytes(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? {
            NONE => Some(None),
            n => self.take(n as usize).map(Some),
        }
    }

    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()??.to_vec()).ok()
    }

    fn entry(&mut self, versions: &[Uuid]) -> Option<StoredEvent> {
        let event_id = self.string()?;
        let object_type = self.string()?;
        let record_id = self.string()?;
        let change_type = self.string()?;
        let source_change_type = self.string()?;
        let source = self.string()?;
        let crm = self.string()?;
        let delivery_id = self.string()?;
        let occurred_at = self.optional_time()?;
        let received_at = self.optional_time()?;
        let judged_at = self.time()?;
        let summary = self.string()?;
        let mut decisions = Vec::new();
        for _ in 0..self.u8()? {
            let version = versions.get(usize::from(self.u16()?))?;
            let decision = self.string()?;
            let reason = self.string()?;
            decisions.push(match reason.as_str() {
                "" => json!({"v": version, "d": decision}),
                _ => json!({"v": version, "d": decision, "r": reason}),
            });
        }
        let read_values = self.bytes()?.map(<[u8]>::to_vec);
        Some(StoredEvent {
            event_id,
            object_type,
            record_id,
            change_type,
            source_change_type,
            source,
            crm,
            delivery_id,
            occurred_at,
            received_at,
            judged_at,
            summary,
            decisions: Value::Array(decisions),
            read_values,
        })
    }
}

/// The newest `limit` pages (by id) holding entries of the record: each holds at least one.
pub(super) async fn of_record(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    record_id: &str,
    limit: i64,
) -> Result<Vec<(i64, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, body FROM trail_pages
         WHERE company_id = $1 AND integration_id = $2 AND id IN (
             SELECT page_id FROM trail_page_records WHERE integration_id = $2 AND record_id = $3
             ORDER BY page_id DESC LIMIT $4)",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(storable(record_id, MAX_TEXT))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The integration's pages, newest last entry first: those that may hold entries judged at
/// `before` or earlier, after the page `after` (the last one read: its last time and id).
pub(super) async fn recent(
    pool: &PgPool,
    (company_id, integration_id): (Uuid, Uuid),
    before: Option<DateTime<Utc>>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<(i64, DateTime<Utc>, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, last_judged_at, body FROM trail_pages
         WHERE company_id = $1 AND integration_id = $2
           AND ($3::timestamptz IS NULL OR first_judged_at <= $3)
           AND ($4::timestamptz IS NULL OR (last_judged_at, id) < ($4, $5::bigint))
         ORDER BY last_judged_at DESC, id DESC LIMIT $6",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(before)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The entries of the pages that decode, each event once (a replay may have written it twice).
pub(super) fn entries(
    pages: Vec<(i64, Vec<u8>)>,
    keep: impl Fn(&StoredEvent) -> bool,
    seen: &mut HashSet<String>,
) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    for (id, body) in pages {
        let Some(entries) = decode(&body) else {
            tracing::warn!(
                page = id,
                "a record trail page does not decode; it is not shown"
            );
            continue;
        };
        for e in entries {
            if keep(&e) && seen.insert(e.event_id.clone()) {
                out.push(e);
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "pages_tests.rs"]
mod tests;
