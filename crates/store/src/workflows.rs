//! Workflows as stored, and the active set the evaluator keeps in memory.

use crm_sync_workflow::{Condition, Trigger, WorkflowSpec};
use sqlx::PgPool;
use uuid::Uuid;

/// Channel on which PostgreSQL announces any workflow change (payload: the integration id).
pub const CHANGED_CHANNEL: &str = "crm_sync_workflows_changed";

#[derive(Debug, Clone)]
pub struct StoredWorkflow {
    pub id: Uuid,
    pub company_id: Uuid,
    pub integration_id: Uuid,
    pub active: bool,
    pub spec: WorkflowSpec,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    company_id: Uuid,
    integration_id: Uuid,
    active: bool,
    name: String,
    object_type: String,
    triggers: Vec<String>,
    conditions: serde_json::Value,
    user_field: String,
    value_field: Option<String>,
    date_field: Option<String>,
    activity_type: String,
}

const COLUMNS: &str =
    "id, company_id, integration_id, active, name, object_type, triggers, conditions,
                       user_field, value_field, date_field, activity_type";

impl TryFrom<Row> for StoredWorkflow {
    type Error = String;

    fn try_from(r: Row) -> Result<Self, String> {
        let triggers = r
            .triggers
            .iter()
            .map(|t| Trigger::parse(t).ok_or_else(|| format!("unknown trigger `{t}`")))
            .collect::<Result<Vec<_>, _>>()?;
        let conditions = Condition::from_json(&r.conditions).map_err(|e| e.to_string())?;
        Ok(StoredWorkflow {
            id: r.id,
            company_id: r.company_id,
            integration_id: r.integration_id,
            active: r.active,
            spec: WorkflowSpec {
                name: r.name,
                object_type: r.object_type,
                triggers,
                conditions,
                user_field: r.user_field,
                value_field: r.value_field,
                date_field: r.date_field,
                activity_type: r.activity_type,
            },
        })
    }
}

/// The rows that parse. A stored workflow that no longer parses (written by a newer version, say)
/// is skipped with an error log rather than stopping evaluation of all the others.
fn valid(rows: Vec<Row>) -> Vec<StoredWorkflow> {
    rows.into_iter()
        .filter_map(|row| {
            let id = row.id;
            StoredWorkflow::try_from(row)
                .map_err(|e| tracing::error!(workflow_id = %id, error = %e, "skipping invalid stored workflow"))
                .ok()
        })
        .collect()
}

/// Every active workflow. A stored workflow that no longer parses (written by a newer version,
/// say) is skipped with an error log rather than stopping evaluation of all the others.
pub async fn load_active(pool: &PgPool) -> Result<Vec<StoredWorkflow>, sqlx::Error> {
    let rows = sqlx::query_as::<_, Row>(&format!("SELECT {COLUMNS} FROM workflows WHERE active"))
        .fetch_all(pool)
        .await?;
    Ok(valid(rows))
}

/// The active workflows of one integration (what its pull jobs fetch).
pub async fn load_active_of(
    pool: &PgPool,
    integration_id: Uuid,
) -> Result<Vec<StoredWorkflow>, sqlx::Error> {
    let rows = sqlx::query_as::<_, Row>(&format!(
        "SELECT {COLUMNS} FROM workflows WHERE active AND integration_id = $1"
    ))
    .bind(integration_id)
    .fetch_all(pool)
    .await?;
    Ok(valid(rows))
}

/// The workflows named by (integration, workflow id), active or not, that exist and parse:
/// what the record trail's writer needs to name the workflows inactive now whose activities a
/// delete retracted.
pub async fn load_of_integrations(
    pool: &PgPool,
    ids: &[(Uuid, Uuid)],
) -> Result<Vec<StoredWorkflow>, sqlx::Error> {
    let (integrations, workflows): (Vec<Uuid>, Vec<Uuid>) = ids.iter().copied().unzip();
    let rows = sqlx::query_as::<_, Row>(&format!(
        "SELECT {COLUMNS} FROM workflows
         WHERE (integration_id, id) IN (SELECT * FROM unnest($1::uuid[], $2::uuid[]))"
    ))
    .bind(&integrations)
    .bind(&workflows)
    .fetch_all(pool)
    .await?;
    Ok(valid(rows))
}

/// The ids of every integration that exists, so the evaluator can tell "unknown integration"
/// (dead letter) from "no active workflow" (no match).
pub async fn integration_ids(pool: &PgPool) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as::<_, (Uuid, Uuid)>("SELECT id, company_id FROM integrations")
        .fetch_all(pool)
        .await
}

/// An activity recorded before the evaluator kept record state (see [`recorded_activities`]).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecordedActivity {
    pub workflow_id: Uuid,
    pub value: String,
    pub activity_date: chrono::DateTime<chrono::Utc>,
    pub crm_user_id: String,
}

/// Calls `each` with the record id of every recorded activity of the given workflows, streamed
/// (an integration may have many).
pub async fn for_each_recorded_record(
    pool: &PgPool,
    workflow_ids: &[Uuid],
    mut each: impl FnMut(&str),
) -> Result<(), sqlx::Error> {
    use futures::TryStreamExt as _;
    let mut rows = sqlx::query_scalar::<_, String>(
        "SELECT record_id FROM activities WHERE workflow_id = ANY($1) AND state = 'recorded'",
    )
    .bind(workflow_ids)
    .fetch(pool);
    while let Some(record_id) = rows.try_next().await? {
        each(&record_id);
    }
    Ok(())
}

/// The recorded activities of a record under the given workflows. The evaluator reads them the
/// first time it sees a record, so that a record that matched before its state was kept is
/// still known to match (and is retracted when it stops).
pub async fn recorded_activities(
    pool: &PgPool,
    workflow_ids: &[Uuid],
    record_id: &str,
) -> Result<Vec<RecordedActivity>, sqlx::Error> {
    sqlx::query_as(
        "SELECT workflow_id, value::text AS value, activity_date, crm_user_id FROM activities
         WHERE workflow_id = ANY($1) AND record_id = $2 AND state = 'recorded'",
    )
    .bind(workflow_ids)
    .bind(record_id)
    .fetch_all(pool)
    .await
}
