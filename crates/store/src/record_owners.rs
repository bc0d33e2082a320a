//! Each record's last known owner, as the provisioner last saw it in an outcome.
//!
//! The evaluator's record state knows every record's owner and names it on every outcome,
//! deletes included. Outcomes written by an evaluator without record state (still in
//! `crm.matches.v1` after an upgrade) name no owner on deletes and partial updates: the
//! provisioner attributes those to the owner it remembered here.

use sqlx::PgPool;
use uuid::Uuid;

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
