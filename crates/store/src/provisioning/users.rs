//! Platform users as the provisioner creates, links and announces them.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

/// The account a CRM identity whose directory email is `email` is linked to instead of getting
/// its own: one whose email an admin or a CRM directory gave, never one a payload claimed.
/// Returns its id and status.
pub async fn account_to_link(
    conn: &mut PgConnection,
    company_id: Uuid,
    email: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, status FROM users
         WHERE company_id = $1 AND lower(email) = lower($2) AND NOT email_from_payload",
    )
    .bind(company_id)
    .bind(email)
    .fetch_optional(conn)
    .await
}

/// Whether an account of the company has this email already (one account per email).
pub async fn email_taken(
    conn: &mut PgConnection,
    company_id: Uuid,
    email: &str,
) -> Result<bool, sqlx::Error> {
    let (taken,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM users WHERE company_id = $1 AND lower(email) = lower($2))",
    )
    .bind(company_id)
    .bind(email)
    .fetch_one(conn)
    .await?;
    Ok(taken)
}

/// A pending account auto-sync creates.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub id: Uuid,
    pub company_id: Uuid,
    pub display_name: &'a str,
    pub email: Option<&'a str>,
    /// Whether only an event's payload supplied the email (such an email never links).
    pub email_from_payload: bool,
}

pub async fn create_pending(
    conn: &mut PgConnection,
    user: &NewUser<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO users (id, company_id, display_name, email, status, source, email_from_payload)
         VALUES ($1, $2, $3, $4, 'pending', 'auto_sync', $5)",
    )
    .bind(user.id)
    .bind(user.company_id)
    .bind(user.display_name)
    .bind(user.email)
    .bind(user.email_from_payload)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether each user's activities count on leaderboards (announced `visible`): the user is on a
/// team and not deactivated. One statement for all; a missing user does not count.
pub async fn on_leaderboards(
    conn: &mut PgConnection,
    user_ids: &[Uuid],
) -> Result<HashMap<Uuid, bool>, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(
        "SELECT u.id, u.deactivated_at IS NULL
                      AND EXISTS (SELECT 1 FROM team_memberships m WHERE m.user_id = u.id)
         FROM UNNEST($1::uuid[]) AS k(id)
         CROSS JOIN LATERAL (SELECT id, deactivated_at FROM users WHERE id = k.id) u",
    )
    .bind(user_ids)
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}
