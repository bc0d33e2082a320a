//! Activities as the provisioner records, retracts and attaches them.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

/// An activity row, whole.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Activity {
    pub id: Uuid,
    pub company_id: Uuid,
    pub integration_id: Uuid,
    pub workflow_id: Uuid,
    pub object_type: String,
    pub record_id: String,
    pub crm_user_id: String,
    /// None: unmapped (kept for admins, attached once the CRM identity is mapped).
    pub user_id: Option<Uuid>,
    pub activity_type: String,
    pub value: Decimal,
    pub activity_date: DateTime<Utc>,
    /// `recorded` or `retracted`.
    pub state: String,
    pub last_event_at: DateTime<Utc>,
    pub last_event_id: String,
}

const COLUMNS: &str =
    "id, company_id, integration_id, workflow_id, object_type, record_id, crm_user_id,
     user_id, activity_type, value, activity_date, state, last_event_at, last_event_id";

/// Reads and locks the activities of the given (workflow, record) keys, in one statement. The
/// locks are taken in key order, so two transactions locking overlapping sets cannot deadlock
/// on them.
pub async fn lock_all(
    conn: &mut PgConnection,
    keys: &[(Uuid, &str)],
) -> Result<Vec<Activity>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let (workflows, records): (Vec<Uuid>, Vec<&str>) = keys.into_iter().unzip();
    sqlx::query_as(&format!(
        "SELECT a.* FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS k(workflow_id, record_id, n)
         CROSS JOIN LATERAL (
             SELECT {COLUMNS} FROM activities
             WHERE workflow_id = k.workflow_id AND record_id = k.record_id
             FOR UPDATE
         ) a
         ORDER BY k.n"
    ))
    .bind(&workflows)
    .bind(&records)
    .persistent(false)
    .fetch_all(conn)
    .await
}

/// Writes the activities as given (inserted, or replacing the stored row), in one statement.
/// A row holding a newer change than the one written keeps it (an older change arriving late
/// never overwrites a newer one). `created_at` stays as it was; `updated_at` is now.
pub async fn write_all(conn: &mut PgConnection, rows: &[Activity]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Activity) -> Uuid| rows.iter().map(f).collect::<Vec<_>>();
    let text = |f: fn(&Activity) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let time = |f: fn(&Activity) -> DateTime<Utc>| rows.iter().map(f).collect::<Vec<_>>();
    sqlx::query(&format!(
        "INSERT INTO activities ({COLUMNS})
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
                              $7::text[], $8::uuid[], $9::text[], $10::numeric[], $11::timestamptz[],
                              $12::text[], $13::timestamptz[], $14::text[])
         ON CONFLICT (workflow_id, record_id) DO UPDATE SET
             crm_user_id = EXCLUDED.crm_user_id, user_id = EXCLUDED.user_id,
             activity_type = EXCLUDED.activity_type, value = EXCLUDED.value,
             activity_date = EXCLUDED.activity_date, state = EXCLUDED.state,
             last_event_at = EXCLUDED.last_event_at, last_event_id = EXCLUDED.last_event_id,
             updated_at = now()
         WHERE activities.last_event_at <= EXCLUDED.last_event_at"
    ))
    .bind(column(|a| a.id))
    .bind(column(|a| a.company_id))
    .bind(column(|a| a.integration_id))
    .bind(column(|a| a.workflow_id))
    .bind(text(|a| &a.object_type))
    .bind(text(|a| &a.record_id))
    .bind(text(|a| &a.crm_user_id))
    .bind(rows.iter().map(|a| a.user_id).collect::<Vec<_>>())
    .bind(text(|a| &a.activity_type))
    .bind(rows.iter().map(|a| a.value).collect::<Vec<_>>())
    .bind(time(|a| a.activity_date))
    .bind(text(|a| &a.state))
    .bind(time(|a| a.last_event_at))
    .bind(text(|a| &a.last_event_id))
    .execute(conn)
    .await?;
    Ok(())
}

/// Attaches the unmapped recorded activities of each identity (integration, CRM user) to its
/// platform user, in one statement; returns them as attached.
pub async fn attach_unmapped_all(
    conn: &mut PgConnection,
    mappings: &[(Uuid, &str, Uuid)],
) -> Result<Vec<Activity>, sqlx::Error> {
    if mappings.is_empty() {
        return Ok(Vec::new());
    }
    let integrations: Vec<Uuid> = mappings.iter().map(|m| m.0).collect();
    let users: Vec<&str> = mappings.iter().map(|m| m.1).collect();
    let platform_users: Vec<Uuid> = mappings.iter().map(|m| m.2).collect();
    sqlx::query_as(&format!(
        "UPDATE activities SET user_id = k.to_user, updated_at = now()
         FROM UNNEST($1::uuid[], $2::text[], $3::uuid[]) AS k(of_integration, of_crm_user, to_user)
         WHERE integration_id = k.of_integration AND crm_user_id = k.of_crm_user
           AND user_id IS NULL AND state = 'recorded'
         RETURNING {COLUMNS}"
    ))
    .bind(&integrations)
    .bind(&users)
    .bind(&platform_users)
    .persistent(false)
    .fetch_all(conn)
    .await
}
