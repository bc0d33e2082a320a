//! Idempotent upserts of companies, integrations, workflows and teams (`crm-sync apply`, tests).
//! Ids are derived from natural keys unless given, so applying the same file twice changes nothing.

use crm_sync_workflow::WorkflowSpec;
use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// Namespace for crm-sync's name-derived UUIDs (v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2c1a_7d3b_4e0f_9a52_c3d4_e5f6_0718);

/// A stable id from a kind and natural-key parts, e.g. `stable_id("integration", &[company, name])`.
pub fn stable_id(kind: &str, parts: &[&str]) -> Uuid {
    let mut name = String::from(kind);
    for p in parts {
        name.push('\u{1f}');
        name.push_str(p);
    }
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

pub async fn upsert_company(
    pool: &PgPool,
    id: Option<Uuid>,
    slug: &str,
    name: &str,
) -> Result<Uuid, StoreError> {
    let id = id.unwrap_or_else(|| stable_id("company", &[slug]));
    let (id,): (Uuid,) = sqlx::query_as(
        "INSERT INTO companies (id, slug, name) VALUES ($1, $2, $3)
         ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name
         RETURNING id",
    )
    .bind(id)
    .bind(slug)
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

#[derive(Debug, Clone)]
pub struct IntegrationInput {
    pub id: Option<Uuid>,
    pub company_id: Uuid,
    pub name: String,
    pub crm: String,
    pub crm_account_id: String,
    pub auto_sync_users: bool,
    /// None keeps the stored token.
    pub webhook_token: Option<String>,
}

pub async fn upsert_integration(
    pool: &PgPool,
    input: &IntegrationInput,
) -> Result<Uuid, StoreError> {
    const CRMS: [&str; 5] = ["salesforce", "hubspot", "pipedrive", "dynamics", "generic"];
    if !CRMS.contains(&input.crm.as_str()) {
        return Err(StoreError::Invalid(format!(
            "crm: unknown CRM `{}` (expected one of {})",
            input.crm,
            CRMS.join(", ")
        )));
    }
    let id = input
        .id
        .unwrap_or_else(|| stable_id("integration", &[&input.company_id.to_string(), &input.name]));
    let digest = input
        .webhook_token
        .as_deref()
        .map(crate::secrets::token_digest);
    let (id,): (Uuid,) = sqlx::query_as(
        "INSERT INTO integrations (id, company_id, name, crm, crm_account_id, auto_sync_users, webhook_token_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (company_id, name) DO UPDATE SET
             crm = EXCLUDED.crm,
             crm_account_id = EXCLUDED.crm_account_id,
             auto_sync_users = EXCLUDED.auto_sync_users,
             webhook_token_sha256 = COALESCE(EXCLUDED.webhook_token_sha256, integrations.webhook_token_sha256),
             updated_at = now()
         RETURNING id",
    )
    .bind(id)
    .bind(input.company_id)
    .bind(&input.name)
    .bind(&input.crm)
    .bind(&input.crm_account_id)
    .bind(input.auto_sync_users)
    .bind(digest)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

pub async fn set_auto_sync_users(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    on: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE integrations SET auto_sync_users = $3, updated_at = now() WHERE company_id = $1 AND id = $2",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(on)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn upsert_workflow(
    pool: &PgPool,
    id: Option<Uuid>,
    company_id: Uuid,
    integration_id: Uuid,
    spec: &WorkflowSpec,
    active: bool,
) -> Result<Uuid, StoreError> {
    spec.validate()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let id =
        id.unwrap_or_else(|| stable_id("workflow", &[&integration_id.to_string(), &spec.name]));
    let triggers: Vec<&str> = spec.triggers.iter().map(|t| t.as_str()).collect();
    let (id,): (Uuid,) = sqlx::query_as(
        "INSERT INTO workflows (id, company_id, integration_id, name, object_type, triggers, conditions,
                                user_field, value_field, date_field, activity_type, active)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
         WHERE EXISTS (SELECT 1 FROM integrations WHERE id = $3 AND company_id = $2)
         ON CONFLICT (integration_id, name) DO UPDATE SET
             object_type = EXCLUDED.object_type, triggers = EXCLUDED.triggers,
             conditions = EXCLUDED.conditions, user_field = EXCLUDED.user_field,
             value_field = EXCLUDED.value_field, date_field = EXCLUDED.date_field,
             activity_type = EXCLUDED.activity_type, active = EXCLUDED.active, updated_at = now()
         RETURNING id",
    )
    .bind(id)
    .bind(company_id)
    .bind(integration_id)
    .bind(&spec.name)
    .bind(&spec.object_type)
    .bind(&triggers)
    .bind(spec.conditions.to_json())
    .bind(&spec.user_field)
    .bind(&spec.value_field)
    .bind(&spec.date_field)
    .bind(&spec.activity_type)
    .bind(active)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| StoreError::Invalid(format!("integration {integration_id} does not belong to company {company_id}")))?;
    Ok(id)
}

pub async fn set_workflow_active(
    pool: &PgPool,
    company_id: Uuid,
    workflow_id: Uuid,
    active: bool,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE workflows SET active = $3, updated_at = now() WHERE company_id = $1 AND id = $2",
    )
    .bind(company_id)
    .bind(workflow_id)
    .bind(active)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn upsert_team(
    pool: &PgPool,
    id: Option<Uuid>,
    company_id: Uuid,
    name: &str,
) -> Result<Uuid, StoreError> {
    let id = id.unwrap_or_else(|| stable_id("team", &[&company_id.to_string(), name]));
    let (id,): (Uuid,) = sqlx::query_as(
        "INSERT INTO teams (id, company_id, name) VALUES ($1, $2, $3)
         ON CONFLICT (company_id, name) DO UPDATE SET name = EXCLUDED.name
         RETURNING id",
    )
    .bind(id)
    .bind(company_id)
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(id)
}
