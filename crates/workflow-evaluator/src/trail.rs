//! The record trail: what every active workflow decided on each event (and, for a delete, which
//! activities of workflows inactive since it retracted), kept in PostgreSQL for admins ("why
//! didn't this deal count?", "why did this activity vanish?").
//!
//! The consume loop only stages a compact entry per event (the verdicts, and the few field
//! values the non-matching workflows read); entries are handed over once their transaction
//! committed (an aborted batch is judged again), through a bounded channel, to a background
//! writer that stores them as codes in pages of many entries (one row each, plus a narrow row per
//! record): each verdict with the version of the workflow it was made against, and the values
//! read. They are put in words only when an admin
//! reads them (`crm_sync_store::trail::words`): wording every event cost the pipeline more
//! than judging it. The trail is
//! diagnostics: when the writer falls behind and the channel is full, entries are dropped and
//! counted (`crm_sync_trail_dropped_total`) instead of slowing the pipeline down. A write
//! PostgreSQL cannot take now (a restart, a fail-over) is tried again for a while, so that a
//! short outage leaves no hole in the trail; one it refuses is dropped at once. A second task
//! deletes entries older than the retention.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crm_sync_proto::Timestamp;
use crm_sync_proto::v1::{ChangeType, CrmEvent, CrmKind};
use crm_sync_store::trail::{self as store, NewVersion, PreviousKnown, words};
use crm_sync_store::workflows::StoredWorkflow;
use crm_sync_workflow::{NoMatch, Previous, RecordView};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::judge::{Change, Judgement, Verdict};
use crate::snapshot::Workflows;

/// Entries written per transaction at most (in pages of up to 256 per integration).
const WRITE_BATCH: usize = 1_000;
/// How long the writer gathers entries before writing what it has.
const GATHER: Duration = Duration::from_millis(500);
/// How long a write PostgreSQL cannot take is tried again before its entries are dropped.
/// Meanwhile new entries queue, up to the channel's capacity.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How often a workflow version in use is stored again, so that it outlives the entries that
/// refer to it (versions are kept a day longer than the entries' retention).
const VERSION_REFRESH: Duration = Duration::from_secs(3_600);

/// What the event was judged to be, as a whole.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Summary {
    /// Some workflow counted it (a new activity, or a new value, date or owner).
    Matched,
    /// Some workflow's activity was retracted, none counted it.
    Retracted,
    /// No workflow counted it.
    NoMatch,
    /// It told nothing a workflow reads that was not known: a replay, an older version, a
    /// field no workflow reads.
    Unchanged,
}

impl Summary {
    fn as_str(self) -> &'static str {
        match self {
            Summary::Matched => "matched",
            Summary::Retracted => "retracted",
            Summary::NoMatch => "no_match",
            Summary::Unchanged => "unchanged",
        }
    }
}

/// One event's trail entry: encoded where it is judged, in the form its page stores
/// (`crm_sync_store::trail::entry`), with the workflows its verdicts name by index.
#[derive(Debug)]
pub struct Entry {
    summary: Summary,
    page: store::entry::Entry,
    /// The workflows judged, when some were; the writer names their versions.
    workflows: Option<Arc<Workflows>>,
    /// The workflows inactive now whose activities a delete retracted: not among `workflows`,
    /// their verdicts name them by the indexes that follow those of `workflows`.
    inactive: Vec<Uuid>,
}

impl AsRef<store::entry::Entry> for Entry {
    fn as_ref(&self) -> &store::entry::Entry {
        &self.page
    }
}

impl Entry {
    pub fn new(event: &CrmEvent, ids: (Uuid, Uuid)) -> Entry {
        let page = store::entry::Entry::new(
            ids,
            store::entry::EventPart {
                event_id: &event.event_id,
                object_type: &event.object_type,
                record_id: &event.record_id,
                change_type: change_name(event.change_type()),
                source_change_type: &event.source_change_type,
                source: if event.full_snapshot {
                    "pull"
                } else {
                    "webhook"
                },
                crm: crm_name(event.crm()),
                delivery_id: &event.source_delivery_id,
                occurred_at: time(event.occurred_at),
                received_at: time(event.received_at),
                judged_at: Utc::now(),
            },
        );
        Entry {
            summary: Summary::Unchanged,
            page,
            workflows: None,
            inactive: Vec::new(),
        }
    }

