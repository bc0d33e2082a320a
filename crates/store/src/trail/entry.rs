//! A trail entry in the form its page stores, encoded once where the event is judged, so that
//! the writer only copies bytes (see [`super::pages`] for the page around it).

use chrono::{DateTime, Utc};
use crm_sync_proto::view::ValueRef;
use uuid::Uuid;

use super::PreviousKnown;

/// The read values' length when there are none.
pub(super) const NONE: u32 = u32::MAX;

/// The summaries, decisions and reasons an entry holds, each stored as its index here. Only
/// ever appended to: stored pages name them by index. A word not listed is stored as
/// [`LITERAL`] followed by the string. Words added later are best left out: a reader older than
/// the word fails a whole page on an index it does not know, while every reader decodes a
/// literal (the retractions of inactive and moved workflows' activities, rare, are such).
pub(super) const WORDS: [&str; 17] = [
    "",
    "matched",
    "retracted",
    "no_match",
    "unchanged",
    "counted",
    "still_counts",
    "not_counted",
    "other_object",
    "other_trigger",
    "conditions",
    "no_change",
    "unknown",
    "type_mismatch",
    "missing_value",
    "no_longer_matches",
    "deleted",
];
pub(super) const LITERAL: u8 = u8::MAX;

/// The event's side of an entry.
#[derive(Debug, Clone, Copy)]
pub struct EventPart<'a> {
    pub event_id: &'a str,
    pub object_type: &'a str,
    pub record_id: &'a str,
    pub change_type: &'a str,
    pub source_change_type: &'a str,
    pub source: &'a str,
    pub crm: &'a str,
    pub delivery_id: &'a str,
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: Option<DateTime<Utc>>,
    pub judged_at: DateTime<Utc>,
}

/// One entry, encoded once where the event is judged: the event's part, the summary, the
/// verdicts (each naming its workflow by an index that the writer turns into the page's index
/// of the workflow's version) and the values read. Copying it into a page is a copy of bytes.
#[derive(Debug)]
pub struct Entry {
    pub integration_id: Uuid,
    pub company_id: Uuid,
    pub(super) judged_at: DateTime<Utc>,
    pub(super) matched: bool,
    /// Where the record id is in `bytes`.
    record: (u32, u32),
    /// Where the summary starts (the event's part ends).
    pub(super) verdicts_at: u32,
    /// Where the read values start; nothing after it means none.
    pub(super) values_at: u32,
    pub(super) bytes: Vec<u8>,
}

impl Entry {
    /// An entry of the event, judged by nobody yet (summary `unchanged`).
    pub fn new((integration_id, company_id): (Uuid, Uuid), e: EventPart<'_>) -> Entry {
        let strings = [
            e.event_id,
            e.object_type,
            e.record_id,
            e.change_type,
            e.source_change_type,
            e.source,
            e.crm,
            e.delivery_id,
        ];
        let len = strings.iter().map(|s| 4 + s.len()).sum::<usize>() + 2 * 9 + 8;
        // Room for the verdicts of a few workflows too.
        let mut bytes = Vec::with_capacity(len + 64);
        let mut record = (0, 0);
        for (i, s) in strings.into_iter().enumerate() {
            put_str(&mut bytes, s);
            if i == 2 {
                let end = bytes.len();
                record = (end - s.len(), end);
            }
        }
        for t in [e.occurred_at, e.received_at] {
            match t {
                Some(t) => {
                    bytes.push(1);
                    bytes.extend_from_slice(&t.timestamp_micros().to_le_bytes());
                }
                None => bytes.push(0),
            }
        }
        bytes.extend_from_slice(&e.judged_at.timestamp_micros().to_le_bytes());
        let verdicts_at = bytes.len();
        let mut entry = Entry {
            integration_id,
            company_id,
            judged_at: e.judged_at,
            matched: false,
            record: (offset(record.0), offset(record.1)),
            verdicts_at: offset(verdicts_at),
            values_at: offset(verdicts_at),
            bytes,
        };
        entry.judged("unchanged", std::iter::empty());
        entry
    }

