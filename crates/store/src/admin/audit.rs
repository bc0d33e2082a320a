//! The audit log: who changed what, when. Written in the same transaction as the change.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Actor {
    pub token_id: Option<Uuid>,
    pub name: String,
}

pub async fn record(
    conn: &mut PgConnection,
    company_id: Uuid,
    actor: &Actor,
    action: &str,
    target_type: &str,
    target_id: &str,
    details: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (company_id, token_id, actor, action, target_type, target_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(company_id)
    .bind(actor.token_id)
    .bind(&actor.name)
    .bind(action)
    .bind(target_type)
    .bind(target_id)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Entry {
    pub id: i64,
    pub token_id: Option<Uuid>,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

/// Newest first; a page continues below the id of the previous page's last entry. Changes to
/// admin tokens only `with_tokens` (who holds access is for admins to see).
pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    before_id: Option<i64>,
    limit: i64,
    with_tokens: bool,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as::<_, Entry>(
        "SELECT id, token_id, actor, action, target_type, target_id, details, at FROM audit_log
         WHERE company_id = $1 AND ($2::bigint IS NULL OR id < $2)
           AND ($4 OR target_type <> 'admin_token')
         ORDER BY id DESC LIMIT $3",
    )
    .bind(company_id)
    .bind(before_id)
    .bind(limit)
    .bind(with_tokens)
    .fetch_all(pool)
    .await
}