    /// The entry with the workflows' verdicts on the record as `view` shows it, and the
    /// retractions of the activities of workflows inactive now that a delete made. Only the
    /// workflows of the record's object are kept, and only the fields the ones that did not
    /// count it read.
    pub fn judged(
        mut self,
        workflows: &Arc<Workflows>,
        judgement: &Judgement<'_>,
        view: &RecordView<'_>,
    ) -> Entry {
        let kept = || {
            judgement.verdicts.iter().filter_map(|&(index, verdict)| {
                let index = u16::try_from(index).ok()?;
                let of_object = verdict != Verdict::NoMatch(NoMatch::OtherObject);
                (of_object && usize::from(index) < workflows.list.len()).then_some((index, verdict))
            })
        };
        let inactive = retracted_inactive(judgement);
        // Named after the active workflows, so that the writer can tell the two apart.
        let after_active = || {
            (0..inactive.len()).filter_map(|i| {
                let index = u16::try_from(workflows.list.len() + i).ok()?;
                Some((index, Verdict::RetractedInactive))
            })
        };
        let summary = summary_of(kept().chain(after_active()).map(|(_, v)| v));
        self.summary = summary;
        self.page.judged(
            summary.as_str(),
            kept().chain(after_active()).map(|(index, verdict)| {
                let (decision, reason) = codes(verdict);
                (index, decision, reason)
            }),
        );
        self.inactive = inactive;
        // Kept whenever a verdict is worded from the conditions: what was known of the
        // previous values matters even when the record showed none of the fields.
        if kept().any(|(_, verdict)| needs_explaining(verdict)) {
            let names = workflows.fields_read_by(
                kept()
                    .filter(|(_, verdict)| needs_explaining(*verdict))
                    .map(|(index, _)| usize::from(index)),
            );
            let known = match view.record.previous {
                Previous::Nothing => PreviousKnown::Nothing,
                Previous::Sent(_) => PreviousKnown::Sent,
                Previous::Unknown => PreviousKnown::Unknown,
            };
            let mut values = self.page.read_values(known);
            // About what a field's name and value take, for the fields some workflow reads.
            values.reserve(workflows.fields.len() * 40);
            for name in names {
                if let Some(v) = view.record.fields.get(name) {
                    values.field(name, v);
                }
                if let Previous::Sent(p) = view.record.previous
                    && let Some(v) = p.get(name)
                {
                    values.previous(name, v);
                }
            }
        }
        self.workflows = Some(workflows.clone());
        self
    }

    /// The version of the workflow a verdict names by `index`: an active one's, else that of
    /// an inactive one the writer knows ([`resolve_inactive`]); nil for none.
    fn version(&self, index: u16, versions: &mut Versions) -> Uuid {
        let index = usize::from(index);
        let active = self.workflows.as_ref().map_or(&[][..], |w| &w.list[..]);
        match active.get(index) {
            Some(workflow) => versions.of(workflow),
            None => index
                .checked_sub(active.len())
                .and_then(|i| self.inactive.get(i))
                .and_then(|id| versions.known.get(id))
                .map_or(Uuid::nil(), |k| k.version),
        }
    }
}

/// What the event was judged to be as a whole, from its verdicts.
fn summary_of(verdicts: impl Iterator<Item = Verdict>) -> Summary {
    let mut summary = Summary::NoMatch;
    for verdict in verdicts {
        match verdict {
            Verdict::Matched => summary = Summary::Matched,
            Verdict::Retracted(_) | Verdict::RetractedMoved | Verdict::RetractedInactive
                if summary != Summary::Matched =>
            {
                summary = Summary::Retracted
            }
            _ => {}
        }
    }
    summary
}

