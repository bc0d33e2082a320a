//! When the record store rotates a partition's memtable: as the writes that fill it commit,
//! from the writing thread, rather than by asking fjall's background worker.
//!
//! fjall asks its workers to rotate a full memtable on every write to it until one of them
//! does, through a channel of 1,000 that the workers also send flush orders to, blocking. With
//! two workers the first re-queues every compaction order while the second compacts, and spins
//! doing so: half of fjall's CPU in a backlog, a tenth of the evaluator's. The store runs one
//! worker; while it compacts, those requests would pile up, one per commit, and a full channel
//! would block the worker for good. Rotated here, a memtable is over its size for one commit
//! at most (fjall's own limit is set above this one), so the requests stay few whatever the
//! worker is doing.

use std::collections::HashMap;
use std::sync::Mutex;

/// What fjall counts per entry in a memtable besides its key and value (its internal value's
/// size, rounded up): the count here should not lag fjall's.
const ENTRY_OVERHEAD: u64 = 64;

/// What an entry of `key` and `value` bytes takes in a memtable.
pub fn entry_size(key: usize, value: usize) -> u64 {
    (key + value) as u64 + ENTRY_OVERHEAD
}

/// Bytes written to each partition's memtable since it was last rotated.
pub struct Rotations {
    limit: u64,
    written: Mutex<HashMap<i32, u64>>,
}

impl Rotations {
    /// Memtables are rotated once they hold `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Rotations {
            limit,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// A full memtable's size.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The size fjall gives the memtables themselves: above this limit, so that its own
    /// rotation requests are rare.
    pub fn fjall_limit(&self) -> u64 {
        self.limit.saturating_mul(2)
    }

    /// Counts `bytes` (see [`entry_size`]) written to the partition's memtable; true when it is
    /// full and must be rotated now (its count starts over).
    pub fn wrote(&self, partition: i32, bytes: u64) -> bool {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let total = written.entry(partition).or_insert(0);
        *total += bytes;
        if *total < self.limit {
            return false;
        }
        *total = 0;
        true
    }

    /// The partition's memtable was emptied (its keyspace cleared).
    pub fn forget(&self, partition: i32) {
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memtable_rotates_once_full_and_counts_again_from_zero() {
        let rotations = Rotations::new(1_000);
        let three = 3 * entry_size(100, 100);
        assert_eq!(three, 792);
        assert!(!rotations.wrote(0, three));
        assert!(!rotations.wrote(1, three), "partitions count apart");
        assert!(rotations.wrote(0, entry_size(100, 100)));
        assert!(!rotations.wrote(0, three), "counted again from zero");
        rotations.forget(1);
        assert!(
            !rotations.wrote(1, three),
            "a cleared memtable starts empty"
        );
        assert_eq!(rotations.fjall_limit(), 2_000);
    }
}
