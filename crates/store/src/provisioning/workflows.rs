//! Which company a workflow's outcomes belong to, and whether its integration provisions users.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

/// What applying an outcome needs to know of its integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub company_id: Uuid,
    /// The integration's `auto_sync_users`.
    pub auto_sync: bool,
}

/// The targets of the given (integration, workflow) pairs, in one statement. A pair whose
/// workflow does not exist, or belongs to another integration, is missing from the answer.
pub async fn targets(
    conn: &mut PgConnection,
    pairs: &[(Uuid, Uuid)],
) -> Result<HashMap<(Uuid, Uuid), Target>, sqlx::Error> {
    if pairs.is_empty() {
        return Ok(HashMap::new());
    }
    let (integrations, workflows): (Vec<Uuid>, Vec<Uuid>) = pairs.iter().copied().unzip();
    let rows: Vec<(Uuid, Uuid, Uuid, bool)> = sqlx::query_as(
        "SELECT t.integration_id, t.workflow_id, x.company_id, x.auto_sync_users
         FROM UNNEST($1::uuid[], $2::uuid[]) AS t(integration_id, workflow_id)
         CROSS JOIN LATERAL (
             SELECT i.company_id, i.auto_sync_users
             FROM workflows w JOIN integrations i ON i.id = w.integration_id
             WHERE w.id = t.workflow_id AND i.id = t.integration_id
         ) x",
    )
    .bind(&integrations)
    .bind(&workflows)
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(integration, workflow, company_id, auto_sync)| {
            (
                (integration, workflow),
                Target {
                    company_id,
                    auto_sync,
                },
            )
        })
        .collect())
}

/// The integration's `auto_sync_users` as it is now (None: the integration is gone).
pub async fn auto_sync_enabled(
    conn: &mut PgConnection,
    integration_id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    let row: Option<(bool,)> =
        sqlx::query_as("SELECT auto_sync_users FROM integrations WHERE id = $1")
            .bind(integration_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(on,)| on))
}