/// The workflows inactive now whose activities the judgement retracts (a delete), by id.
fn retracted_inactive(judgement: &Judgement<'_>) -> Vec<Uuid> {
    judgement
        .changes
        .iter()
        .filter_map(|change| match change {
            Change::RetractedInactive { workflow_id, .. } => Uuid::parse_str(workflow_id).ok(),
            _ => None,
        })
        .collect()
}

/// The verdict as stored: the decision and the reason code.
fn codes(verdict: Verdict) -> (&'static str, Option<&'static str>) {
    match verdict {
        Verdict::Matched => ("counted", None),
        Verdict::StillMatches => ("still_counts", None),
        Verdict::Retracted(r) => ("retracted", Some(r.as_str())),
        Verdict::RetractedMoved => ("retracted", Some(words::WORKFLOW_MOVED)),
        Verdict::RetractedInactive => ("retracted", Some(words::WORKFLOW_INACTIVE)),
        Verdict::DeletedUncounted => ("not_counted", Some("deleted")),
        Verdict::NoMatch(r) => ("not_counted", Some(r.as_str())),
    }
}

/// Whether the verdict is explained by the workflow's conditions, so the values they read are
/// kept (the reader words them the same way).
fn needs_explaining(verdict: Verdict) -> bool {
    let (decision, reason) = codes(verdict);
    words::needs_explaining(decision, reason)
}

/// The entries of the uncommitted Kafka transactions, and the channel to the writer.
pub struct Trail {
    /// Off (`trail.enabled`): no entry is made.
    enabled: bool,
    open: crate::staging::Generations<Vec<Entry>>,
    queue: mpsc::Sender<Vec<Entry>>,
    /// Entries queued and not yet taken by the writer.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
}

/// The writer's end of the channel.
pub struct Queue {
    entries: mpsc::Receiver<Vec<Entry>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Trail {
    /// A trail holding at most `capacity` entries waiting to be written; a disabled one makes
    /// no entries.
    pub fn new(capacity: usize, enabled: bool) -> (Trail, Queue) {
        use std::sync::atomic::AtomicUsize;
        // Entries travel per committed transaction; the count of entries bounds the queue.
        let (queue, entries) = mpsc::channel(capacity.max(1));
        let queued = Arc::new(AtomicUsize::new(0));
        let trail = Trail {
            enabled,
            open: crate::staging::Generations::default(),
            queue,
            queued: queued.clone(),
            capacity,
        };
        (trail, Queue { entries, queued })
    }

    /// The entry of an event being judged, when the trail is on.
    /// `trail.enabled`.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn entry(&self, event: &CrmEvent, ids: (Uuid, Uuid)) -> Option<Entry> {
        self.enabled.then(|| Entry::new(event, ids))
    }

    pub fn stage(&self, entry: Option<Entry>) {
        let Some(entry) = entry else {
            return;
        };
        self.open.with_open(|entries| entries.push(entry));
    }

    /// The open transaction was closed; its commit is in flight.
    pub fn seal(&self) {
        self.open.seal();
    }

    /// The sealed transaction committed: its entries go to the writer, or are dropped (and
    /// counted) when the writer is that far behind.
    pub fn committed(&self) {
        use std::sync::atomic::Ordering;
        let entries = self.open.take_committed();
        let n = entries.len();
        if n == 0 {
            return;
        }
        if self.queued.load(Ordering::Relaxed) + n > self.capacity {
            metrics::counter!(crate::metric_definitions::TRAIL_DROPPED).increment(n as u64);
            return;
        }
        self.queued.fetch_add(n, Ordering::Relaxed);
        if self.queue.try_send(entries).is_err() {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            metrics::counter!(crate::metric_definitions::TRAIL_DROPPED).increment(n as u64);
        }
    }

    pub fn aborted(&self) {
        self.open.clear();
    }
}

