//! CRM identities as the provisioner reads, records, locks and maps them.

use sqlx::PgConnection;
use uuid::Uuid;

/// A CRM identity as stored: whom it is mapped to, whether its name and email are known, and
/// whether an admin unmapped it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub integration_id: Uuid,
    pub crm_user_id: String,
    pub user_id: Option<Uuid>,
    pub named: bool,
    pub has_email: bool,
    pub held: bool,
}

/// The stored identities among `keys` (integration, CRM user), in one statement, without
/// locking them.
pub async fn find_all(
    conn: &mut PgConnection,
    keys: &[(Uuid, &str)],
) -> Result<Vec<Stored>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (integrations, users): (Vec<Uuid>, Vec<&str>) = keys.iter().copied().unzip();
    sqlx::query_as(
        "SELECT ci.integration_id, ci.crm_user_id, ci.user_id, ci.display_name IS NOT NULL AS named,
                ci.email IS NOT NULL AS has_email, ci.unmapped_at IS NOT NULL AS held
         FROM UNNEST($1::uuid[], $2::text[]) AS k(integration_id, crm_user_id)
         CROSS JOIN LATERAL (
             SELECT * FROM crm_identities c
             WHERE c.integration_id = k.integration_id AND c.crm_user_id = k.crm_user_id
         ) ci",
    )
    .bind(&integrations)
    .bind(&users)
    .persistent(false)
    .fetch_all(conn)
    .await
}

/// Records the identity (unmapped when new), and the name and email it lacks.
pub async fn record(
    conn: &mut PgConnection,
    company_id: Uuid,
    integration_id: Uuid,
    crm_user_id: &str,
    (name, email): (&str, &str),
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO crm_identities (company_id, integration_id, crm_user_id, display_name, email)
         VALUES ($1, $2, $3, NULLIF($4, ''), NULLIF($5, ''))
         ON CONFLICT (integration_id, crm_user_id) DO UPDATE SET
             display_name = COALESCE(crm_identities.display_name, EXCLUDED.display_name),
             email = COALESCE(crm_identities.email, EXCLUDED.email)",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(crm_user_id)
    .bind(name)
    .bind(email)
    .execute(conn)
    .await?;
    Ok(())
}

/// An identity read under its row lock, to provision its account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Locked {
    pub user_id: Option<Uuid>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub directory_email: Option<String>,
}

/// Reads and locks the identity (which must exist) until the transaction ends: whoever holds
/// the lock is the only one to create its account.
pub async fn lock(
    conn: &mut PgConnection,
    integration_id: Uuid,
    crm_user_id: &str,
) -> Result<Locked, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, display_name, email, directory_email FROM crm_identities
         WHERE integration_id = $1 AND crm_user_id = $2 FOR UPDATE",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .fetch_one(conn)
    .await
}

/// Maps the identity to the platform user.
pub async fn map_to(
    conn: &mut PgConnection,
    integration_id: Uuid,
    crm_user_id: &str,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE crm_identities SET user_id = $3, updated_at = now()
         WHERE integration_id = $1 AND crm_user_id = $2",
    )
    .bind(integration_id)
    .bind(crm_user_id)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}
