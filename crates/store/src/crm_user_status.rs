//! What the CRM said about a CRM user being active, as the directory's cache of CRM users keeps
//! it (`crm_identities.crm_active`, with the time it was said): written by the provisioner's
//! directory lookups and by ingest for the CRMs' own user events. The provisioner deactivates
//! the mapped platform user of a CRM user said to be inactive (see its `people` module).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// Notified (payload: the integration id) by triggers whenever a mapped CRM user becomes due for
/// deactivation (the CRM said they are inactive and that was not applied yet) and when an
/// integration's `deactivate_with_crm` is turned on.
pub const INACTIVE_CHANNEL: &str = "crm_sync_crm_user_inactive";

/// One CRM user event's word: whether the user is active, and when the CRM made the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    pub crm_user_id: String,
    pub active: bool,
    pub at: DateTime<Utc>,
}

/// Records what user events said about CRM users the integration already knows (CRM users with
/// no identity are left alone: they are nobody's account, and the lookup made when one gets an
/// account asks the CRM anyway). A word older than the one stored (a lookup, or a later event)
/// is ignored; of several words about one user, the latest counts. Active again clears the
/// applied inactive word, so that a later inactive one applies anew. Returns how many
/// identities took the word.
pub async fn record_events(
    pool: &PgPool,
    integration_id: Uuid,
    said: &[Said],
) -> Result<u64, sqlx::Error> {
    if said.is_empty() {
        return Ok(0);
    }
    let users: Vec<&str> = said.iter().map(|s| s.crm_user_id.as_str()).collect();
    let active: Vec<bool> = said.iter().map(|s| s.active).collect();
    let at: Vec<DateTime<Utc>> = said.iter().map(|s| s.at).collect();
    let result = sqlx::query(
        "WITH said AS (
             SELECT DISTINCT ON (crm_user_id) crm_user_id, active, at
             FROM UNNEST($2::text[], $3::boolean[], $4::timestamptz[]) AS s(crm_user_id, active, at)
             ORDER BY crm_user_id, at DESC
         )
         UPDATE crm_identities ci SET
             crm_active = s.active,
             crm_active_at = s.at,
             crm_inactive_applied_at = CASE WHEN s.active THEN NULL ELSE ci.crm_inactive_applied_at END,
             updated_at = now()
         FROM said s
         WHERE ci.integration_id = $1 AND ci.crm_user_id = s.crm_user_id
           AND (ci.crm_active_at IS NULL OR ci.crm_active_at <= s.at)",
    )
    .bind(integration_id)
    .bind(&users)
    .bind(&active)
    .bind(&at)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}
