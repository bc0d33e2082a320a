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
    records: HashSet<u64>,
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
        Ok(loaded.records.contains(&hash(record_id)))
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
        let mut records = HashSet::new();
        crm_sync_store::workflows::for_each_recorded_record(pool, &ids, |record_id| {
            records.insert(hash(record_id));
        })
        .await?;
        tracing::debug!(%integration_id, records = records.len(), "read the records with activities recorded before record state");
        let loaded = Arc::new(Loaded {
            workflows: ids.into_iter().collect(),
            records,
        });
        let mut map = self
            .by_integration
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.insert(integration_id, loaded.clone());
        Ok(loaded)
    }
}