/// Until shutdown: writes queued entries in batches. A batch the database refuses, or cannot
/// take for [`RETRY_FOR`], is dropped and counted: the trail never holds anything up.
pub async fn write(mut queue: Queue, pool: PgPool, shutdown: CancellationToken) {
    use std::sync::atomic::Ordering;
    let mut versions = Versions::default();
    loop {
        let first = tokio::select! {
            biased;
            batch = queue.entries.recv() => batch,
            () = shutdown.cancelled() => None,
        };
        let Some(mut entries) = first else {
            // Shutting down: what is already queued is written once more.
            let mut rest = Vec::new();
            while let Ok(batch) = queue.entries.try_recv() {
                rest.extend(batch);
            }
            write_batch(&pool, rest, &mut versions, &shutdown).await;
            return;
        };
        // Entries are gathered a moment so that pages fill up: fewer, fuller pages cost the
        // database less than one small page per Kafka transaction.
        let deadline = tokio::time::Instant::now() + GATHER;
        while entries.len() < WRITE_BATCH {
            tokio::select! {
                biased;
                more = queue.entries.recv() => match more {
                    Some(more) => entries.extend(more),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => break,
                () = shutdown.cancelled() => break,
            }
        }
        queue.queued.fetch_sub(entries.len(), Ordering::Relaxed);
        while !entries.is_empty() {
            let rest = entries.split_off(entries.len().min(WRITE_BATCH));
            write_batch(&pool, entries, &mut versions, &shutdown).await;
            entries = rest;
        }
    }
}

/// The version ids of the workflows the writer has seen, and when each was last stored.
#[derive(Default)]
struct Versions {
    /// Looked up for every verdict written: hashed with foldhash, where SipHash cost about 160
    /// instructions per lookup.
    known: foldhash::HashMap<Uuid, KnownVersion>,
}

struct KnownVersion {
    workflow: Arc<StoredWorkflow>,
    version: Uuid,
    stored_at: Option<Instant>,
}

impl Versions {
    /// The version id of the workflow as it is now. The snapshot shares one `Arc` per workflow
    /// until it reloads, so this hashes a definition once per reload at most.
    fn of(&mut self, workflow: &Arc<StoredWorkflow>) -> Uuid {
        if let Some(k) = self.known.get_mut(&workflow.id) {
            if Arc::ptr_eq(&k.workflow, workflow) {
                return k.version;
            }
            if k.workflow.spec == workflow.spec {
                k.workflow = workflow.clone();
                return k.version;
            }
        }
        let version = words::version_id(workflow.id, &spec_json(workflow));
        self.known.insert(
            workflow.id,
            KnownVersion {
                workflow: workflow.clone(),
                version,
                stored_at: None,
            },
        );
        version
    }

    /// The versions never stored, or not for a while.
    fn due(&self) -> Vec<NewVersion> {
        self.known
            .values()
            .filter(|k| k.stored_at.is_none_or(|at| at.elapsed() >= VERSION_REFRESH))
            .map(|k| NewVersion {
                version: k.version,
                workflow_id: k.workflow.id,
                integration_id: k.workflow.integration_id,
                company_id: k.workflow.company_id,
                spec: spec_json(&k.workflow),
            })
            .collect()
    }

    fn stored(&mut self, versions: &[NewVersion]) {
        let now = Instant::now();
        for v in versions {
            if let Some(k) = self.known.get_mut(&v.workflow_id)
                && k.version == v.version
            {
                k.stored_at = Some(now);
            }
        }
    }
}

fn spec_json(workflow: &StoredWorkflow) -> String {
    // A definition of strings, numbers and lists: serializing cannot fail.
    serde_json::to_string(&workflow.spec).unwrap_or_default()
}

/// Writes one batch, trying again while PostgreSQL cannot take it (until [`RETRY_FOR`] has
/// passed, or at shutdown: then once only).
async fn write_batch(
    pool: &PgPool,
    entries: Vec<Entry>,
    versions: &mut Versions,
    shutdown: &CancellationToken,
) {
    if entries.is_empty() {
        return;
    }
    let started = Instant::now();
    let mut backoff =
        crm_sync_retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut retries = 0u32;
    let error = loop {
        let error = match try_write(pool, &entries, versions).await {
            Ok(()) => {
                metrics::counter!(crate::metric_definitions::TRAIL_WRITTEN)
                    .increment(entries.len() as u64);
                return;
            }
            Err(error) => error,
        };
        let refused = crm_sync_runtime::refusal::refused_value(&error).is_some();
        if refused || started.elapsed() >= RETRY_FOR {
            break error;
        }
        if retries == 0 {
            tracing::warn!(%error, entries = entries.len(), "writing the record trail failed; trying again for up to {}s", RETRY_FOR.as_secs());
        }
        retries += 1;
        metrics::counter!(crate::metric_definitions::TRAIL_RETRIES).increment(1);
        if !backoff.wait(shutdown).await {
            break error;
        }
    };
    tracing::warn!(%error, entries = entries.len(), "writing the record trail failed; these entries are dropped");
    metrics::counter!(crate::metric_definitions::TRAIL_DROPPED).increment(entries.len() as u64);
}

async fn try_write(
    pool: &PgPool,
    entries: &[Entry],
    versions: &mut Versions,
) -> Result<(), sqlx::Error> {
    // The versions the entries refer to are stored first: an entry never refers to a version
    // the reader cannot find. Entries judged against the same snapshot share its workflows.
    let mut seen: Option<&Arc<Workflows>> = None;
    for workflows in entries.iter().filter_map(|e| e.workflows.as_ref()) {
        if seen.is_some_and(|s| Arc::ptr_eq(s, workflows)) {
            continue;
        }
        for workflow in &workflows.list {
            versions.of(workflow);
        }
        seen = Some(workflows);
    }
    resolve_inactive(pool, entries, versions).await?;
    let due = versions.due();
    store::store_versions(pool, &due).await?;
    versions.stored(&due);
    store::pages::write(pool, entries, |e, index| e.version(index, versions)).await?;
    Ok(())
}

/// Makes the workflows inactive now that entries name known to the writer, loading those it has
/// not seen (deactivated before this replica started, or never judged here), so that their
/// verdicts name a version as the active workflows' do. One that no longer exists (deleted) is
/// named by no version: the reader says it is no longer kept.
async fn resolve_inactive(
    pool: &PgPool,
    entries: &[Entry],
    versions: &mut Versions,
) -> Result<(), sqlx::Error> {
    let mut unknown: Vec<(Uuid, Uuid)> = entries
        .iter()
        .flat_map(|e| e.inactive.iter().map(|id| (e.page.integration_id, *id)))
        .filter(|(_, id)| !versions.known.contains_key(id))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    unknown.sort_unstable();
    unknown.dedup();
    for workflow in crm_sync_store::workflows::load_of_integrations(pool, &unknown).await? {
        versions.of(&Arc::new(workflow));
    }
    Ok(())
}

fn time(ts: Option<Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
}

fn crm_name(crm: CrmKind) -> &'static str {
    match crm {
        CrmKind::Salesforce => "salesforce",
        CrmKind::Hubspot => "hubspot",
        CrmKind::Pipedrive => "pipedrive",
        CrmKind::Dynamics => "dynamics",
        CrmKind::Generic => "generic",
        CrmKind::Unspecified => "unspecified",
    }
}

fn change_name(change: ChangeType) -> &'static str {
    match change {
        ChangeType::Created => "created",
        ChangeType::Updated => "updated",
        ChangeType::Deleted => "deleted",
        ChangeType::Unspecified => "unspecified",
    }
}

/// Until shutdown: every `interval`, deletes the entries (and recorded dead letters) older
/// than `retention_days`.
pub async fn expire(
    pool: PgPool,
    retention_days: u32,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        let before = Utc::now() - chrono::Duration::days(i64::from(retention_days));
        match store::expire(&pool, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "expired record trail entries"),
            Err(error) => tracing::warn!(%error, "expiring the record trail failed; trying later"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
#[path = "trail_tests.rs"]
mod tests;
