//! Publishing what writers staged in the transactional outbox (`crm_sync_store::outbox`): rows
//! read back after commit, and the sweep that relays rows a writer left behind (it crashed or
//! Kafka failed between its commit and its publish). Shared by the provisioner and admin-api, so
//! both publish and delete outbox rows the same way.

use std::time::Duration;

use crm_sync_store::outbox::{self, Pending, Staged};
use crm_sync_store::sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{OutgoingMessage, Publisher};

pub fn pending_to_outgoing(message: &Pending) -> OutgoingMessage {
    OutgoingMessage {
        topic: message.topic.clone(),
        key: message.key.clone(),
        payload: message.payload.clone(),
        event_id: message.message_id.clone(),
        headers: Vec::new(),
        partition: None,
    }
}

fn staged_to_outgoing(row: &Staged) -> OutgoingMessage {
    OutgoingMessage {
        topic: row.topic.clone(),
        key: row.message_key.clone(),
        payload: row.payload.clone(),
        event_id: row.message_id.clone(),
        headers: Vec::new(),
        partition: None,
    }
}

/// Publishes rows read back from the outbox and deletes them once Kafka acknowledged them.
pub async fn publish_rows(
    pool: &PgPool,
    publisher: &Publisher,
    rows: &[Staged],
) -> anyhow::Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let messages: Vec<OutgoingMessage> = rows.iter().map(staged_to_outgoing).collect();
    publisher.publish_all(&messages).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    outbox::delete(pool, &ids)
        .await
        .map_err(|e| anyhow::Error::new(e).context("deleting published outbox rows"))?;
    Ok(ids.len())
}

/// Publishes whatever the given changes (batch ids) left in the outbox.
pub async fn publish_batches(
    pool: &PgPool,
    publisher: &Publisher,
    batch_ids: &[&str],
) -> anyhow::Result<usize> {
    let rows = outbox::fetch_batches(pool, batch_ids)
        .await
        .map_err(|e| anyhow::Error::new(e).context("reading outbox rows"))?;
    publish_rows(pool, publisher, &rows).await
}

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

/// Relays abandoned rows at start-up and then every `sweep.interval`, until shutdown.
pub async fn relay_leftovers(
    pool: PgPool,
    publisher: Publisher,
    sweep: Sweep,
    shutdown: CancellationToken,
) {
    loop {
        let result = async {
            let rows = outbox::fetch_leftovers(
                &pool,
                sweep.batch_prefix,
                sweep.abandoned_after,
                sweep.limit,
            )
            .await
            .map_err(|e| anyhow::Error::new(e).context("reading outbox leftovers"))?;
            publish_rows(&pool, &publisher, &rows).await
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => {
                (sweep.on_relayed)(n);
                tracing::info!(messages = n, "relayed leftover outbox messages");
            }
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "outbox relay failed; will retry"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(sweep.interval) => {}
        }
    }
}
