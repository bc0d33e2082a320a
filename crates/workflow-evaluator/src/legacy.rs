//! Which records had an activity before the evaluator kept record state.
//!
//! A record the evaluator sees for the first time may have an activity that an evaluator without
//! record state recorded; when the record then stops matching, that activity must be retracted,
//! so the evaluator adopts it from the database. Asking the database about every record seen for
//! the first time would cost a query per new record forever (measured in a load run: 40,000
//! queries for 50,000 records, half the evaluator's throughput). Instead each integration's
//! records with recorded activities are read once, as a set of hashes, and only a record in that
//! set is looked up. Activities recorded later come from the state's own matches, so a set read
//! once stays sufficient; it is read again when the integration gains a workflow. (During a
//! rolling upgrade, an activity an old replica records after the set was read is not adopted:
//! finish the upgrade before relying on retractions of such records.)
//!
//! The set is a Bloom filter, not the hashes themselves: it is kept for the replica's life, and
//! at 10 to 20 bits per record ten million recorded activities take 12 to 25 MB, where a set of
//! their hashes took well over 100 MB. A false positive (under 1 %) costs one database look-up, as a hash
//! collision did.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use crm_sync_store::workflows::StoredWorkflow;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Default)]
pub struct LegacyIndex {
    by_integration: Mutex<HashMap<Uuid, Arc<Loaded>>>,
}

struct Loaded {
    workflows: HashSet<Uuid>,
    records: Bloom,
}

/// A Bloom filter over 64-bit hashes: [`Bloom::PROBES`] bits per hash, at positions derived from
/// the hash's two halves (double hashing), in a power-of-two number of bits at least ten per
/// element, which keeps false positives under 1 %.
struct Bloom {
    words: Vec<u64>,
    mask: u64,
}

impl Bloom {
    const PROBES: u64 = 7;

    fn of(hashes: &[u64]) -> Bloom {
        let bits = (hashes.len().max(1) * 10).next_power_of_two().max(64);
        let mut bloom = Bloom {
            words: vec![0; bits / 64],
            mask: bits as u64 - 1,
        };
        for &h in hashes {
            for bit in bloom.positions(h) {
                bloom.words[(bit / 64) as usize] |= 1 << (bit % 64);
            }
        }
        bloom
    }

    fn positions(&self, h: u64) -> impl Iterator<Item = u64> + use<> {
        let (mask, step) = (self.mask, h.rotate_left(32) | 1);
        (0..Self::PROBES).map(move |i| h.wrapping_add(i.wrapping_mul(step)) & mask)
    }

    fn may_contain(&self, h: u64) -> bool {
        self.positions(h)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }
}

fn hash(record_id: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    record_id.hash(&mut hasher);
    hasher.finish()
}

impl LegacyIndex {
    /// Whether the record may have a recorded activity under these workflows (a hash collision
    /// answers true: the caller then asks the database, which knows).
    pub async fn may_have(
        &self,
        pool: &PgPool,
        integration_id: Uuid,
        workflows: &[Arc<StoredWorkflow>],
        record_id: &str,
    ) -> Result<bool, sqlx::Error> {
        let ids: Vec<Uuid> = workflows.iter().map(|w| w.id).collect();
        let known = self.loaded(integration_id);
        let loaded = match known {
            Some(l) if ids.iter().all(|id| l.workflows.contains(id)) => l,
            _ => self.load(pool, integration_id, ids).await?,
        };
        Ok(loaded.records.may_contain(hash(record_id)))
    }

    fn loaded(&self, integration_id: Uuid) -> Option<Arc<Loaded>> {
        let map = self
            .by_integration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.get(&integration_id).cloned()
    }

    async fn load(
        &self,
        pool: &PgPool,
        integration_id: Uuid,
        ids: Vec<Uuid>,
    ) -> Result<Arc<Loaded>, sqlx::Error> {
        let mut hashes = Vec::new();
        crm_sync_store::workflows::for_each_recorded_record(pool, &ids, |record_id| {
            hashes.push(hash(record_id));
        })
        .await?;
        tracing::debug!(%integration_id, records = hashes.len(), "read the records with activities recorded before record state");
        let loaded = Arc::new(Loaded {
            workflows: ids.into_iter().collect(),
            records: Bloom::of(&hashes),
        });
        let mut map = self
            .by_integration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(integration_id, loaded.clone());
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_read_is_found_and_few_others_are() {
        let read: Vec<u64> = (0..100_000).map(|n| hash(&format!("006{n:015}"))).collect();
        let bloom = Bloom::of(&read);
        assert!(read.iter().all(|&h| bloom.may_contain(h)));
        let others = (0..100_000)
            .filter(|n| bloom.may_contain(hash(&format!("007{n:015}"))))
            .count();
        assert!(others < 1_000, "{others} false positives in 100,000");
        // 100,000 records in 2^20 bits: 128 KiB, against ~1.6 MB for the hashes in a set.
        assert_eq!(bloom.words.len() * 8, 128 * 1024);
    }

    #[test]
    fn an_integration_without_recorded_activities_finds_nothing() {
        let bloom = Bloom::of(&[]);
        assert!(!bloom.may_contain(hash("006000000000000001")));
    }
}
