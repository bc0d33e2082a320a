//! Publishing what the provisioner staged in the outbox (`crm_sync_store::outbox`, shared with
//! admin-api). The normal path publishes the messages a transaction just staged straight from
//! memory after commit and then deletes their rows; reading the outbox back is only for rows
//! left behind: by an attempt that crashed or failed between commit and publish (picked up when
//! the same outcome is seen again, or by the periodic sweep).

use std::time::Duration;

use crm_sync_kafka::{OutgoingMessage, Publisher};
use crm_sync_store::outbox::{self, Pending, Staged};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Rows older than this are presumed abandoned by their writer. Long enough that a writer still
/// waiting for Kafka's acknowledgement is not raced (which would only duplicate, never lose).
const ABANDONED_AFTER: Duration = Duration::from_secs(60);
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);
const SWEEP_LIMIT: i64 = 1000;

pub fn to_outgoing(message: &Pending) -> OutgoingMessage {
    OutgoingMessage {
        topic: message.topic.clone(),
        key: message.key.clone(),
        payload: message.payload.clone(),
        event_id: message.message_id.clone(),
        headers: Vec::new(),
    }
}

fn staged_to_outgoing(row: &Staged) -> OutgoingMessage {
    OutgoingMessage {
        topic: row.topic.clone(),
        key: row.message_key.clone(),
        payload: row.payload.clone(),
        event_id: row.message_id.clone(),
        headers: Vec::new(),
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

/// Publishes whatever the given changes (outcome ids, announcement ids) left in the outbox.
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

/// Sweeps rows abandoned by any writer (the provisioner's replicas, and admin-api's as a
/// backstop to its own relay) at start-up and then periodically, until shutdown.
pub async fn relay_leftovers(pool: PgPool, publisher: Publisher, shutdown: CancellationToken) {
    loop {
        let result = async {
            let rows = outbox::fetch_leftovers(&pool, "", ABANDONED_AFTER, SWEEP_LIMIT)
                .await
                .map_err(|e| anyhow::Error::new(e).context("reading outbox leftovers"))?;
            publish_rows(&pool, &publisher, &rows).await
        }
        .await;
        match result {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "relayed leftover outbox messages"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "outbox relay failed; will retry"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}
