//! An integration's health as admins see it, from what the database already holds: the active
//! workflows, and the activities the pipeline wrote in the last hour (by when it wrote them, not
//! by the CRM's event time). Read only when an admin asks, so the pipeline writes nothing more
//! for it.

use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HealthRow {
    pub active_workflows: i64,
    /// Activities recorded or updated in the last hour (events that matched a workflow).
    pub matched_last_hour: i64,
    /// Of those, the ones whose CRM user has no platform user yet.
    pub unmapped_last_hour: i64,
    /// Activities retracted in the last hour (updates that stopped matching, deletes).
    pub retracted_last_hour: i64,
    /// After how long without a webhook an integration with active workflows is red.
    pub silence_alert_minutes: i32,
}

pub async fn get<'e>(
    db: impl PgExecutor<'e>,
    company_id: Uuid,
    integration_id: Uuid,
) -> Result<Option<HealthRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT
             (SELECT count(*) FROM workflows w WHERE w.integration_id = i.id AND w.active) AS active_workflows,
             count(a.id) FILTER (WHERE a.state = 'recorded') AS matched_last_hour,
             count(a.id) FILTER (WHERE a.state = 'recorded' AND a.user_id IS NULL) AS unmapped_last_hour,
             count(a.id) FILTER (WHERE a.state = 'retracted') AS retracted_last_hour,
             c.silence_alert_minutes
         FROM integrations i
         JOIN companies c ON c.id = i.company_id
         LEFT JOIN activities a ON a.integration_id = i.id AND a.company_id = i.company_id
              AND a.updated_at > now() - interval '1 hour'
         WHERE i.company_id = $1 AND i.id = $2
         GROUP BY i.id, c.silence_alert_minutes",
    )
    .bind(company_id)
    .bind(integration_id)
    .fetch_optional(db)
    .await
}
