//! The trail's pages: the entries of an integration written as one row of up to [`PAGE_ENTRIES`]
//! entries in a compact binary form, plus one narrow row per record of the page (found by the
//! record's readers). One row per event, with its key, indexes and `jsonb`, cost PostgreSQL
//! about as much as the evaluator's judging of the event.
//!
//! A page's body: the format byte, the workflow versions its verdicts refer to (each verdict
//! names one by its index), then the entries. Strings are a `u32` length and UTF-8 bytes, times
//! microseconds since the epoch; all integers little-endian. An entry is encoded once, where the
//! event is judged ([`Entry`]): the writer only copies its bytes into a page, naming each
//! verdict's workflow version by the page's index. In the current format the summary, decisions
//! and reasons are one byte each ([`WORDS`]); pages of the first format (the same with those as
//! strings) are read until they expire.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::entry::{Entry, EventPart, LITERAL, NONE, WORDS};
use super::{MAX_TEXT, NewEvent, StoredEvent, storable};

/// Entries per page at most.
pub const PAGE_ENTRIES: usize = 256;
/// A page is closed once its body is this large.
const PAGE_BYTES: usize = 64 * 1024;
/// The first format: summary, decisions and reasons as strings (still read, no longer written).
const FORMAT_STRINGS: u8 = 1;
/// The current format: summary, decisions and reasons as one byte of [`WORDS`] each.
const FORMAT_CODES: u8 = 2;

/// One page being written.
struct Page<'a> {
    integration_id: Uuid,
    company_id: Uuid,
    versions: Vec<Uuid>,
    entries: Vec<u8>,
    count: usize,
    records: Vec<&'a str>,
    matched: i32,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
}

impl<'a> Page<'a> {
    fn new(e: &Entry) -> Page<'a> {
        Page {
            integration_id: e.integration_id,
            company_id: e.company_id,
            versions: Vec::new(),
            entries: Vec::with_capacity(PAGE_BYTES),
            count: 0,
            records: Vec::new(),
            matched: 0,
            first: e.judged_at,
            last: e.judged_at,
        }
    }

    fn full(&self) -> bool {
        self.count >= PAGE_ENTRIES || self.entries.len() >= PAGE_BYTES
    }

    /// Copies the entry in, its verdicts naming the page's version indexes. An entry that does
    /// not parse (never: this module made it) is left out.
    fn push(&mut self, e: &'a Entry, mut version_of: impl FnMut(u16) -> Uuid) {
        let start = self.entries.len();
        if self.copy(e, &mut version_of).is_none() {
            self.entries.truncate(start);
            return;
        }
        if e.matched {
            self.matched += 1;
        }
        self.first = self.first.min(e.judged_at);
        self.last = self.last.max(e.judged_at);
        self.records.push(e.record_id());
        self.count += 1;
    }

    fn copy(&mut self, e: &Entry, version_of: &mut impl FnMut(u16) -> Uuid) -> Option<()> {
        let (verdicts_at, values_at) = (e.verdicts_at as usize, e.values_at as usize);
        let out = &mut self.entries;
        out.extend_from_slice(e.bytes.get(..verdicts_at)?);
        let mut r = Reader(e.bytes.get(verdicts_at..values_at)?);
        out.extend_from_slice(r.word_bytes()?);
        let count = r.u8()?;
        out.push(count);
        for _ in 0..count {
            let version = version_of(r.u16()?);
            let index = match self.versions.iter().position(|known| *known == version) {
                Some(i) => i,
                None => {
                    self.versions.push(version);
                    self.versions.len() - 1
                }
            };
            out.extend_from_slice(&(index as u16).to_le_bytes());
            out.extend_from_slice(r.word_bytes()?);
            out.extend_from_slice(r.word_bytes()?);
        }
        match e.bytes.get(values_at..) {
            Some(values) if !values.is_empty() => out.extend_from_slice(values),
            _ => out.extend_from_slice(&NONE.to_le_bytes()),
        }
        Some(())
    }

    fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(7 + self.versions.len() * 16 + self.entries.len());
        body.push(FORMAT_CODES);
        body.extend_from_slice(&(self.versions.len() as u16).to_le_bytes());
        for v in &self.versions {
            body.extend_from_slice(v.as_bytes());
        }
        body.extend_from_slice(&(self.count as u32).to_le_bytes());
        body.extend_from_slice(&self.entries);
        body
    }

    fn span(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.first, self.last)
    }
}

/// The entries in pages: per integration, in their order, at most [`PAGE_ENTRIES`] or about
/// 64 kB per page. `version_of` names the version of an entry's workflow by its index.
fn paginate<'a, E: AsRef<Entry>>(
    staged: &'a [E],
    mut version_of: impl FnMut(&E, u16) -> Uuid,
) -> Vec<Page<'a>> {
    let mut open: HashMap<(Uuid, Uuid), Page<'a>> = HashMap::new();
    let mut done = Vec::new();
    for s in staged {
        let e = s.as_ref();
        let key = (e.integration_id, e.company_id);
        let page = open.entry(key).or_insert_with(|| Page::new(e));
        page.push(e, |i| version_of(s, i));
        if page.full()
            && let Some(page) = open.remove(&key)
        {
            done.push(page);
        }
    }
    done.extend(open.into_values());
    done
}

