//! The transactional outbox: messages are written in the same database transaction as the effects
//! they announce, published after commit, and deleted once Kafka acknowledged them. A crash
//! between commit and publish therefore delays a message but never loses it.

use std::time::Duration;

use crm_sync_kafka::{OutgoingMessage, Publisher};
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;

pub struct Pending {
    pub topic: String,
    pub key: String,
    pub message_id: String,
    pub payload: Vec<u8>,
}

pub async fn stage(
    tx: &mut Transaction<'_, Postgres>,
    event_id: &str,
    message: &Pending,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, message_key, message_id, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event_id)
    .bind(&message.topic)
    .bind(&message.key)
    .bind(&message.message_id)
    .bind(&message.payload)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    topic: String,
    message_key: String,
    message_id: String,
    payload: Vec<u8>,
}

/// Publishes what the given event staged (or, with `None`, everything staged over a minute ago,
/// which its own handler evidently failed to publish) and deletes it.
pub async fn publish(
    pool: &PgPool,
    publisher: &Publisher,
    event_id: Option<&str>,
) -> anyhow::Result<usize> {
    let rows = sqlx::query_as::<_, Row>(
        "SELECT id, topic, message_key, message_id, payload FROM outbox
         WHERE ($1::text IS NULL AND created_at < now() - interval '1 minute') OR event_id = $1
         ORDER BY id LIMIT 1000",
    )
    .bind(event_id)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let messages: Vec<OutgoingMessage> = rows
        .iter()
        .map(|r| OutgoingMessage {
            topic: r.topic.clone(),
            key: r.message_key.clone(),
            payload: r.payload.clone(),
            event_id: r.message_id.clone(),
            headers: Vec::new(),
        })
        .collect();
    publisher.publish_all(&messages).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(&ids)
        .execute(pool)
        .await?;
    Ok(ids.len())
}

/// Sweeps leftovers at start-up, then now and then: rows whose publishing was interrupted.
pub async fn relay_leftovers(pool: PgPool, publisher: Publisher, shutdown: CancellationToken) {
    loop {
        match publish(&pool, &publisher, None).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(messages = n, "relayed leftover outbox messages"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "outbox relay failed; will retry"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
    }
}
