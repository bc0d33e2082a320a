//! Integrations as admins see them: never with their secrets, only whether one is set.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{After, by_id_query, keyset_query};

/// The CRMs an integration can connect (the `integrations.crm` check constraint).
pub const CRMS: [&str; 5] = ["salesforce", "hubspot", "pipedrive", "dynamics", "generic"];

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntegrationRow {
    pub id: Uuid,
    pub name: String,
    pub crm: String,
    pub crm_account_id: String,
    pub auto_sync_users: bool,
    /// Deactivate the platform user when the CRM says its user is inactive.
    pub deactivate_with_crm: bool,
    pub has_webhook_token: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, crm, crm_account_id, auto_sync_users, deactivate_with_crm,
    webhook_token_sha256 IS NOT NULL AS has_webhook_token, created_at, updated_at";

pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<IntegrationRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM integrations
         WHERE company_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
         ORDER BY created_at, id LIMIT $4"
    );
    keyset_query(&sql, company_id, after, limit)
        .fetch_all(pool)
        .await
}

pub async fn get<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    id: Uuid,
) -> Result<Option<IntegrationRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM integrations WHERE company_id = $1 AND id = $2");
    by_id_query(&sql, company_id, id).fetch_optional(db).await
}

#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub name: String,
    pub crm: String,
    pub crm_account_id: String,
    pub auto_sync_users: bool,
    pub webhook_token: Option<String>,
}

pub async fn create(
    conn: &mut PgConnection,
    company_id: Uuid,
    new: &NewIntegration,
) -> Result<IntegrationRow, sqlx::Error> {
    sqlx::query_as::<_, IntegrationRow>(&format!(
        "INSERT INTO integrations (id, company_id, name, crm, crm_account_id, auto_sync_users, webhook_token_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(company_id)
    .bind(&new.name)
    .bind(&new.crm)
    .bind(&new.crm_account_id)
    .bind(new.auto_sync_users)
    .bind(new.webhook_token.as_deref().map(crate::secrets::token_digest))
    .fetch_one(conn)
    .await
}

/// What to change; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct IntegrationChanges {
    pub name: Option<String>,
    pub crm_account_id: Option<String>,
    pub auto_sync_users: Option<bool>,
    pub deactivate_with_crm: Option<bool>,
    pub webhook_token: Option<String>,
}

pub async fn update(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    changes: &IntegrationChanges,
) -> Result<Option<IntegrationRow>, sqlx::Error> {
    sqlx::query_as::<_, IntegrationRow>(&format!(
        "UPDATE integrations SET
             name = COALESCE($3, name),
             crm_account_id = COALESCE($4, crm_account_id),
             auto_sync_users = COALESCE($5, auto_sync_users),
             webhook_token_sha256 = COALESCE($6, webhook_token_sha256),
             deactivate_with_crm = COALESCE($7, deactivate_with_crm),
             updated_at = now()
         WHERE company_id = $1 AND id = $2
         RETURNING {COLUMNS}"
    ))
    .bind(company_id)
    .bind(id)
    .bind(&changes.name)
    .bind(&changes.crm_account_id)
    .bind(changes.auto_sync_users)
    .bind(
        changes
            .webhook_token
            .as_deref()
            .map(crate::secrets::token_digest),
    )
    .bind(changes.deactivate_with_crm)
    .fetch_optional(conn)
    .await
}

/// What deleting an integration takes with it.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct DeletionCounts {
    pub workflows: i64,
    pub active_workflows: i64,
    pub crm_identities: i64,
    /// Activities waiting for their CRM user to be mapped.
    pub unmapped_activities: i64,
    /// Recorded activities (of mapped users): retracted downstream when the integration goes.
    pub recorded_activities: i64,
    pub has_credentials: bool,
    pub sync_jobs: i64,
}

pub async fn deletion_counts(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<DeletionCounts, sqlx::Error> {
    sqlx::query_as::<_, DeletionCounts>(
        "SELECT
             (SELECT count(*) FROM workflows WHERE integration_id = $1) AS workflows,
             (SELECT count(*) FROM workflows WHERE integration_id = $1 AND active) AS active_workflows,
             (SELECT count(*) FROM crm_identities WHERE integration_id = $1) AS crm_identities,
             (SELECT count(*) FROM activities WHERE integration_id = $1 AND state = 'recorded'
                 AND user_id IS NULL) AS unmapped_activities,
             (SELECT count(*) FROM activities WHERE integration_id = $1 AND state = 'recorded'
                 AND user_id IS NOT NULL) AS recorded_activities,
             EXISTS (SELECT 1 FROM integration_secrets WHERE integration_id = $1) AS has_credentials,
             (SELECT count(*) FROM sync_jobs WHERE integration_id = $1) AS sync_jobs",
    )
    .bind(id)
    .fetch_one(conn)
    .await
}

/// Deletes the integration and, through the schema's cascades, everything of it: workflows,
/// CRM identities, activities, credentials, sync jobs and status, record owners. Platform users
/// stay. The deletion is remembered (`deleted_integrations`), so that the evaluator forgets the
/// integration's record state. The caller locks the row first (`lock`), in the transaction it
/// announces the retracted activities in.
pub async fn delete(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "WITH gone AS (DELETE FROM integrations WHERE company_id = $1 AND id = $2 RETURNING id)
         INSERT INTO deleted_integrations (id, company_id)
         SELECT id, $1 FROM gone
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(company_id)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Locks the integration row for the rest of the transaction: a concurrent change waits.
pub async fn lock(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<Option<IntegrationRow>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM integrations WHERE company_id = $1 AND id = $2 FOR UPDATE");
    by_id_query(&sql, company_id, id).fetch_optional(conn).await
}
