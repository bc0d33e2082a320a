//! Read models for people: the users and activities of a company (demo, tests, admin views).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    pub status: String,
    pub source: String,
    /// `integration_id:crm_user_id` pairs mapped to this user.
    pub crm_identities: Vec<String>,
    pub teams: Vec<String>,
}

pub async fn users(pool: &PgPool, company_id: Uuid) -> Result<Vec<UserView>, sqlx::Error> {
    sqlx::query_as::<_, UserView>(
        "SELECT u.id, u.display_name, u.email, u.status, u.source,
                COALESCE(ARRAY(SELECT i.integration_id::text || ':' || i.crm_user_id FROM crm_identities i
                               WHERE i.user_id = u.id ORDER BY 1), '{}') AS crm_identities,
                COALESCE(ARRAY(SELECT t.name FROM team_memberships m JOIN teams t ON t.id = m.team_id
                               WHERE m.user_id = u.id ORDER BY 1), '{}') AS teams
         FROM users u WHERE u.company_id = $1 ORDER BY u.created_at, u.id",
    )
    .bind(company_id)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ActivityView {
    pub id: Uuid,
    pub workflow_id: Uuid,
    pub object_type: String,
    pub record_id: String,
    pub crm_user_id: String,
    /// None: unmapped.
    pub user_id: Option<Uuid>,
    pub activity_type: String,
    pub value: Decimal,
    pub activity_date: DateTime<Utc>,
    pub state: String,
}

pub async fn activities(pool: &PgPool, company_id: Uuid) -> Result<Vec<ActivityView>, sqlx::Error> {
    sqlx::query_as::<_, ActivityView>(
        "SELECT id, workflow_id, object_type, record_id, crm_user_id, user_id, activity_type, value,
                activity_date, state
         FROM activities WHERE company_id = $1 ORDER BY created_at, id",
    )
    .bind(company_id)
    .fetch_all(pool)
    .await
}
