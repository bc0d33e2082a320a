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

type Key = (Uuid, String, String);

#[derive(Default)]
pub struct WrittenOwners {
    written: Mutex<HashMap<Key, (String, DateTime<Utc>)>>,
}

impl WrittenOwners {
    /// The observations that may change the stored owners.
    pub fn needed(&self, integration_id: Uuid, owners: Vec<ObservedOwner>) -> Vec<ObservedOwner> {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        owners
            .into_iter()
            .filter(|o| {
                let key = (integration_id, o.object_type.clone(), o.record_id.clone());
                !matches!(written.get(&key), Some((owner, at)) if *owner == o.crm_user_id && o.observed_at <= *at)
            })
            .collect()
    }

    /// Notes observations once they are stored.
    pub fn stored(&self, integration_id: Uuid, owners: &[ObservedOwner]) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.len() + owners.len() > MAX_RECORDS {
            written.clear();
        }
        for o in owners {
            let key = (integration_id, o.object_type.clone(), o.record_id.clone());
            let newer = written.get(&key).is_none_or(|(_, at)| *at <= o.observed_at);
            if newer {
                written.insert(key, (o.crm_user_id.clone(), o.observed_at));
            }
        }
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
}
