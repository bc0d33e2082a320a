//! The record state of the partitions this replica owns, on local disk.
//!
//! The changelog topic is the truth; the local store is a cache of it, kept in an embedded
//! LSM store (fjall: pure Rust, so no C++ toolchain in the build, and an LSM tree takes a
//! restore's stream of random-key writes at disk speed). Each input partition has its own
//! keyspace, and a checkpoint: the changelog offset the keyspace reflects. Changes made while
//! handling a transaction's messages are staged in memory and written (with the checkpoint, in
//! one atomic batch) only once the transaction committed; an abort forgets them. A partition
//! gained in a rebalance is caught up from its checkpoint to the changelog's end before any of
//! its events is handled (from the start when the disk is new or lost).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crm_sync_kafka::transactional::{PartitionListener, Written};
use crm_sync_proto::view::{StateView, decode_state};
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use tokio::sync::mpsc;

use crate::restore::{self, Restored, Source};
use crate::rotation::{Rotations, entry_size};
use crate::staging::Generations;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("local record store: {0}")]
    Disk(#[from] fjall::Error),
    #[error("stored state of {key} does not decode: {source}")]
    Corrupt {
        key: String,
        source: crm_sync_proto::view::ViewError,
    },
    #[error("restoring partition {partition} from the changelog: {reason}")]
    Restore { partition: i32, reason: String },
}

/// The open transaction's changes: record key → (partition, encoded state). Looked up on
/// every event: hashed with foldhash, where SipHash cost a few hundred instructions per key.
type Staged = foldhash::HashMap<Vec<u8>, (i32, Vec<u8>)>;

/// A record's state as stored: staged by a transaction not committed yet, or kept on disk.
pub enum Stored {
    Staged(Vec<u8>),
    Kept(fjall::Slice),
}

impl Stored {
    /// The state, its fields left in these bytes.
    pub fn view(&self, key: &str) -> Result<StateView<'_>, StoreError> {
        let bytes: &[u8] = match self {
            Stored::Staged(bytes) => bytes,
            Stored::Kept(bytes) => bytes,
        };
        decode_state(bytes).map_err(|source| StoreError::Corrupt {
            key: key.to_owned(),
            source,
        })
    }
}

/// An assigned partition: whether its keyspace is caught up with the changelog, and the epoch
/// of that claim. The epoch changes whenever the partition is assigned again or its state is
/// marked stale, so that a restore that began before can tell that it no longer covers
/// everything: the changelog may have grown under another owner meanwhile.
struct Slot {
    restored: bool,
    epoch: u64,
    /// A stored state could not be read: the next restore empties the keyspace and reads the
    /// changelog from its start.
    scratch: bool,
    /// Restored from scratch after a read failed, in this assignment: what fails to read now
    /// is the changelog's own value, or the disk itself.
    rebuilt: bool,
}

impl Slot {
    fn assigned(epoch: u64) -> Slot {
        Slot {
            restored: false,
            epoch,
            scratch: false,
            rebuilt: false,
        }
    }
}

/// What to do about a stored state that could not be read.
#[derive(Debug, PartialEq)]
pub enum Unreadable {
    /// The partition is restored from scratch before its next event: fail the batch (it is
    /// handled again once restored).
    Restoring,
    /// The changelog's own value does not decode: the record counts as never seen.
    Absent,
    /// The disk fails even after a restore from scratch: a real fault, retried.
    Fault,
}

/// What a restore finds when it is done, against the slot it began under.
#[derive(Debug, PartialEq)]
enum Finished {
    /// The slot is still the one the restore began under: it is caught up now.
    Marked,
    /// The partition was assigned again or marked stale meanwhile: restore again.
    Outdated,
    /// The partition is no longer assigned: nothing to mark.
    Unassigned,
}

