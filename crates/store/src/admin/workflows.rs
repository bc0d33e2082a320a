//! Workflows as admins manage them. Specs are validated by the caller with the evaluator's own
//! rules (`WorkflowSpec::validate`) before they reach these functions.

use chrono::{DateTime, Utc};
use crm_sync_workflow::WorkflowSpec;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{After, by_id_query, keyset_query};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkflowRow {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub name: String,
    pub object_type: String,
    pub triggers: Vec<String>,
    pub conditions: serde_json::Value,
    pub user_field: String,
    pub value_field: Option<String>,
    pub date_field: Option<String>,
    pub activity_type: String,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, integration_id, name, object_type, triggers, conditions, user_field,
    value_field, date_field, activity_type, active, created_at, updated_at";

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub integration_id: Option<Uuid>,
    pub active: Option<bool>,
}

pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    filter: &Filter,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<WorkflowRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM workflows
         WHERE company_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
           AND ($5::uuid IS NULL OR integration_id = $5) AND ($6::boolean IS NULL OR active = $6)
         ORDER BY created_at, id LIMIT $4"
    );
    keyset_query(&sql, company_id, after, limit)
        .bind(filter.integration_id)
        .bind(filter.active)
        .fetch_all(pool)
        .await
}

pub async fn get<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    id: Uuid,
) -> Result<Option<WorkflowRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM workflows WHERE company_id = $1 AND id = $2");
    by_id_query(&sql, company_id, id).fetch_optional(db).await
}

fn triggers(spec: &WorkflowSpec) -> Vec<&'static str> {
    spec.triggers.iter().map(|t| t.as_str()).collect()
}

/// `None` when the integration is not one of the company's.
pub async fn create(
    conn: &mut PgConnection,
    company_id: Uuid,
    integration_id: Uuid,
    spec: &WorkflowSpec,
    active: bool,
) -> Result<Option<WorkflowRow>, sqlx::Error> {
    sqlx::query_as::<_, WorkflowRow>(&format!(
        "INSERT INTO workflows (id, company_id, integration_id, name, object_type, triggers, conditions,
                                user_field, value_field, date_field, activity_type, active)
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
         WHERE EXISTS (SELECT 1 FROM integrations WHERE id = $3 AND company_id = $2)
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(company_id)
    .bind(integration_id)
    .bind(&spec.name)
    .bind(&spec.object_type)
    .bind(triggers(spec))
    .bind(spec.conditions.to_json())
    .bind(&spec.user_field)
    .bind(&spec.value_field)
    .bind(&spec.date_field)
    .bind(&spec.activity_type)
    .bind(active)
    .fetch_optional(conn)
    .await
}

pub async fn update(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    spec: &WorkflowSpec,
    active: bool,
) -> Result<Option<WorkflowRow>, sqlx::Error> {
    sqlx::query_as::<_, WorkflowRow>(&format!(
        "UPDATE workflows SET name = $3, object_type = $4, triggers = $5, conditions = $6,
             user_field = $7, value_field = $8, date_field = $9, activity_type = $10, active = $11,
             updated_at = now()
         WHERE company_id = $1 AND id = $2
         RETURNING {COLUMNS}"
    ))
    .bind(company_id)
    .bind(id)
    .bind(&spec.name)
    .bind(&spec.object_type)
    .bind(triggers(spec))
    .bind(spec.conditions.to_json())
    .bind(&spec.user_field)
    .bind(&spec.value_field)
    .bind(&spec.date_field)
    .bind(&spec.activity_type)
    .bind(active)
    .fetch_optional(conn)
    .await
}

pub async fn set_active(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    active: bool,
) -> Result<Option<WorkflowRow>, sqlx::Error> {
    sqlx::query_as::<_, WorkflowRow>(&format!(
        "UPDATE workflows SET active = $3, updated_at = now() WHERE company_id = $1 AND id = $2
         RETURNING {COLUMNS}"
    ))
    .bind(company_id)
    .bind(id)
    .bind(active)
    .fetch_optional(conn)
    .await
}

/// Deletes the workflow (and, by the schema's cascade, its activities). Returns whether it existed.
pub async fn delete(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM workflows WHERE company_id = $1 AND id = $2")
            .bind(company_id)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}
