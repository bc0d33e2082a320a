//! The people lifecycle as admins drive it: renaming, deactivating and reactivating a user,
//! unmapping a CRM identity, and merging a duplicate account into the one kept. Each function
//! runs inside the caller's transaction, which also stages the messages announcing the change.

use sqlx::PgConnection;
use uuid::Uuid;

use super::activities::ActivityRow;

/// What a rename changes; `None` keeps the stored value, `Some(None)` clears the email.
#[derive(Debug, Clone, Default)]
pub struct Rename {
    pub display_name: Option<String>,
    pub email: Option<Option<String>>,
}

/// Renames the user and/or sets their email. An email an admin sets is the company's own word
/// for the person, so it is a target for linking CRM users by email from then on.
pub async fn rename(
    conn: &mut PgConnection,
    company_id: Uuid,
    id: Uuid,
    change: &Rename,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET
             display_name = COALESCE($3, display_name),
             email = CASE WHEN $4 THEN $5 ELSE email END,
             email_from_payload = CASE WHEN $4 THEN false ELSE email_from_payload END,
             updated_at = now()
         WHERE company_id = $1 AND id = $2",
    )
    .bind(company_id)
    .bind(id)
    .bind(&change.display_name)
    .bind(change.email.is_some())
    .bind(change.email.clone().flatten())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Who deactivated a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeactivatedBy {
    /// An admin, by hand.
    Admin,
    /// The CRM said its user is inactive.
    Crm,
}

impl DeactivatedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            DeactivatedBy::Admin => "admin",
            DeactivatedBy::Crm => "crm",
        }
    }
}

/// Deactivates the user; false when it already was (nothing changes then).
pub async fn deactivate(
    conn: &mut PgConnection,
    id: Uuid,
    by: DeactivatedBy,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET deactivated_at = now(), deactivated_by = $2, updated_at = now()
         WHERE id = $1 AND deactivated_at IS NULL",
    )
    .bind(id)
    .bind(by.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Reactivates the user; false when it was not deactivated.
pub async fn reactivate(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE users SET deactivated_at = NULL, deactivated_by = NULL, updated_at = now()
         WHERE id = $1 AND deactivated_at IS NOT NULL",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Unmaps the user's CRM identity: its activities become unmapped again (returned as they were,
/// with the user, so that they can be announced hidden), and auto-sync leaves the identity alone
/// until an admin maps it again. None when the identity is not mapped to this user.
pub async fn unmap(
    conn: &mut PgConnection,
    company_id: Uuid,
    user_id: Uuid,
    integration_id: Uuid,
    crm_user_id: &str,
) -> Result<Option<Vec<ActivityRow>>, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE crm_identities SET user_id = NULL, unmapped_at = now(), updated_at = now()
         WHERE company_id = $1 AND user_id = $2 AND integration_id = $3 AND crm_user_id = $4",
    )
    .bind(company_id)
    .bind(user_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let detached: Vec<ActivityRow> = sqlx::query_as(&format!(
        "SELECT {} FROM activities a
         WHERE a.user_id = $1 AND a.integration_id = $2 AND a.crm_user_id = $3 AND a.state = 'recorded'
         ORDER BY a.created_at, a.id",
        super::activities::COLUMNS
    ))
    .bind(user_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE activities SET user_id = NULL, updated_at = now()
         WHERE user_id = $1 AND integration_id = $2 AND crm_user_id = $3",
    )
    .bind(user_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .execute(conn)
    .await?;
    Ok(Some(detached))
}

/// What a merge moved onto the kept user.
#[derive(Debug, Clone)]
pub struct Merged {
    /// `(integration_id, crm_user_id)` of the identities moved.
    pub identities: Vec<(Uuid, String)>,
    /// How many activities moved (recorded or retracted).
    pub activities: u64,
    /// How many team memberships the kept user gained.
    pub teams_joined: u64,
}

/// Moves everything of `duplicate` onto `kept` (CRM identities, activities, team memberships,
/// the email if the kept user has none) and deletes the duplicate. Both users must be locked by
/// the caller.
pub async fn merge(
    conn: &mut PgConnection,
    company_id: Uuid,
    kept: Uuid,
    duplicate: Uuid,
) -> Result<Merged, sqlx::Error> {
    let identities: Vec<(Uuid, String)> = sqlx::query_as(
        "UPDATE crm_identities SET user_id = $3, unmapped_at = NULL, updated_at = now()
         WHERE company_id = $1 AND user_id = $2 RETURNING integration_id, crm_user_id",
    )
    .bind(company_id)
    .bind(duplicate)
    .bind(kept)
    .fetch_all(&mut *conn)
    .await?;
    let activities = sqlx::query(
        "UPDATE activities SET user_id = $3, updated_at = now() WHERE company_id = $1 AND user_id = $2",
    )
    .bind(company_id)
    .bind(duplicate)
    .bind(kept)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let teams_joined = sqlx::query(
        "INSERT INTO team_memberships (team_id, user_id, company_id)
         SELECT team_id, $3, company_id FROM team_memberships WHERE company_id = $1 AND user_id = $2
         ON CONFLICT DO NOTHING",
    )
    .bind(company_id)
    .bind(duplicate)
    .bind(kept)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let (email, email_from_payload): (Option<String>, bool) = sqlx::query_as(
        "DELETE FROM users WHERE company_id = $1 AND id = $2 RETURNING email, email_from_payload",
    )
    .bind(company_id)
    .bind(duplicate)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE users SET
             email = COALESCE(email, $2),
             email_from_payload = CASE WHEN email IS NULL AND $2 IS NOT NULL THEN $3 ELSE email_from_payload END,
             status = CASE WHEN EXISTS (SELECT 1 FROM team_memberships m WHERE m.user_id = $1)
                           THEN 'active' ELSE status END,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(kept)
    .bind(email)
    .bind(email_from_payload)
    .execute(conn)
    .await?;
    Ok(Merged {
        identities,
        activities,
        teams_joined,
    })
}
