//! Platform users as the provisioner creates, links and announces them.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

/// Who holds an email in a company, as [`holders_of`] finds it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EmailHolder {
    /// The email as PostgreSQL compares it (one account per email, case aside).
    pub lowered: String,
    pub user_id: Option<Uuid>,
    pub status: Option<String>,
    /// Only an event's payload supplied the holder's email (such an email never links).
    pub email_from_payload: Option<bool>,
}

/// For each (company, email), in the order given: the email lowered as the unique index
/// compares it, and the account of the company that has it, if one does. One statement.
pub async fn holders_of(
    conn: &mut PgConnection,
    emails: &[(Uuid, &str)],
) -> Result<Vec<EmailHolder>, sqlx::Error> {
    if emails.is_empty() {
        return Ok(Vec::new());
    }
    let (companies, emails): (Vec<Uuid>, Vec<&str>) = emails.iter().copied().unzip();
    sqlx::query_as(
        "SELECT lower(k.email) AS lowered, u.id AS user_id, u.status, u.email_from_payload
         FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS k(company_id, email, n)
         LEFT JOIN LATERAL (
             SELECT id, status, email_from_payload FROM users
             WHERE company_id = k.company_id AND lower(email) = lower(k.email)
               AND email IS NOT NULL
         ) u ON true
         ORDER BY k.n",
    )
    .bind(&companies)
    .bind(&emails)
    .persistent(false)
    .fetch_all(conn)
    .await
}

/// A pending account auto-sync creates.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: Uuid,
    pub company_id: Uuid,
    pub display_name: String,
    pub email: Option<String>,
    /// Whether only an event's payload supplied the email (such an email never links).
    pub email_from_payload: bool,
}

/// Creates the pending accounts, in one statement.
pub async fn create_pending_all(
    conn: &mut PgConnection,
    users: &[NewUser],
) -> Result<(), sqlx::Error> {
    if users.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let companies: Vec<Uuid> = users.iter().map(|u| u.company_id).collect();
    let names: Vec<&str> = users.iter().map(|u| u.display_name.as_str()).collect();
    let emails: Vec<Option<&str>> = users.iter().map(|u| u.email.as_deref()).collect();
    let from_payload: Vec<bool> = users.iter().map(|u| u.email_from_payload).collect();
    sqlx::query(
        "INSERT INTO users (id, company_id, display_name, email, status, source, email_from_payload)
         SELECT id, company_id, display_name, email, 'pending', 'auto_sync', email_from_payload
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::bool[])
              AS k(id, company_id, display_name, email, email_from_payload)",
    )
    .bind(&ids)
    .bind(&companies)
    .bind(&names)
    .bind(&emails)
    .bind(&from_payload)
    .persistent(false)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether each user's activities count on leaderboards (announced `visible`): the user is on a
/// team and not deactivated; a missing user does not count.
///
/// The users are first locked against changes to their standing: placing on or removing from a
/// team, deactivating and merging hold a user's row `FOR UPDATE` while they read the user's
/// activities to announce them. Without the lock, an activity written here and a placement
/// committed meanwhile could each announce the other's old state, and whichever reached
/// downstream last would leave a retracted activity counting or a new value hidden. The answer
/// is read in a statement of its own, after the wait, so it sees what such a change committed.
pub async fn on_leaderboards(
    conn: &mut PgConnection,
    user_ids: &[Uuid],
) -> Result<HashMap<Uuid, bool>, sqlx::Error> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    sqlx::query("SELECT 1 FROM users WHERE id = ANY($1) ORDER BY id FOR KEY SHARE")
        .bind(user_ids)
        .persistent(false)
        .execute(&mut *conn)
        .await?;
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
