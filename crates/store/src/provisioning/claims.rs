//! Deduplication: an outcome's effects are committed together with its `processed_events` row,
//! so a replayed or duplicate outcome finds its row and changes nothing.

use std::collections::HashSet;

use sqlx::PgConnection;

/// Claims the given event ids for `consumer` in the caller's transaction. Returns those seen for
/// the first time (a duplicate within `event_ids` is returned once).
pub async fn claim(
    conn: &mut PgConnection,
    consumer: &str,
    event_ids: &[&str],
) -> Result<HashSet<String>, sqlx::Error> {
    let first_time: Vec<(String,)> = sqlx::query_as(
        "INSERT INTO processed_events (consumer, event_id)
         SELECT $1, e FROM UNNEST($2::text[]) AS e
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(consumer)
    .bind(event_ids)
    .fetch_all(conn)
    .await?;
    Ok(first_time.into_iter().map(|(id,)| id).collect())
}
