//! What this process last wrote to the owner memory, so that redeliveries and repeated
//! notifications of a record (the same owner, no newer CRM time) cost no database write: such a
//! write could not change the stored row, which holds that owner at that time or something newer.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use crm_sync_store::record_owners::ObservedOwner;
use uuid::Uuid;

/// Records remembered at most; the cache is cleared beyond it.
const MAX_RECORDS: usize = 200_000;
/// Bytes of ids remembered at most (ids are capped, but a cache of long ids would still hold
/// far more memory than one of CRM-sized ones); the cache is cleared beyond it.
const MAX_BYTES: usize = 32 * 1024 * 1024;

type Key = (Uuid, String, String);

#[derive(Default)]
pub struct WrittenOwners {
    written: Mutex<Written>,
}

#[derive(Default)]
struct Written {
    owners: HashMap<Key, (String, DateTime<Utc>)>,
    /// Bytes of the ids held in `owners`.
    bytes: usize,
}

/// What an entry holds in ids, counted against [`MAX_BYTES`].
fn size(o: &ObservedOwner) -> usize {
    o.object_type.len() + o.record_id.len() + o.crm_user_id.len()
}

impl WrittenOwners {
    /// The observations that may change the stored owners.
    pub fn needed(&self, integration_id: Uuid, owners: Vec<ObservedOwner>) -> Vec<ObservedOwner> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        owners
            .into_iter()
            .filter(|o| {
                let key = (integration_id, o.object_type.clone(), o.record_id.clone());
                !matches!(written.owners.get(&key), Some((owner, at)) if *owner == o.crm_user_id && o.observed_at <= *at)
            })
            .collect()
    }

    /// Notes observations once they are stored.
    pub fn stored(&self, integration_id: Uuid, owners: &[ObservedOwner]) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let adding: usize = owners.iter().map(size).sum();
        if written.owners.len() + owners.len() > MAX_RECORDS || written.bytes + adding > MAX_BYTES {
            written.owners.clear();
            written.bytes = 0;
        }
        for o in owners {
            let key = (integration_id, o.object_type.clone(), o.record_id.clone());
            let newer = written
                .owners
                .get(&key)
                .is_none_or(|(_, at)| *at <= o.observed_at);
            if newer {
                if let Some((old, _)) = written
                    .owners
                    .insert(key, (o.crm_user_id.clone(), o.observed_at))
                {
                    // Replaced: only the owner's id changes what is held.
                    written.bytes -= size(o) - o.crm_user_id.len() + old.len();
                }
                written.bytes += size(o);
            }
        }
    }

    /// Bytes of ids held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.written.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(user: &str, secs: i64) -> ObservedOwner {
        ObservedOwner {
            object_type: "Opportunity".into(),
            record_id: "006A".into(),
            crm_user_id: user.into(),
            observed_at: DateTime::from_timestamp(secs, 0).unwrap(),
        }
    }

    #[test]
    fn only_writes_that_could_change_the_row_are_needed() {
        let cache = WrittenOwners::default();
        let iid = Uuid::new_v4();
        assert_eq!(cache.needed(iid, vec![owner("A", 10)]).len(), 1);
        cache.stored(iid, &[owner("A", 10)]);
        assert!(
            cache.needed(iid, vec![owner("A", 10)]).is_empty(),
            "a redelivery"
        );
        assert!(
            cache.needed(iid, vec![owner("A", 5)]).is_empty(),
            "older, same owner"
        );
        assert_eq!(
            cache.needed(iid, vec![owner("A", 11)]).len(),
            1,
            "a newer time is stored"
        );
        assert_eq!(
            cache.needed(iid, vec![owner("B", 5)]).len(),
            1,
            "another owner: the database decides"
        );
        assert_eq!(cache.needed(Uuid::new_v4(), vec![owner("A", 10)]).len(), 1);
    }

    #[test]
    fn the_cache_is_bounded_by_bytes_not_only_by_count() {
        let cache = WrittenOwners::default();
        let iid = Uuid::new_v4();
        let long = |i: usize| ObservedOwner {
            object_type: "Opportunity".into(),
            record_id: format!("006{i}"),
            crm_user_id: "x".repeat(250),
            observed_at: DateTime::from_timestamp(10, 0).unwrap(),
        };
        // Far fewer records than the count limit, but more bytes than the byte limit.
        for i in 0..(MAX_BYTES / 250 + 1000) {
            cache.stored(iid, &[long(i)]);
            assert!(cache.bytes() <= MAX_BYTES);
        }
        assert!(cache.bytes() > 0);
        // A replaced owner is accounted for exactly.
        let cache = WrittenOwners::default();
        cache.stored(iid, &[owner("A", 10)]);
        cache.stored(iid, &[owner("BB", 11)]);
        assert_eq!(cache.bytes(), "Opportunity".len() + "006A".len() + 2);
    }
}
