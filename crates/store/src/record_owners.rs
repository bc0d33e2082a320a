//! Each record's last known owner. Deletes and partial updates (Salesforce CDC, HubSpot,
//! Dynamics deletes) do not name the owner; ingest records the owner of every event that does,
//! in CRM time order, so whoever later needs it (the provisioner attributing an outcome) finds it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// An owner as one event stated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedOwner {
    pub object_type: String,
    pub record_id: String,
    pub crm_user_id: String,
    /// When the CRM says the change happened.
    pub observed_at: DateTime<Utc>,
}

/// Records the owners in one statement. A stored owner is replaced only by a newer observation,
/// so requests racing or arriving out of order leave the newest owner in place.
pub async fn remember(
    pool: &PgPool,
    company_id: Uuid,
    integration_id: Uuid,
    owners: &[ObservedOwner],
) -> Result<(), sqlx::Error> {
    // One row per record: an upsert may not touch the same row twice.
    let mut newest: HashMap<(&str, &str), &ObservedOwner> = HashMap::new();
    for owner in owners {
        let key = (owner.object_type.as_str(), owner.record_id.as_str());
        match newest.get(&key) {
            Some(kept) if kept.observed_at > owner.observed_at => {}
            _ => {
                newest.insert(key, owner);
            }
        }
    }
    if newest.is_empty() {
        return Ok(());
    }
    let mut objects = Vec::with_capacity(newest.len());
    let mut records = Vec::with_capacity(newest.len());
    let mut users = Vec::with_capacity(newest.len());
    let mut times = Vec::with_capacity(newest.len());
    for owner in newest.values() {
        objects.push(owner.object_type.as_str());
        records.push(owner.record_id.as_str());
        users.push(owner.crm_user_id.as_str());
        times.push(owner.observed_at);
    }
    sqlx::query(
        "INSERT INTO record_owners (company_id, integration_id, object_type, record_id, crm_user_id, observed_at)
         SELECT $1, $2, o, r, u, t FROM UNNEST($3::text[], $4::text[], $5::text[], $6::timestamptz[]) AS x(o, r, u, t)
         ON CONFLICT (integration_id, object_type, record_id) DO UPDATE
             SET crm_user_id = EXCLUDED.crm_user_id, observed_at = EXCLUDED.observed_at, updated_at = now()
             WHERE record_owners.observed_at IS NULL OR record_owners.observed_at < EXCLUDED.observed_at",
    )
    .bind(company_id)
    .bind(integration_id)
    .bind(&objects)
    .bind(&records)
    .bind(&users)
    .bind(&times)
    .execute(pool)
    .await?;
    Ok(())
}

/// The record's last known owner.
pub async fn last_known(
    pool: &PgPool,
    integration_id: Uuid,
    object_type: &str,
    record_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT crm_user_id FROM record_owners
         WHERE integration_id = $1 AND object_type = $2 AND record_id = $3",
    )
    .bind(integration_id)
    .bind(object_type)
    .bind(record_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id,)| id))
}