/// A [`NewEvent`] as an entry; its verdicts name their versions by their position.
struct Staged<'a> {
    entry: Entry,
    event: &'a NewEvent,
}

impl AsRef<Entry> for Staged<'_> {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

fn staged(events: &[NewEvent]) -> Vec<Staged<'_>> {
    events
        .iter()
        .map(|e| {
            let mut entry = Entry::new(
                (e.integration_id, e.company_id),
                EventPart {
                    event_id: &e.event_id,
                    object_type: &e.object_type,
                    record_id: &e.record_id,
                    change_type: e.change_type,
                    source_change_type: &e.source_change_type,
                    source: e.source,
                    crm: e.crm,
                    delivery_id: &e.delivery_id,
                    occurred_at: e.occurred_at,
                    received_at: e.received_at,
                    judged_at: e.judged_at,
                },
            );
            entry.judged(
                e.summary,
                e.verdicts
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as u16, v.decision, v.reason)),
            );
            if let Some(values) = &e.read_values {
                entry.set_read_values(values);
            }
            Staged { entry, event: e }
        })
        .collect()
}

fn version_by_position(s: &Staged<'_>, index: u16) -> Uuid {
    s.event
        .verdicts
        .get(usize::from(index))
        .map_or(Uuid::nil(), |v| v.version)
}

/// The bodies of the pages the events are written in (for tests reading back what is stored).
pub fn encode(events: &[NewEvent]) -> Vec<Vec<u8>> {
    encode_entries(&staged(events), version_by_position)
}

/// The bodies of the pages the entries are written in (for tests reading back what is stored).
pub fn encode_entries<E: AsRef<Entry>>(
    staged: &[E],
    version_of: impl FnMut(&E, u16) -> Uuid,
) -> Vec<Vec<u8>> {
    paginate(staged, version_of)
        .iter()
        .map(Page::body)
        .collect()
}

/// Writes the events in pages ([`write`]).
pub async fn write_events(pool: &PgPool, events: &[NewEvent]) -> Result<u64, sqlx::Error> {
    write(pool, &staged(events), version_by_position).await
}

/// Writes the entries in pages, in one transaction; `version_of` names the version of an
/// entry's workflow by its index. Entries of an integration deleted meanwhile (or not of that
/// company) are skipped. Returns the entries written.
pub async fn write<E: AsRef<Entry>>(
    pool: &PgPool,
    staged: &[E],
    version_of: impl FnMut(&E, u16) -> Uuid,
) -> Result<u64, sqlx::Error> {
    if staged.is_empty() {
        return Ok(0);
    }
    let pages = paginate(staged, version_of);
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
        .bind(page.count as i32)
        .bind(page.matched)
        .bind(page.body())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(id) = id {
            written += page.count as u64;
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
        let mut seen = HashSet::with_capacity(page.records.len());
        for &record_id in &page.records {
            if !seen.insert(record_id) {
                continue;
            }
            let record = if record_id.len() <= MAX_TEXT && !record_id.contains('\0') {
                std::borrow::Cow::Borrowed(record_id)
            } else {
                std::borrow::Cow::Owned(storable(record_id, MAX_TEXT))
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
    let format = r.u8()?;
    if format != FORMAT_STRINGS && format != FORMAT_CODES {
        return None;
    }
    let versions = (0..r.u16()?)
        .map(|_| Uuid::from_slice(r.take(16)?).ok())
        .collect::<Option<Vec<_>>>()?;
    let n = r.u32()?;
    let mut entries = Vec::with_capacity((n as usize).min(PAGE_ENTRIES));
    for _ in 0..n {
        entries.push(r.entry(&versions, format)?);
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

    /// A word as an entry stores it, its bytes.
    fn word_bytes(&mut self) -> Option<&'a [u8]> {
        let all = self.0;
        let len = match self.u8()? {
            LITERAL => 1 + 4 + self.u32()? as usize,
            _ => 1,
        };
        self.0 = all;
        self.take(len)
    }

    /// A summary, decision or reason: a word in the current format, a string in the first.
    fn word(&mut self, format: u8) -> Option<String> {
        if format == FORMAT_STRINGS {
            return self.string();
        }
        match self.u8()? {
            LITERAL => self.string(),
            i => WORDS.get(usize::from(i)).map(|w| (*w).to_owned()),
        }
    }

    fn entry(&mut self, versions: &[Uuid], format: u8) -> Option<StoredEvent> {
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
        let summary = self.word(format)?;
        let mut decisions = Vec::new();
        for _ in 0..self.u8()? {
            let version = versions.get(usize::from(self.u16()?))?;
            let decision = self.word(format)?;
            let reason = self.word(format)?;
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
