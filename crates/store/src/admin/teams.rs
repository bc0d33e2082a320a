//! Teams and memberships. Only users on a team are visualized on the platform: the callers
//! that change memberships forward the resulting visibility changes.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{After, by_id_query, keyset_query};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamRow {
    pub id: Uuid,
    pub name: String,
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "t.id, t.name, t.created_at,
    (SELECT count(*) FROM team_memberships m WHERE m.team_id = t.id) AS member_count";

pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<TeamRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM teams t
         WHERE t.company_id = $1 AND ($2::timestamptz IS NULL OR (t.created_at, t.id) > ($2, $3))
         ORDER BY t.created_at, t.id LIMIT $4"
    );
    keyset_query(&sql, company_id, after, limit)
        .fetch_all(pool)
        .await
}

pub async fn get<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    id: Uuid,
) -> Result<Option<TeamRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM teams t WHERE t.company_id = $1 AND t.id = $2");
    by_id_query(&sql, company_id, id).fetch_optional(db).await
}

pub async fn create(
    conn: &mut PgConnection,
    company_id: Uuid,
    name: &str,
) -> Result<TeamRow, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, company_id, name) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(company_id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    get(conn, company_id, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

pub async fn rename(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    name: &str,
) -> Result<Option<TeamRow>, sqlx::Error> {
    let done = sqlx::query("UPDATE teams SET name = $3 WHERE company_id = $1 AND id = $2")
        .bind(company_id)
        .bind(id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get(conn, company_id, id).await
}

/// The team's members, locked (`FOR UPDATE`) so their visibility can be recomputed safely.
pub async fn lock_members(
    conn: &mut PgConnection,
    company_id: Uuid,
    team_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT u.id FROM users u JOIN team_memberships m ON m.user_id = u.id
         WHERE m.team_id = $2 AND u.company_id = $1 ORDER BY u.id FOR UPDATE OF u",
    )
    .bind(company_id)
    .bind(team_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Deletes the team and its memberships. Returns whether it existed.
pub async fn delete(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM teams WHERE company_id = $1 AND id = $2")
            .bind(company_id)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Places the user on the team; `false` when it already was.
pub async fn add_member(
    conn: &mut PgConnection,
    company_id: Uuid,
    team_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "INSERT INTO team_memberships (team_id, user_id, company_id) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(team_id)
    .bind(user_id)
    .bind(company_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Removes the user from the team; `false` when it was not on it.
pub async fn remove_member(
    conn: &mut PgConnection,
    company_id: Uuid,
    team_id: Uuid,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM team_memberships WHERE company_id = $1 AND team_id = $2 AND user_id = $3",
    )
    .bind(company_id)
    .bind(team_id)
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}
