//! Platform users and their CRM identities, as admins manage them.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::{After, by_id_query, keyset_query};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: Uuid,
    pub company_id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    pub status: String,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set while deactivated (off leaderboards).
    pub deactivated_at: Option<DateTime<Utc>>,
    /// `admin` or `crm`, while deactivated.
    pub deactivated_by: Option<String>,
    pub team_ids: Vec<Uuid>,
    pub team_names: Vec<String>,
    pub identity_integration_ids: Vec<Uuid>,
    pub identity_crm_user_ids: Vec<String>,
}

const COLUMNS: &str = "u.id, u.company_id, u.display_name, u.email, u.status, u.source, u.created_at, u.updated_at,
    u.deactivated_at, u.deactivated_by,
    ARRAY(SELECT t.id FROM team_memberships m JOIN teams t ON t.id = m.team_id
          WHERE m.user_id = u.id ORDER BY t.name, t.id) AS team_ids,
    ARRAY(SELECT t.name FROM team_memberships m JOIN teams t ON t.id = m.team_id
          WHERE m.user_id = u.id ORDER BY t.name, t.id) AS team_names,
    ARRAY(SELECT i.integration_id FROM crm_identities i
          WHERE i.user_id = u.id ORDER BY i.integration_id, i.crm_user_id) AS identity_integration_ids,
    ARRAY(SELECT i.crm_user_id FROM crm_identities i
          WHERE i.user_id = u.id ORDER BY i.integration_id, i.crm_user_id) AS identity_crm_user_ids";

#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// `pending` or `active` (deactivated users excluded), or `inactive` (only those).
    pub status: Option<String>,
    /// `auto_sync` or `manual`.
    pub source: Option<String>,
    /// `Some(false)`: only users on no team.
    pub on_team: Option<bool>,
    pub team_id: Option<Uuid>,
    /// Case-insensitive substring of the name or email.
    pub search: Option<String>,
}

pub async fn list(
    pool: &PgPool,
    company_id: Uuid,
    filter: &Filter,
    after: Option<After>,
    limit: i64,
) -> Result<Vec<UserRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM users u
         WHERE u.company_id = $1 AND ($2::timestamptz IS NULL OR (u.created_at, u.id) > ($2, $3))
           AND ($5::text IS NULL OR ($5 = 'inactive' AND u.deactivated_at IS NOT NULL)
                OR (u.status = $5 AND u.deactivated_at IS NULL))
           AND ($6::text IS NULL OR u.source = $6)
           AND ($7::boolean IS NULL OR $7 = EXISTS (SELECT 1 FROM team_memberships m WHERE m.user_id = u.id))
           AND ($8::uuid IS NULL OR EXISTS (SELECT 1 FROM team_memberships m WHERE m.user_id = u.id AND m.team_id = $8))
           AND ($9::text IS NULL OR strpos(lower(u.display_name || ' ' || coalesce(u.email, '')), lower($9)) > 0)
         ORDER BY u.created_at, u.id LIMIT $4"
    );
    keyset_query(&sql, company_id, after, limit)
        .bind(&filter.status)
        .bind(&filter.source)
        .bind(filter.on_team)
        .bind(filter.team_id)
        .bind(&filter.search)
        .fetch_all(pool)
        .await
}

pub async fn get<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    id: Uuid,
) -> Result<Option<UserRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM users u WHERE u.company_id = $1 AND u.id = $2");
    by_id_query(&sql, company_id, id).fetch_optional(db).await
}

/// A user an admin creates by hand: pending until placed on a team, like an auto-synced one.
pub async fn create_manual(
    conn: &mut PgConnection,
    company_id: Uuid,
    display_name: &str,
    email: Option<&str>,
) -> Result<UserRow, sqlx::Error> {
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO users (id, company_id, display_name, email, status, source)
         VALUES ($1, $2, $3, $4, 'pending', 'manual')",
    )
    .bind(id)
    .bind(company_id)
    .bind(display_name)
    .bind(email)
    .execute(&mut *conn)
    .await?;
    get(conn, company_id, id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Locks the user row for the rest of the transaction and returns its status. `FOR UPDATE`
/// conflicts with the key-share lock a provisioner takes when it attaches an activity to the
/// user, so a membership change and a concurrently recorded activity are serialized and the
/// activity's visibility is computed from the committed membership.
pub async fn lock(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT status FROM users WHERE company_id = $1 AND id = $2 FOR UPDATE")
            .bind(company_id)
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(s,)| s))
}

