//! Integrations as ingest and the provisioner see them.

use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Integration {
    pub id: Uuid,
    pub company_id: Uuid,
    pub name: String,
    pub crm: String,
    pub crm_account_id: String,
    pub auto_sync_users: bool,
    pub webhook_token_sha256: Option<Vec<u8>>,
}

impl Integration {
    /// Constant-time check of a presented webhook token; an integration without one accepts none.
    pub fn accepts_token(&self, presented: &str) -> bool {
        self.webhook_token_sha256
            .as_deref()
            .is_some_and(|digest| crate::secrets::token_matches(digest, presented))
    }
}

pub async fn find(pool: &PgPool, id: Uuid) -> Result<Option<Integration>, sqlx::Error> {
    sqlx::query_as::<_, Integration>(
        "SELECT id, company_id, name, crm, crm_account_id, auto_sync_users, webhook_token_sha256
         FROM integrations WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Which of `ids` are integrations that were deleted.
pub async fn deleted(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM deleted_integrations WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await
}