pub struct RecordStore {
    db: Database,
    checkpoints: Keyspace,
    source: Source,
    input_topic: String,
    slots: Mutex<HashMap<i32, Slot>>,
    /// The last epoch handed to a slot.
    epochs: AtomicU64,
    pending: Generations<Staged>,
    /// One restore at a time: they share the disk and the broker connection.
    restoring: tokio::sync::Mutex<()>,
    wake: mpsc::UnboundedSender<i32>,
    /// When each partition's memtable is full, and how full it is.
    rotations: Rotations,
    /// Open keyspace handles by partition: looking one up by name costs a string and a lock.
    keyspaces: Mutex<foldhash::HashMap<i32, Keyspace>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RecordStore {
    /// Opens (or creates) the local store; the receiver yields partitions to restore eagerly.
    pub fn open(
        dir: &Path,
        memory_bytes: u64,
        source: Source,
        input_topic: &str,
    ) -> Result<(Arc<RecordStore>, mpsc::UnboundedReceiver<i32>), StoreError> {
        // Half the budget caches blocks; each partition's memtable gets a sixteenth (a replica
        // rarely holds more than eight partitions), but at least 1 MiB: smaller ones flush so
        // often that compacting them costs a fifth more CPU per event. At the default budget of
        // 8 MiB that is 1 MiB per partition; the 2 MiB floor before held 8–9 MiB more in a
        // backlog of six partitions.
        let db = Database::builder(dir)
            .cache_size(memory_bytes / 2)
            .worker_threads(1)
            .open()?;
        let memtable = (memory_bytes / 16).max(1024 * 1024);
        let checkpoints = db.keyspace("checkpoints", KeyspaceCreateOptions::default)?;
        let (wake, wakes) = mpsc::unbounded_channel();
        let store = RecordStore {
            db,
            checkpoints,
            source,
            input_topic: input_topic.to_owned(),
            slots: Mutex::new(HashMap::new()),
            epochs: AtomicU64::new(0),
            pending: Generations::default(),
            restoring: tokio::sync::Mutex::new(()),
            wake,
            rotations: Rotations::new(memtable),
            keyspaces: Mutex::new(foldhash::HashMap::default()),
        };
        Ok((Arc::new(store), wakes))
    }

    fn keyspace(&self, partition: i32) -> Result<Keyspace, StoreError> {
        if let Some(keyspace) = lock(&self.keyspaces).get(&partition) {
            return Ok(keyspace.clone());
        }
        let keyspace = self.db.keyspace(&format!("records-{partition}"), || {
            KeyspaceCreateOptions::default().max_memtable_size(self.rotations.fjall_limit())
        })?;
        lock(&self.keyspaces).insert(partition, keyspace.clone());
        Ok(keyspace)
    }

    /// The record's state as of everything handled so far (staged changes included): the
    /// bytes of it, which [`Stored::view`] reads in place.
    pub fn get(&self, partition: i32, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        let staged = self
            .pending
            .find_newest(|staged| staged.get(key).map(|(_, bytes)| bytes.clone()));
        if let Some(bytes) = staged {
            return Ok(Some(Stored::Staged(bytes)));
        }
        Ok(self.keyspace(partition)?.get(key)?.map(Stored::Kept))
    }

    /// Stages a change of the open transaction.
    pub fn stage(&self, partition: i32, key: Vec<u8>, encoded: Vec<u8>) {
        self.pending
            .with_open(|staged| staged.insert(key, (partition, encoded)));
    }

    /// The open transaction was closed; its commit is in flight.
    pub fn seal(&self) {
        self.pending.seal();
    }

    /// The sealed transaction committed: its changes and the changelog offsets they reached
    /// become the local store's, atomically.
    pub fn commit(&self, written: &[Written], changelog: &str) {
        let pending = self.pending.take_committed();
        let mut next: BTreeMap<i32, i64> = BTreeMap::new();
        for w in written.iter().filter(|w| *w.topic == *changelog) {
            let entry = next.entry(w.partition).or_insert(0);
            *entry = (*entry).max(w.offset + 1);
        }
        let written = self.write(pending, &next);
        metrics::gauge!(crate::metric_definitions::STORE_UNFLUSHED)
            .set(self.db.write_buffer_size() as f64);
        if let Err(error) = written {
            // The checkpoints did not move either: catching up from them repairs the store.
            tracing::warn!(%error, "writing committed record state to local disk failed; the partitions are caught up from the changelog");
            self.mark_stale(next.keys().copied());
        }
    }

    fn write(&self, pending: Staged, next: &BTreeMap<i32, i64>) -> Result<(), StoreError> {
        let mut batch = self.db.batch();
        let mut sizes: BTreeMap<i32, u64> = BTreeMap::new();
        for (key, (partition, encoded)) in pending {
            *sizes.entry(partition).or_default() += entry_size(key.len(), encoded.len());
            batch.insert(&self.keyspace(partition)?, key, encoded);
        }
        for (partition, offset) in next {
            batch.insert(
                &self.checkpoints,
                partition.to_be_bytes(),
                offset.to_be_bytes(),
            );
        }
        batch.commit()?;
        for (partition, bytes) in sizes {
            self.rotate_if_full(&self.keyspace(partition)?, partition, bytes)?;
        }
        Ok(())
    }

    /// Counts what was written to the partition's memtable, and rotates it once full (fjall then
    /// flushes it in the background). `rotate_memtable` is what fjall's worker itself calls;
    /// public, though hidden from fjall's docs (hence the `~` on its version).
    fn rotate_if_full(
        &self,
        keyspace: &Keyspace,
        partition: i32,
        bytes: u64,
    ) -> Result<(), fjall::Error> {
        if self.rotations.wrote(partition, bytes) {
            keyspace.rotate_memtable()?;
        }
        Ok(())
    }

    /// The uncommitted transactions were aborted: forget their changes. Their partitions are
    /// caught up from the changelog before their next event, in case the abort followed a
    /// commit whose outcome was unknown.
    pub fn discard(&self, partitions: &[i32]) {
        self.pending.clear();
        self.mark_stale(partitions.iter().copied());
    }

    fn mark_stale(&self, partitions: impl Iterator<Item = i32>) {
        let mut slots = lock(&self.slots);
        for partition in partitions {
            if let Some(slot) = slots.get_mut(&partition) {
                slot.restored = false;
                slot.epoch = self.next_epoch();
            }
        }
    }

    fn restores_from_scratch(&self, partition: i32) -> bool {
        lock(&self.slots)
            .get(&partition)
            .is_some_and(|slot| slot.scratch)
    }

    /// A stored state of the partition could not be read (`error`, from [`RecordStore::get`] or
    /// [`Stored::view`]). The first time in an assignment the partition is restored from scratch:
    /// the local copy may be damaged where the changelog is not. After that, a value that does
    /// not decode is the changelog's own: counted, and the record taken as never seen, so that
    /// one bad value cannot stall the partition for good.
    pub fn unreadable(&self, partition: i32, key: &str, error: &StoreError) -> Unreadable {
        let mut slots = lock(&self.slots);
        let Some(slot) = slots.get_mut(&partition) else {
            return Unreadable::Fault;
        };
        if !slot.rebuilt {
            if !slot.scratch {
                tracing::warn!(partition, key, %error, "a stored record state cannot be read; restoring the partition from scratch");
            }
            slot.scratch = true;
            slot.restored = false;
            slot.epoch = self.next_epoch();
            return Unreadable::Restoring;
        }
        match error {
            StoreError::Corrupt { .. } => {
                tracing::warn!(partition, key, %error, "the changelog's state of the record does not decode; it counts as never seen");
                metrics::counter!(crate::metric_definitions::UNDECODABLE_STATES).increment(1);
                Unreadable::Absent
            }
            _ => Unreadable::Fault,
        }
    }

    fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The epoch of the partition's slot, if assigned.
    fn epoch(&self, partition: i32) -> Option<u64> {
        lock(&self.slots).get(&partition).map(|slot| slot.epoch)
    }

    /// Marks the partition caught up, if its slot is still the one of `epoch`.
    fn finish_restore(&self, partition: i32, epoch: Option<u64>) -> Finished {
        match (lock(&self.slots).get_mut(&partition), epoch) {
            (Some(slot), Some(epoch)) if slot.epoch == epoch => {
                slot.restored = true;
                slot.rebuilt |= std::mem::take(&mut slot.scratch);
                Finished::Marked
            }
            (Some(_), _) => Finished::Outdated,
            (None, _) => Finished::Unassigned,
        }
    }

    fn checkpoint(&self, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self
            .checkpoints
            .get(partition.to_be_bytes())?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes))
    }

    fn is_restored(&self, partition: i32) -> bool {
        lock(&self.slots)
            .get(&partition)
            .is_some_and(|slot| slot.restored)
    }

    /// Waits until the partition's state is caught up with the changelog, restoring it if
    /// needed.
    pub async fn ready(self: &Arc<Self>, partition: i32) -> Result<(), StoreError> {
        self.ready_with(partition, RecordStore::restore).await
    }

    /// [`RecordStore::ready`], restoring with `restore`. A restore counts only for the slot it
    /// began under: if the partition was revoked and assigned again (or marked stale) while it
    /// ran, another owner may have written past the end it read to, so it runs again.
    async fn ready_with(
        self: &Arc<Self>,
        partition: i32,
        restore: fn(&RecordStore, i32) -> Result<Restored, StoreError>,
    ) -> Result<(), StoreError> {
        if self.is_restored(partition) {
            return Ok(());
        }
        let _one_at_a_time = self.restoring.lock().await;
        loop {
            if self.is_restored(partition) {
                return Ok(());
            }
            let epoch = self.epoch(partition);
            let store = self.clone();
            let restored = tokio::task::spawn_blocking(move || restore(&store, partition))
                .await
                .map_err(|e| StoreError::Restore {
                    partition,
                    reason: format!("the restore task ended: {e}"),
                })??;
            tracing::info!(
                partition,
                records = restored.records,
                from = restored.from,
                to = restored.to,
                seconds = restored.seconds,
                "record state restored from the changelog"
            );
            match self.finish_restore(partition, epoch) {
                Finished::Marked | Finished::Unassigned => return Ok(()),
                Finished::Outdated => {
                    tracing::info!(
                        partition,
                        "the partition was assigned again or went stale while restoring; catching up again"
                    );
                }
            }
        }
    }

    fn restore(&self, partition: i32) -> Result<Restored, StoreError> {
        let keyspace = self.keyspace(partition)?;
        // No checkpoint: the keyspace is emptied and the changelog read from its start.
        let from = match self.restores_from_scratch(partition) {
            true => None,
            false => self.checkpoint(partition)?,
        };
        let apply = |start_over: bool, records: Vec<restore::Record>, next: i64| {
            if start_over {
                keyspace.clear()?;
                self.rotations.forget(partition);
            }
            let mut batch = self.db.batch();
            let mut bytes = 0;
            for (key, value) in records {
                bytes += entry_size(key.len(), value.as_ref().map_or(0, Vec::len));
                match value {
                    Some(value) => batch.insert(&keyspace, key, value),
                    None => batch.remove(&keyspace, key),
                }
            }
            batch.insert(
                &self.checkpoints,
                partition.to_be_bytes(),
                next.to_be_bytes(),
            );
            batch.commit()?;
            self.rotate_if_full(&keyspace, partition, bytes)?;
            self.wait_for_flushes();
            Ok::<(), fjall::Error>(())
        };
        restore::run(&self.source, partition, from, apply).map_err(|e| StoreError::Restore {
            partition,
            reason: format!("{e:#}"),
        })
    }

    /// Holds a restore back while unflushed memtables exceed four times their size. Full
    /// memtables are flushed by fjall's background worker; while it is busy compacting, a
    /// restore writing at full speed keeps filling new ones (measured: 660 MiB of RSS restoring
    /// 5 million records without this wait, within the budget with it). Bounded, so that a
    /// stalled worker cannot hold the restore for good.
    fn wait_for_flushes(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.db.write_buffer_size() > 4 * self.rotations.limit()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Per assigned partition caught up with the changelog, the integrations it holds records
    /// of (a key begins with its integration's id and a `/`): one seek per integration rather
    /// than a read of every key.
    pub(crate) fn held_integrations(&self) -> Result<Vec<(i32, Vec<String>)>, StoreError> {
        let partitions: Vec<i32> = lock(&self.slots)
            .iter()
            .filter(|(_, slot)| slot.restored)
            .map(|(partition, _)| *partition)
            .collect();
        let mut held = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let keyspace = self.keyspace(partition)?;
            let mut integrations = Vec::new();
            let mut from: Vec<u8> = Vec::new();
            while let Some(guard) = keyspace.range(from.as_slice()..).next() {
                let key = guard.key()?;
                match key.iter().position(|b| *b == b'/') {
                    Some(end) => {
                        integrations.push(String::from_utf8_lossy(&key[..end]).into_owned());
                        // Past every key of this integration: `0` follows `/`.
                        from = key[..end].to_vec();
                        from.push(b'/' + 1);
                    }
                    None => {
                        from = key.to_vec();
                        from.push(0);
                    }
                }
            }
            held.push((partition, integrations));
        }
        Ok(held)
    }

    /// Up to `limit` keys of the partition's records of one integration.
    pub(crate) fn keys_of(
        &self,
        partition: i32,
        integration: &str,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let prefix = format!("{integration}/");
        self.keyspace(partition)?
            .prefix(prefix.as_bytes())
            .take(limit)
            .map(|guard| Ok(guard.key()?.to_vec()))
            .collect()
    }

    /// Removes records from the local store, once the changelog holds their tombstones.
    pub(crate) fn forget(&self, partition: i32, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let keyspace = self.keyspace(partition)?;
        let mut batch = self.db.batch();
        for key in keys {
            batch.remove(&keyspace, key.as_slice());
        }
        batch.commit()?;
        Ok(())
    }

    /// `Err` naming the partitions whose state is not caught up yet.
    pub fn readiness(&self) -> Result<(), String> {
        let slots = lock(&self.slots);
        let mut waiting: Vec<i32> = slots
            .iter()
            .filter(|(_, slot)| !slot.restored)
            .map(|(p, _)| *p)
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        waiting.sort_unstable();
        Err(format!(
            "restoring the record state of partitions {waiting:?} from the changelog"
        ))
    }

    /// Partitions assigned and not caught up: restored eagerly by [`run_restorer`].
    fn wanted(&self, partition: i32) -> bool {
        lock(&self.slots)
            .get(&partition)
            .is_some_and(|slot| !slot.restored)
    }
}

impl PartitionListener for RecordStore {
    fn assigned(&self, partitions: &[(String, i32)]) {
        let mut slots = lock(&self.slots);
        for (_, partition) in partitions.iter().filter(|(t, _)| *t == self.input_topic) {
            slots.insert(*partition, Slot::assigned(self.next_epoch()));
            let _ = self.wake.send(*partition);
        }
    }

    fn revoked(&self, partitions: &[(String, i32)]) {
        let mut slots = lock(&self.slots);
        for (_, partition) in partitions.iter().filter(|(t, _)| *t == self.input_topic) {
            slots.remove(partition);
        }
    }
}

/// Restores assigned partitions as soon as they are assigned, so that readiness turns true
/// without waiting for their first event.
pub async fn run_restorer(store: Arc<RecordStore>, mut wakes: mpsc::UnboundedReceiver<i32>) {
    while let Some(partition) = wakes.recv().await {
        let mut backoff = crm_sync_retry::Backoff::new(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(10),
        );
        while store.wanted(partition) {
            match store.ready(partition).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(partition, %error, "restoring record state failed; retrying");
                    backoff.sleep().await;
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
