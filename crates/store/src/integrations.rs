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

/// What the database knows of an integration id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Live,
    /// Recorded as deleted (by its deletion, or by an operator).
    Deleted,
    /// Neither: deleted before deletions were recorded, or not of this database at all.
    Unknown,
}

/// The standing of each of `ids`, in one query.
pub async fn standing(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<(Uuid, Standing)>, sqlx::Error> {
    let rows: Vec<(Uuid, bool, bool)> = sqlx::query_as(
        "SELECT x.id,
                EXISTS (SELECT 1 FROM deleted_integrations d WHERE d.id = x.id),
                EXISTS (SELECT 1 FROM integrations i WHERE i.id = x.id)
         FROM unnest($1::uuid[]) AS x(id)",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, deleted, live)| {
            let standing = match (deleted, live) {
                (true, _) => Standing::Deleted,
                (false, true) => Standing::Live,
                (false, false) => Standing::Unknown,
            };
            (id, standing)
        })
        .collect())
}

/// What recording an integration as deleted did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Now,
    Already,
    /// The integration exists: it is deleted through the admin API, which records it.
    Exists,
}

/// Records as deleted an integration whose rows are already gone (deleted before deletions
/// were recorded), so that the evaluators forget its record state; its company is not known.
pub async fn record_deleted(pool: &PgPool, id: Uuid) -> Result<Recorded, sqlx::Error> {
    let (exists, inserted): (bool, bool) = sqlx::query_as(
        "WITH live AS (SELECT 1 FROM integrations WHERE id = $1),
              recorded AS (
                  INSERT INTO deleted_integrations (id, company_id)
                  SELECT $1::uuid, NULL WHERE NOT EXISTS (SELECT 1 FROM live)
                  ON CONFLICT (id) DO NOTHING
                  RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM live), EXISTS (SELECT 1 FROM recorded)",
    )
    .bind(id)
    .fetch_one(pool)
    .await?;
    Ok(match (exists, inserted) {
        (true, _) => Recorded::Exists,
        (false, true) => Recorded::Now,
        (false, false) => Recorded::Already,
    })
}
