//! The relay: publishes the rows a writer left in the outbox (it crashed, or Kafka failed,
//! between its commit and its publish).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{Outbox, OutboxError, table};

/// Which leftovers a relay takes, and how often it looks.
#[derive(Debug, Clone, Copy)]
pub struct Sweep {
    /// Only batches whose id starts with this ("" for every writer's).
    pub batch_prefix: &'static str,
    /// Rows older than this are presumed abandoned by their writer. Long enough that a writer
    /// still waiting for Kafka's acknowledgement is not raced (which would only duplicate).
    pub abandoned_after: Duration,
    pub limit: i64,
    pub interval: Duration,
    /// Called with how many messages a round relayed (for the writer's own metrics).
    pub on_relayed: fn(usize),
}

impl Outbox {
    /// Relays abandoned rows at start-up and then every `sweep.interval`, until shutdown.
    pub async fn relay_leftovers(self, sweep: Sweep, shutdown: CancellationToken) {
        loop {
            match self.relay_once(&sweep).await {
                Ok(0) => {}
                Ok(n) => {
                    (sweep.on_relayed)(n);
                    tracing::info!(messages = n, "relayed leftover outbox messages");
                }
                Err(error) => tracing::warn!(
                    error = format!("{:#}", anyhow::Error::new(error)),
                    "outbox relay failed; will retry"
                ),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sweep.interval) => {}
            }
        }
    }

    async fn relay_once(&self, sweep: &Sweep) -> Result<usize, OutboxError> {
        let rows = table::fetch_leftovers(
            &self.pool,
            sweep.batch_prefix,
            sweep.abandoned_after,
            sweep.limit,
        )
        .await
        .map_err(OutboxError::Read)?;
        self.publish_rows(&rows).await
    }
}
