//! Each record's last known owner, as the provisioner last saw it in an outcome: the one writer
//! of `record_owners`.
//!
//! The evaluator's record state knows every record's owner and names it on every outcome,
//! deletes included. Outcomes written by an evaluator without record state (still in
//! `crm.matches.v1` after an upgrade) name no owner on deletes and partial updates: the
//! provisioner attributes those to the owner it remembered here.

use std::collections::HashMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A record, as `record_owners` keys it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    pub integration_id: Uuid,
    pub object_type: String,
    pub record_id: String,
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

/// The last known owners of the given records, in one statement (a record without one is
/// missing from the answer).
pub async fn last_known_all(
    conn: &mut PgConnection,
    records: &[RecordKey],
) -> Result<HashMap<RecordKey, String>, sqlx::Error> {
    if records.is_empty() {
        return Ok(HashMap::new());
    }
    let integrations: Vec<Uuid> = records.iter().map(|r| r.integration_id).collect();
    let objects: Vec<&str> = records.iter().map(|r| r.object_type.as_str()).collect();
    let ids: Vec<&str> = records.iter().map(|r| r.record_id.as_str()).collect();
    let rows: Vec<(Uuid, String, String, String)> = sqlx::query_as(
        "SELECT o.integration_id, o.object_type, o.record_id, o.crm_user_id
         FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS k(integration_id, object_type, record_id)
         CROSS JOIN LATERAL (
             SELECT * FROM record_owners r
             WHERE r.integration_id = k.integration_id AND r.object_type = k.object_type
               AND r.record_id = k.record_id
         ) o",
    )
    .bind(&integrations)
    .bind(&objects)
    .bind(&ids)
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(integration_id, object_type, record_id, owner)| {
            let key = RecordKey {
                integration_id,
                object_type,
                record_id,
            };
            (key, owner)
        })
        .collect())
}

/// Remembers each record's owner (company, record, owner), in one statement. Callers pass only
/// records whose owner is new or changed: an upsert that changes nothing would still lock the
/// row until the transaction ends.
pub async fn remember_all(
    conn: &mut PgConnection,
    owners: &[(Uuid, &RecordKey, &str)],
) -> Result<(), sqlx::Error> {
    if owners.is_empty() {
        return Ok(());
    }
    let companies: Vec<Uuid> = owners.iter().map(|(c, _, _)| *c).collect();
    let integrations: Vec<Uuid> = owners.iter().map(|(_, r, _)| r.integration_id).collect();
    let objects: Vec<&str> = owners
        .iter()
        .map(|(_, r, _)| r.object_type.as_str())
        .collect();
    let ids: Vec<&str> = owners
        .iter()
        .map(|(_, r, _)| r.record_id.as_str())
        .collect();
    let users: Vec<&str> = owners.iter().map(|(_, _, u)| *u).collect();
    sqlx::query(
        "INSERT INTO record_owners (company_id, integration_id, object_type, record_id, crm_user_id)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[])
         ON CONFLICT (integration_id, object_type, record_id) DO UPDATE
             SET crm_user_id = EXCLUDED.crm_user_id, updated_at = now()
             WHERE record_owners.crm_user_id <> EXCLUDED.crm_user_id",
    )
    .bind(&companies)
    .bind(&integrations)
    .bind(&objects)
    .bind(&ids)
    .bind(&users)
    .execute(conn)
    .await?;
    Ok(())
}
