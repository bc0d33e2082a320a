//! The statements on the transactional outbox table. Every writer (the provisioner and admin-api)
//! goes through `crm_sync_outbox::Outbox`, which stages messages in the same transaction as the
//! effects they announce, publishes them after commit, deletes them once Kafka acknowledged them,
//! and relays rows a writer left behind. This crate does not talk to Kafka.

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
/// caller's transaction. Returns the row's id, for [`delete`] once the message is published.
pub async fn stage(
    conn: &mut PgConnection,
    batch_id: &str,
    message: &Pending,
) -> Result<i64, sqlx::Error> {
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO outbox (event_id, topic, message_key, message_id, payload)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(batch_id)
    .bind(&message.topic)
    .bind(&message.key)
    .bind(&message.message_id)
    .bind(&message.payload)
    .fetch_one(conn)
    .await?;
    Ok(id)
}

/// Stages many messages, each under its own batch id, in one statement inside the caller's
/// transaction (one round trip instead of one per message). Returns the rows' ids, for
/// [`delete`] once the caller published the messages it still holds in memory: re-reading what
/// was just written would only cost another round trip.
pub async fn stage_all(
    conn: &mut PgConnection,
    messages: &[(&str, &Pending)],
) -> Result<Vec<i64>, sqlx::Error> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    let mut batch_ids = Vec::with_capacity(messages.len());
    let mut topics = Vec::with_capacity(messages.len());
    let mut keys = Vec::with_capacity(messages.len());
    let mut message_ids = Vec::with_capacity(messages.len());
    let mut payloads = Vec::with_capacity(messages.len());
    for (batch_id, m) in messages {
        batch_ids.push(*batch_id);
        topics.push(m.topic.as_str());
        keys.push(m.key.as_str());
        message_ids.push(m.message_id.as_str());
        payloads.push(m.payload.as_slice());
    }
    let ids: Vec<(i64,)> = sqlx::query_as(
        "INSERT INTO outbox (event_id, topic, message_key, message_id, payload)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[])
         RETURNING id",
    )
    .bind(&batch_ids)
    .bind(&topics)
    .bind(&keys)
    .bind(&message_ids)
    .bind(&payloads)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(|(id,)| id).collect())
}

/// What any of the given changes staged, in staging order.
pub async fn fetch_batches(pool: &PgPool, batch_ids: &[&str]) -> Result<Vec<Staged>, sqlx::Error> {
    if batch_ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as::<_, Staged>(
        "SELECT id, topic, message_key, message_id, payload FROM outbox
         WHERE event_id = ANY($1) ORDER BY id",
    )
    .bind(batch_ids)
    .fetch_all(pool)
    .await
}

/// Messages staged longer ago than `older_than` whose batch id starts with `batch_prefix` (an
/// empty prefix: every writer's): their writer evidently failed to publish them (crashed between
/// commit and publish, or Kafka was down), so a relay takes over. The prefix lets a writer relay
/// only its own batches.
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

/// Forgets messages Kafka acknowledged, through the primary key whatever the table's statistics
/// (see the migration that made `outbox_delete`). Its commit does not wait for the disk (a lost
/// delete only publishes again), so it must run in a transaction of its own, never inside one
/// whose writes must be durable.
pub async fn delete<'e>(db: impl sqlx::PgExecutor<'e>, ids: &[i64]) -> Result<u64, sqlx::Error> {
    if ids.is_empty() {
        return Ok(0);
    }
    let deleted: i64 = sqlx::query_scalar("SELECT outbox_delete($1)")
        .bind(ids)
        .fetch_one(db)
        .await?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}
