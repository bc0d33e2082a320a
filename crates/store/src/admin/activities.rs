//! Activities and leaderboards as admins see them. An activity counts (is *visible*) only while
//! it is recorded and its user is on a team and not deactivated.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{After, keyset_query};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActivityRow {
    pub id: Uuid,
    pub integration_id: Uuid,
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
    pub visible: bool,
    pub last_event_id: String,
    pub created_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str = "a.id, a.integration_id, a.workflow_id, a.object_type, a.record_id,
    a.crm_user_id, a.user_id, a.activity_type, a.value, a.activity_date, a.state, a.last_event_id,
    a.created_at,
    (a.state = 'recorded' AND a.user_id IS NOT NULL
       AND EXISTS (SELECT 1 FROM team_memberships m WHERE m.user_id = a.user_id)
       AND NOT EXISTS (SELECT 1 FROM users du WHERE du.id = a.user_id AND du.deactivated_at IS NOT NULL))
      AS visible";

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `Some(true)`: only activities whose CRM identity is not mapped to a user yet.
    pub unmapped: Option<bool>,
    pub user_id: Option<Uuid>,
    pub workflow_id: Option<Uuid>,
    pub activity_type: Option<String>,
    /// `recorded` or `retracted`.
    pub state: Option<String>,
    /// `activity_date >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `activity_date < to`.
    pub to: Option<DateTime<Utc>>,
}

pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    filter: &Filter,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM activities a
         WHERE a.company_id = $1 AND ($2::timestamptz IS NULL OR (a.created_at, a.id) > ($2, $3))
           AND ($5::boolean IS NULL OR $5 = (a.user_id IS NULL))
           AND ($6::uuid IS NULL OR a.user_id = $6)
           AND ($7::uuid IS NULL OR a.workflow_id = $7)
           AND ($8::text IS NULL OR a.activity_type = $8)
           AND ($9::text IS NULL OR a.state = $9)
           AND ($10::timestamptz IS NULL OR a.activity_date >= $10)
           AND ($11::timestamptz IS NULL OR a.activity_date < $11)
         ORDER BY a.created_at, a.id LIMIT $4"
    );
    keyset_query(&sql, company_id, after, limit)
        .bind(filter.unmapped)
        .bind(filter.user_id)
        .bind(filter.workflow_id)
        .bind(&filter.activity_type)
        .bind(&filter.state)
        .bind(filter.from)
        .bind(filter.to)
        .fetch_all(pool)
        .await
}

/// The user's recorded activities: the ones whose visibility follows the user's memberships.
pub async fn recorded_of_user(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    sqlx::query_as::<_, ActivityRow>(&format!(
        "SELECT {COLUMNS} FROM activities a WHERE a.user_id = $1 AND a.state = 'recorded'
         ORDER BY a.created_at, a.id"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The recorded activities of a workflow that belong to a user (what downstream knows about).
pub async fn recorded_of_workflow(
    conn: &mut PgConnection,
    company_id: Uuid,
    workflow_id: Uuid,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    sqlx::query_as::<_, ActivityRow>(&format!(
        "SELECT {COLUMNS} FROM activities a
         WHERE a.company_id = $1 AND a.workflow_id = $2 AND a.state = 'recorded' AND a.user_id IS NOT NULL
         ORDER BY a.created_at, a.id"
    ))
    .bind(company_id)
    .bind(workflow_id)
    .fetch_all(conn)
    .await
}

/// The recorded activities of an integration that belong to a user (what downstream knows).
pub async fn recorded_of_integration(
    conn: &mut PgConnection,
    company_id: Uuid,
    integration_id: Uuid,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    sqlx::query_as::<_, ActivityRow>(&format!(
        "SELECT {COLUMNS} FROM activities a
         WHERE a.company_id = $1 AND a.integration_id = $2 AND a.state = 'recorded' AND a.user_id IS NOT NULL
         ORDER BY a.created_at, a.id"
    ))
    .bind(company_id)
    .bind(integration_id)
    .fetch_all(conn)
    .await
}

/// Activities kept while the identity was unmapped now belong to the user (the provisioner's
/// `attach_unmapped`, for a mapping made by an admin).
pub async fn attach_unmapped(
    conn: &mut PgConnection,
    company_id: Uuid,
    integration_id: Uuid,
    crm_user_id: &str,
    user_id: Uuid,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    let ids: Vec<(Uuid,)> = sqlx::query_as(
        "UPDATE activities SET user_id = $4, updated_at = now()
         WHERE company_id = $1 AND integration_id = $2 AND crm_user_id = $3
           AND user_id IS NULL AND state = 'recorded'
         RETURNING id",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<Uuid> = ids.into_iter().map(|(id,)| id).collect();
    sqlx::query_as::<_, ActivityRow>(&format!(
        "SELECT {COLUMNS} FROM activities a WHERE a.id = ANY($1) ORDER BY a.created_at, a.id"
    ))
    .bind(&ids)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LeaderboardRow {
    pub rank: i64,
    pub user_id: Uuid,
    pub display_name: String,
    pub total: Decimal,
    pub count: i64,
    pub team_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LeaderboardQuery {
    pub activity_type: String,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only this team's members (and the team's totals); none: every user on any team.
    pub team_id: Option<Uuid>,
}

/// Totals and counts per user, highest total first; only users on a team count.
pub async fn leaderboard(
    pool: &PgPool,
    company_id: Uuid,
    q: &LeaderboardQuery,
    offset: i64,
    limit: i64,
) -> Result<Vec<LeaderboardRow>, sqlx::Error> {
    sqlx::query_as::<_, LeaderboardRow>(
        "WITH totals AS (
             SELECT a.user_id, sum(a.value) AS total, count(*) AS count
             FROM activities a
             -- Deactivated users are off leaderboards.
             JOIN users au ON au.id = a.user_id AND au.deactivated_at IS NULL
             WHERE a.company_id = $1 AND a.state = 'recorded' AND a.activity_type = $2
               AND a.user_id IS NOT NULL
               AND ($3::timestamptz IS NULL OR a.activity_date >= $3)
               AND ($4::timestamptz IS NULL OR a.activity_date < $4)
               AND EXISTS (SELECT 1 FROM team_memberships m WHERE m.user_id = a.user_id
                           AND ($5::uuid IS NULL OR m.team_id = $5))
             GROUP BY a.user_id
         )
         SELECT rank() OVER (ORDER BY t.total DESC) AS rank, t.user_id, u.display_name, t.total, t.count,
                ARRAY(SELECT tm.name FROM team_memberships m JOIN teams tm ON tm.id = m.team_id
                      WHERE m.user_id = t.user_id ORDER BY tm.name) AS team_names
         FROM totals t JOIN users u ON u.id = t.user_id
         ORDER BY t.total DESC, u.display_name, t.user_id
         OFFSET $6 LIMIT $7",
    )
    .bind(company_id)
    .bind(&q.activity_type)
    .bind(q.from)
    .bind(q.to)
    .bind(q.team_id)
    .bind(offset)
    .bind(limit)
    .fetch_all(pool)
    .await
}