pub async fn activate(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET status = 'active', updated_at = now() WHERE id = $1 AND status <> 'active'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the user's recorded activities count on leaderboards: the user is on a team and not
/// deactivated.
pub async fn counts_on_leaderboards(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let (on,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM team_memberships WHERE user_id = $1)
            AND NOT EXISTS (SELECT 1 FROM users WHERE id = $1 AND deactivated_at IS NOT NULL)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?;
    Ok(on)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdentityRow {
    pub integration_id: Uuid,
    pub crm_user_id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub user_id: Option<Uuid>,
    pub unmapped_activities: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct IdentityFilter {
    pub mapped: Option<bool>,
    pub integration_id: Option<Uuid>,
}

/// Where a page of CRM identities starts: after this identity, in `(created_at,
/// integration_id, crm_user_id)` order.
#[derive(Debug, Clone)]
pub struct IdentityAfter {
    pub created_at: DateTime<Utc>,
    pub integration_id: Uuid,
    pub crm_user_id: String,
}

/// CRM identities in `(created_at, integration_id, crm_user_id)` order, after `after`: a page
/// stays where it was while identities are mapped (leaving `?mapped=false`) or added.
pub async fn list_identities(
    pool: &PgPool,
    company_id: Uuid,
    filter: &IdentityFilter,
    after: Option<&IdentityAfter>,
    limit: i64,
) -> Result<Vec<IdentityRow>, sqlx::Error> {
    sqlx::query_as::<_, IdentityRow>(
        "SELECT i.integration_id, i.crm_user_id, i.display_name, i.email, i.user_id, i.created_at,
                (SELECT count(*) FROM activities a WHERE a.integration_id = i.integration_id
                   AND a.crm_user_id = i.crm_user_id AND a.user_id IS NULL AND a.state = 'recorded')
                  AS unmapped_activities
         FROM crm_identities i
         WHERE i.company_id = $1
           AND ($2::boolean IS NULL OR $2 = (i.user_id IS NOT NULL))
           AND ($3::uuid IS NULL OR i.integration_id = $3)
           AND ($4::timestamptz IS NULL
                OR (i.created_at, i.integration_id, i.crm_user_id) > ($4, $5, $6))
         ORDER BY i.created_at, i.integration_id, i.crm_user_id LIMIT $7",
    )
    .bind(company_id)
    .bind(filter.mapped)
    .bind(filter.integration_id)
    .bind(after.map(|a| a.created_at))
    .bind(after.map(|a| a.integration_id))
    .bind(after.map(|a| a.crm_user_id.as_str()))
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOutcome {
    /// The identity now names the user (or already did).
    Mapped,
    /// The identity names another user; an admin must not silently move its activities.
    MappedToOther(Uuid),
    /// The integration is not one of the company's.
    UnknownIntegration,
}

/// Maps the CRM identity to the user, creating the identity if the CRM user has not been seen
/// yet. The identity row is locked like the provisioner locks it when it provisions, so a
/// concurrent auto-sync of the same CRM user either sees this mapping or is seen by it.
pub async fn map_identity(
    conn: &mut PgConnection,
    company_id: Uuid,
    integration_id: Uuid,
    crm_user_id: &str,
    user_id: Uuid,
) -> Result<MapOutcome, sqlx::Error> {
    let known: Option<(Uuid,)> =
        sqlx::query_as("SELECT id FROM integrations WHERE company_id = $1 AND id = $2")
            .bind(company_id)
            .bind(integration_id)
            .fetch_optional(&mut *conn)
            .await?;
    if known.is_none() {
        return Ok(MapOutcome::UnknownIntegration);
    }
    sqlx::query(
        "INSERT INTO crm_identities (company_id, integration_id, crm_user_id) VALUES ($1, $2, $3)
         ON CONFLICT (integration_id, crm_user_id) DO NOTHING",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .execute(&mut *conn)
    .await?;
    let (current,): (Option<Uuid>,) = sqlx::query_as(
        "SELECT user_id FROM crm_identities WHERE integration_id = $1 AND crm_user_id = $2 FOR UPDATE",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .fetch_one(&mut *conn)
    .await?;
    match current {
        Some(existing) if existing == user_id => Ok(MapOutcome::Mapped),
        Some(other) => Ok(MapOutcome::MappedToOther(other)),
        None => {
            // Mapped by hand again: an earlier unmapping no longer holds auto-sync off.
            sqlx::query(
                "UPDATE crm_identities SET user_id = $3, unmapped_at = NULL, updated_at = now()
                 WHERE integration_id = $1 AND crm_user_id = $2",
            )
            .bind(integration_id)
            .bind(crm_user_id)
            .bind(user_id)
            .execute(conn)
            .await?;
            Ok(MapOutcome::Mapped)
        }
    }
}
