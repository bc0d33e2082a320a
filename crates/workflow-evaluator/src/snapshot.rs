//! The active workflows, held in memory so that evaluating an event needs no database query.
//! PostgreSQL announces every workflow or integration change with NOTIFY; the snapshot is then
//! reloaded whole (it is small), and also after every reconnect, since notifications sent while
//! disconnected are lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crm_sync_store::workflows::{self, CHANGED_CHANNEL, StoredWorkflow};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
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
        metrics::gauge!("crm_sync_evaluator_active_workflows").set(count as f64);
        tracing::debug!(
            integrations,
            active_workflows = count,
            "workflow snapshot reloaded"
        );
        Ok(())
    }
}

/// Listens for changes and reloads until shutdown; reconnects with backoff.
pub async fn keep_fresh(
    snapshot: Arc<WorkflowSnapshot>,
    pool: PgPool,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANGED_CHANNEL).await?;
            // Listen first, then load: a change between the two is seen by the load or notified.
            snapshot.reload(&pool).await?;
            backoff = Duration::from_millis(200);
            loop {
                let notification = listener.recv().await?;
                tracing::debug!(integration = notification.payload(), "workflows changed");
                // Coalesce notifications already buffered (e.g. a burst from `crm-sync apply`)
                // into one reload. Only the buffer: `try_recv` would wait for the next one.
                while listener.next_buffered().is_some() {}
                let started = std::time::Instant::now();
                snapshot.reload(&pool).await?;
                metrics::histogram!("crm_sync_evaluator_reload_seconds")
                    .record(started.elapsed().as_secs_f64());
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = session => {
                if let Err(error) = result {
                    tracing::warn!(%error, ?backoff, "workflow change listener failed; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