    /// Sets the summary and the verdicts: per workflow its index (for the writer's
    /// `version_of`), decision and reason. Read values set before are dropped.
    pub fn judged<'w>(
        &mut self,
        summary: &str,
        verdicts: impl Iterator<Item = (u16, &'w str, Option<&'w str>)>,
    ) {
        let out = &mut self.bytes;
        out.truncate(self.verdicts_at as usize);
        put_word(out, summary);
        let count_at = out.len();
        out.push(0);
        // An event is judged by a workflow of its object at most once: a byte counts them.
        let mut count = 0u8;
        for (workflow, decision, reason) in verdicts.take(usize::from(u8::MAX)) {
            out.extend_from_slice(&workflow.to_le_bytes());
            put_word(out, decision);
            put_word(out, reason.unwrap_or(""));
            count += 1;
        }
        if let Some(slot) = out.get_mut(count_at) {
            *slot = count;
        }
        self.matched = summary == "matched";
        self.values_at = offset(out.len());
    }

    /// Starts the values read (replacing any set before): what was known of the previous
    /// values, then each field added. Stored as one byte telling what was known, then a
    /// `CrmEvent` holding only `fields` and `previous_fields`.
    pub fn read_values(&mut self, known: PreviousKnown) -> ReadValues<'_> {
        self.bytes.truncate(self.values_at as usize);
        ReadValues::start(&mut self.bytes, known)
    }

    /// The values read, already encoded ([`super::words::encode_read_values`]).
    pub(super) fn set_read_values(&mut self, encoded: &[u8]) {
        self.bytes.truncate(self.values_at as usize);
        put_bytes(&mut self.bytes, encoded);
    }

    pub fn record_id(&self) -> &str {
        let (from, to) = (self.record.0 as usize, self.record.1 as usize);
        self.bytes
            .get(from..to)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("")
    }
}

/// Offsets within an entry: an entry is far below 4 GiB (the event was a Kafka message).
fn offset(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The values read, being added to an entry; the length is written when it is dropped.
pub struct ReadValues<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl ReadValues<'_> {
    /// Read values appended to `out`, after their length.
    pub(super) fn start(out: &mut Vec<u8>, known: PreviousKnown) -> ReadValues<'_> {
        let start = out.len();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.push(known.tag());
        ReadValues { out, start }
    }

    /// Room for `additional` more bytes, so that the values grow the entry once.
    pub fn reserve(&mut self, additional: usize) {
        self.out.reserve(additional);
    }

    /// A current value (`CrmEvent.fields`, field 7).
    pub fn field(&mut self, name: &str, value: ValueRef<'_>) {
        self.map_entry(7, name, value);
    }

    /// A previous value (`CrmEvent.previous_fields`, field 8).
    pub fn previous(&mut self, name: &str, value: ValueRef<'_>) {
        self.map_entry(8, name, value);
    }

    fn map_entry(&mut self, number: u32, name: &str, value: ValueRef<'_>) {
        crm_sync_proto::view::put_field_entry(self.out, number, name, value);
    }
}

impl Drop for ReadValues<'_> {
    fn drop(&mut self) {
        let len = offset(self.out.len().saturating_sub(self.start + 4)).min(NONE - 1);
        if let Some(slot) = self.out.get_mut(self.start..self.start + 4) {
            slot.copy_from_slice(&len.to_le_bytes());
        }
    }
}

pub(super) fn put_word(out: &mut Vec<u8>, word: &str) {
    match WORDS.iter().position(|w| *w == word) {
        Some(i) => out.push(i as u8),
        None => {
            out.push(LITERAL);
            put_str(out, word);
        }
    }
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

pub(super) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Event fields are far below 4 GiB (a Kafka message is); a longer one is cut.
    let b = &b[..b.len().min(NONE as usize - 1)];
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}
