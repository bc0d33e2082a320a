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

/// What an event tells of a CRM identity, recorded where the identity lacks it.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub company_id: Uuid,
    pub integration_id: Uuid,
    pub crm_user_id: &'a str,
    /// Empty when the event does not tell.
    pub name: &'a str,
    /// Empty when the event does not tell.
    pub email: &'a str,
}

/// An identity as recorded, read under its row lock.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Locked {
    pub integration_id: Uuid,
    pub crm_user_id: String,
    pub user_id: Option<Uuid>,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub directory_email: Option<String>,
    /// An admin unmapped it: auto-sync leaves it alone.
    pub held: bool,
}

/// Records each identity (unmapped when new) and the name and email it lacks, in one
/// statement, and returns them as they now are, in no particular order. Every row stays locked
/// until the transaction ends (an upsert locks a row even when it changes nothing): whoever
/// holds the lock is the only one to create its account. Rows are written in the order given,
/// so callers pass them in key order and concurrent writers lock in one order; keys must be
/// distinct.
pub async fn record_all(
    conn: &mut PgConnection,
    seen: &[Seen<'_>],
) -> Result<Vec<Locked>, sqlx::Error> {
    if seen.is_empty() {
        return Ok(Vec::new());
    }
    let companies: Vec<Uuid> = seen.iter().map(|s| s.company_id).collect();
    let integrations: Vec<Uuid> = seen.iter().map(|s| s.integration_id).collect();
    let users: Vec<&str> = seen.iter().map(|s| s.crm_user_id).collect();
    let names: Vec<&str> = seen.iter().map(|s| s.name).collect();
    let emails: Vec<&str> = seen.iter().map(|s| s.email).collect();
    sqlx::query_as(
        "INSERT INTO crm_identities (company_id, integration_id, crm_user_id, display_name, email)
         SELECT company_id, integration_id, crm_user_id, NULLIF(name, ''), NULLIF(email, '')
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])
              AS k(company_id, integration_id, crm_user_id, name, email)
         ON CONFLICT (integration_id, crm_user_id) DO UPDATE SET
             display_name = COALESCE(crm_identities.display_name, EXCLUDED.display_name),
             email = COALESCE(crm_identities.email, EXCLUDED.email)
         RETURNING integration_id, crm_user_id, user_id, display_name, email, directory_email,
                   unmapped_at IS NOT NULL AS held",
    )
    .bind(&companies)
    .bind(&integrations)
    .bind(&users)
    .bind(&names)
    .bind(&emails)
    .persistent(false)
    .fetch_all(conn)
    .await
}

/// Maps each identity (integration, CRM user) to its platform user, in one statement.
pub async fn map_all(
    conn: &mut PgConnection,
    mappings: &[(Uuid, &str, Uuid)],
) -> Result<(), sqlx::Error> {
    if mappings.is_empty() {
        return Ok(());
    }
    let integrations: Vec<Uuid> = mappings.iter().map(|m| m.0).collect();
    let users: Vec<&str> = mappings.iter().map(|m| m.1).collect();
    let platform_users: Vec<Uuid> = mappings.iter().map(|m| m.2).collect();
    sqlx::query(
        "UPDATE crm_identities c SET user_id = k.user_id, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[]) AS k(integration_id, crm_user_id, user_id)
         WHERE c.integration_id = k.integration_id AND c.crm_user_id = k.crm_user_id",
    )
    .bind(&integrations)
    .bind(&users)
    .bind(&platform_users)
    .persistent(false)
    .execute(conn)
    .await?;
    Ok(())
}
