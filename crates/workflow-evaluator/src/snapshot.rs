//! The active workflows, held in memory so that evaluating an event needs no database query.
//! PostgreSQL announces every workflow or integration change with NOTIFY; the snapshot is then
//! reloaded whole (it is small), and also after every reconnect, since notifications sent while
//! disconnected are lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crm_sync_store::listen::{self, OnChange, Resync};
use crm_sync_store::workflows::{self, CHANGED_CHANNEL, StoredWorkflow};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::leaves::SharedLeaves;

#[derive(Debug, Default)]
pub struct Integration {
    pub company_id: Uuid,
    /// Shared with every event being judged: handing them over costs one reference count.
    pub workflows: Arc<Workflows>,
}

/// An integration's active workflows.
#[derive(Debug, Default)]
pub struct Workflows {
    pub list: Vec<Arc<StoredWorkflow>>,
    /// Every field some workflow reads, each once, in order.
    pub fields: Vec<String>,
    /// Per workflow of `list`, the fields it reads as bits of `fields` (64 a word): the fields
    /// several workflows read are one `|` away.
    pub reads: Vec<Vec<u64>>,
    /// The leaves several places of these workflows hold: evaluated once per record.
    pub shared: SharedLeaves,
}

impl Workflows {
    pub fn new(list: Vec<Arc<StoredWorkflow>>) -> Workflows {
        let needed: Vec<Vec<String>> = list
            .iter()
            .map(|w| {
                w.spec
                    .needed_fields()
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        let mut fields: Vec<String> = needed.iter().flatten().cloned().collect();
        fields.sort_unstable();
        fields.dedup();
        let words = fields.len().div_ceil(64);
        let reads = needed
            .iter()
            .map(|names| {
                let mut bits = vec![0u64; words];
                for name in names {
                    if let Ok(i) = fields.binary_search(name)
                        && let Some(word) = bits.get_mut(i / 64)
                    {
                        *word |= 1 << (i % 64);
                    }
                }
                bits
            })
            .collect();
        let mut leaves = Vec::new();
        for workflow in &list {
            workflow
                .spec
                .conditions
                .for_each_leaf(&mut |leaf| leaves.push(leaf));
        }
        let shared = SharedLeaves::new(leaves);
        Workflows {
            list,
            fields,
            reads,
            shared,
        }
    }

    /// The fields the workflows at `indexes` read, each once.
    pub fn fields_read_by(
        &self,
        indexes: impl Iterator<Item = usize>,
    ) -> impl Iterator<Item = &str> {
        let mut union = vec![0u64; self.fields.len().div_ceil(64)];
        for bits in indexes.filter_map(|i| self.reads.get(i)) {
            for (u, b) in union.iter_mut().zip(bits) {
                *u |= b;
            }
        }
        self.fields.iter().enumerate().filter_map(move |(i, name)| {
            union
                .get(i / 64)
                .is_some_and(|word| word & (1 << (i % 64)) != 0)
                .then_some(name.as_str())
        })
    }
}

/// The active integrations by id, looked up on every event: hashed with foldhash, several times
/// cheaper than the standard library's SipHash for a UUID.
pub type Integrations = foldhash::HashMap<Uuid, Integration>;

#[derive(Default)]
pub struct WorkflowSnapshot {
    by_integration: RwLock<Arc<Integrations>>,
    loaded: AtomicBool,
    /// One reload at a time: two interleaved (the listener's and a handler's) could install the
    /// one that read the database first last, bringing back a workflow just deactivated.
    reloading: tokio::sync::Mutex<()>,
    /// When the installed snapshot began to be read (microseconds since the Unix epoch):
    /// whatever was committed before then is in it.
    read_from: AtomicI64,
}

impl WorkflowSnapshot {
    pub fn current(&self) -> Arc<Integrations> {
        match self.by_integration.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub async fn reload(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let _one = self.reloading.lock().await;
        self.read(pool).await
    }

    /// Reloads unless the snapshot was read after `committed_by`, and so already holds
    /// everything committed by then. Events of an integration deleted long ago (a backlog, a
    /// replay) then cost no reload each.
    pub async fn reload_unless_read_after(
        &self,
        pool: &PgPool,
        committed_by: SystemTime,
    ) -> Result<(), sqlx::Error> {
        let _one = self.reloading.lock().await;
        if micros(committed_by) < self.read_from.load(Ordering::Acquire) {
            return Ok(());
        }
        self.read(pool).await
    }

    async fn read(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let started = SystemTime::now();
        let timer = std::time::Instant::now();
        let integrations = workflows::integration_ids(pool).await?;
        let active = workflows::load_active(pool).await?;
        let mut lists: HashMap<Uuid, (Uuid, Vec<Arc<StoredWorkflow>>)> = integrations
            .into_iter()
            .map(|(id, company_id)| (id, (company_id, Vec::new())))
            .collect();
        let count = active.len();
        for workflow in active {
            if let Some((_, list)) = lists.get_mut(&workflow.integration_id) {
                list.push(Arc::new(workflow));
            }
        }
        let map: Integrations = lists
            .into_iter()
            .map(|(id, (company_id, list))| {
                let workflows = Arc::new(Workflows::new(list));
                (
                    id,
                    Integration {
                        company_id,
                        workflows,
                    },
                )
            })
            .collect();
        let integrations = map.len();
        match self.by_integration.write() {
            Ok(mut guard) => *guard = Arc::new(map),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(map),
        }
        self.loaded.store(true, Ordering::Release);
        self.read_from.store(micros(started), Ordering::Release);
        metrics::histogram!(crate::metric_definitions::RELOAD)
            .record(timer.elapsed().as_secs_f64());
        metrics::gauge!(crate::metric_definitions::ACTIVE_WORKFLOWS).set(count as f64);
        tracing::debug!(
            integrations,
            active_workflows = count,
            "workflow snapshot reloaded"
        );
        Ok(())
    }
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Listens for changes and reloads until shutdown, and fully after every reconnect.
pub async fn keep_fresh(
    snapshot: Arc<WorkflowSnapshot>,
    pool: PgPool,
    shutdown: CancellationToken,
) {
    let mut reloader = Reloader {
        snapshot,
        pool: pool.clone(),
    };
    listen::listen(&pool, &[CHANGED_CHANNEL], &mut reloader, &shutdown).await;
}

/// How soon a failed reload is tried again.
const RELOAD_RETRY: Duration = Duration::from_secs(1);

struct Reloader {
    snapshot: Arc<WorkflowSnapshot>,
    pool: PgPool,
}

impl Reloader {
    async fn reload(&self) -> Option<Duration> {
        match self.snapshot.reload(&self.pool).await {
            Ok(()) => None,
            Err(error) => {
                tracing::warn!(%error, "reloading the active workflows failed; retrying");
                Some(RELOAD_RETRY)
            }
        }
    }
}

impl OnChange for Reloader {
    async fn resync(&mut self, why: Resync) -> Option<Duration> {
        tracing::debug!(?why, "reloading the active workflows");
        self.reload().await
    }

    async fn changed(&mut self, integrations: Vec<String>) -> Option<Duration> {
        tracing::debug!(?integrations, "workflows changed");
        self.reload().await
    }
}
