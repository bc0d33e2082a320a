//! The transactional outbox table, for any writer: messages are staged in the same transaction as
//! the effects they announce, read back after commit, and deleted once Kafka acknowledged them.
//! Publishing itself is the caller's (this crate does not talk to Kafka).

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// A message to stage.
#[derive(Debug, Clone)]
pub struct Pending {
    pub topic: String,
    pub key: String,
    /// The message's own id (its `crm-sync-event-id` header), for consumers to deduplicate on.
    pub message_id: String,
    pub payload: Vec<u8>,
}

/// A staged message read back for publishing.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Staged {
    pub id: i64,
    pub topic: String,
    pub message_key: String,
    pub message_id: String,
    pub payload: Vec<u8>,
}

/// Stages `message` under `batch_id` (the id of the change that produced it), inside the
/// caller's transaction.
pub async fn stage(
    conn: &mut PgConnection,
    batch_id: &str,
    message: &Pending,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO outbox (event_id, topic, message_key, message_id, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(batch_id)
    .bind(&message.topic)
    .bind(&message.key)
    .bind(&message.message_id)
    .bind(&message.payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// What one change staged, in staging order.
pub async fn fetch_batch(pool: &PgPool, batch_id: &str) -> Result<Vec<Staged>, sqlx::Error> {
    sqlx::query_as::<_, Staged>(
        "SELECT id, topic, message_key, message_id, payload FROM outbox WHERE event_id = $1 ORDER BY id",
    )
    .bind(batch_id)
    .fetch_all(pool)
    .await
}

/// Messages staged longer ago than `older_than` whose batch id starts with `batch_prefix`: their
/// writer evidently failed to publish them (crashed between commit and publish, or Kafka was
/// down), so a relay takes over. The prefix lets each writer relay only its own batches.
pub async fn fetch_leftovers(
    pool: &PgPool,
    batch_prefix: &str,
    older_than: Duration,
    limit: i64,
) -> Result<Vec<Staged>, sqlx::Error> {
    sqlx::query_as::<_, Staged>(
        "SELECT id, topic, message_key, message_id, payload FROM outbox
         WHERE created_at < now() - make_interval(secs => $1) AND starts_with(event_id, $2)
         ORDER BY id LIMIT $3",
    )
    .bind(older_than.as_secs_f64())
    .bind(batch_prefix)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Forgets messages Kafka acknowledged.
pub async fn delete(pool: &PgPool, ids: &[i64]) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await?
        .rows_affected())
}
