//! When each integration's CRM last reached us, and when (and why) one of its requests was last
//! refused, for its sync status and health: each written at most once per [`PRECISION`] per
//! integration and process, off the request path (a busy integration costs one database write
//! every few seconds, and a slow database never delays an answer to the CRM).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use crm_sync_store::sqlx::{self, PgPool};
use crm_sync_store::sync_status;
use uuid::Uuid;

use super::refuse::ApiError;

/// How precise the recorded time of the last webhook is.
pub const PRECISION: Duration = Duration::from_secs(10);
/// Integrations remembered at most; the memory is cleared beyond it (costing one write each).
const MAX_INTEGRATIONS: usize = 100_000;

#[derive(Default)]
pub struct WebhooksSeen {
    accepted: Throttle,
    refused: Throttle,
}

impl WebhooksSeen {
    /// Notes an accepted webhook of the integration, writing it when the last write from this
    /// process is older than [`PRECISION`].
    pub fn accepted(&self, pool: &PgPool, integration_id: Uuid, at: DateTime<Utc>) {
        if !self.accepted.due(integration_id, Instant::now()) {
            return;
        }
        let pool = pool.clone();
        let write = async move {
            sync_status::record_webhook(&pool, integration_id, at, PRECISION.as_secs_f64()).await
        };
        spawn_write(
            integration_id,
            "recording the time of the last webhook",
            write,
        );
    }

    /// Notes a webhook request of the integration that was refused (a 4xx other than a rate
    /// limit), writing it when the last such write from this process is older than
    /// [`PRECISION`].
    pub fn refused(
        &self,
        pool: &PgPool,
        integration_id: Uuid,
        at: DateTime<Utc>,
        error: &ApiError,
    ) {
        if !self.refused.due(integration_id, Instant::now()) {
            return;
        }
        let refusal = format!(
            "{} {}: {}",
            error.status.as_u16(),
            error.code,
            error.message
        );
        let pool = pool.clone();
        let write = async move {
            let precision = PRECISION.as_secs_f64();
            sync_status::record_webhook_refusal(&pool, integration_id, at, &refusal, precision)
                .await
        };
        spawn_write(integration_id, "recording a refused webhook request", write);
    }
}

/// Runs `write` off the request path; a failure is only logged (the next one writes again).
fn spawn_write<F>(integration_id: Uuid, what: &'static str, write: F)
where
    F: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = write.await {
            tracing::warn!(%integration_id, error = %e, "{what} failed");
        }
    });
}

/// When this process last wrote each integration's time.
#[derive(Default)]
struct Throttle {
    last_written: Mutex<HashMap<Uuid, Instant>>,
}

impl Throttle {
    fn due(&self, integration_id: Uuid, now: Instant) -> bool {
        let mut last = self.last_written.lock().unwrap_or_else(|p| p.into_inner());
        if last
            .get(&integration_id)
            .is_some_and(|at| now.duration_since(*at) < PRECISION)
        {
            return false;
        }
        if last.len() >= MAX_INTEGRATIONS {
            last.clear();
        }
        last.insert(integration_id, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_integration_per_precision() {
        let seen = Throttle::default();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let t0 = Instant::now();
        assert!(seen.due(a, t0));
        assert!(!seen.due(a, t0 + Duration::from_secs(1)));
        assert!(seen.due(b, t0 + Duration::from_secs(1)));
        assert!(seen.due(a, t0 + PRECISION + Duration::from_millis(1)));
    }
}
