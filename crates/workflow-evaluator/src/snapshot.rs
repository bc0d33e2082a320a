//! The active workflows, held in memory so that evaluating an event needs no database query.
//! PostgreSQL announces every workflow or integration change with NOTIFY; the snapshot is then
//! reloaded whole (it is small), and also after every reconnect, since notifications sent while
//! disconnected are lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crm_sync_store::listen::{self, OnChange, Resync};
use crm_sync_store::workflows::{self, CHANGED_CHANNEL, StoredWorkflow};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Debug, Default)]
pub struct Integration {
    pub company_id: Uuid,
    pub workflows: Vec<Arc<StoredWorkflow>>,
}

#[derive(Default)]
pub struct WorkflowSnapshot {
    by_integration: RwLock<Arc<HashMap<Uuid, Integration>>>,
    loaded: AtomicBool,
}

impl WorkflowSnapshot {
    pub fn current(&self) -> Arc<HashMap<Uuid, Integration>> {
        match self.by_integration.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub async fn reload(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let integrations = workflows::integration_ids(pool).await?;
        let active = workflows::load_active(pool).await?;
        let mut map: HashMap<Uuid, Integration> = integrations
            .into_iter()
            .map(|(id, company_id)| {
                (
                    id,
                    Integration {
                        company_id,
                        workflows: Vec::new(),
                    },
                )
            })
            .collect();
        let count = active.len();
        for workflow in active {
            if let Some(entry) = map.get_mut(&workflow.integration_id) {
                entry.workflows.push(Arc::new(workflow));
            }
        }
        let integrations = map.len();
        match self.by_integration.write() {
            Ok(mut guard) => *guard = Arc::new(map),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(map),
        }
        self.loaded.store(true, Ordering::Release);
        metrics::gauge!(crate::metric_definitions::ACTIVE_WORKFLOWS).set(count as f64);
        tracing::debug!(
            integrations,
            active_workflows = count,
            "workflow snapshot reloaded"
        );
        Ok(())
    }
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
        let started = std::time::Instant::now();
        match self.snapshot.reload(&self.pool).await {
            Ok(()) => {
                metrics::histogram!(crate::metric_definitions::RELOAD)
                    .record(started.elapsed().as_secs_f64());
                None
            }
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
