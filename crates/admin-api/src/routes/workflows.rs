use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::{ActivityState, ChangeType};
use crm_sync_store::admin::workflows::{self as store, Filter, WorkflowRow};
use crm_sync_workflow::{Condition, SpecError, Trigger, WorkflowSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::{CompanyPath, ReadErrors, WriteErrors, commit_audited, conflict_on, double_option};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, JsonBody, QueryParams};
use crate::paging::{self, Page};
use crate::publish::Batch;

/// A CRM change a workflow reacts to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TriggerName {
    Created,
    Updated,
    Deleted,
}

impl TriggerName {
    fn trigger(self) -> Trigger {
        match self {
            TriggerName::Created => Trigger::Created,
            TriggerName::Updated => Trigger::Updated,
            TriggerName::Deleted => Trigger::Deleted,
        }
    }

    pub(super) fn change(self) -> ChangeType {
        match self {
            TriggerName::Created => ChangeType::Created,
            TriggerName::Updated => ChangeType::Updated,
            TriggerName::Deleted => ChangeType::Deleted,
        }
    }
}

/// A workflow: which CRM changes count as which activity, for whom, with what value and date.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub name: String,
    /// The CRM object, e.g. `Opportunity`.
    pub object_type: String,
    /// Subset of `created`, `updated`, `deleted`.
    pub triggers: Vec<String>,
    /// The condition tree, e.g. `{"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]}`.
    #[schema(value_type = Object)]
    pub conditions: Value,
    /// The field naming the responsible CRM user, e.g. `OwnerId`.
    pub user_field: String,
    /// The field holding the value, e.g. `Amount`; none counts 1.
    pub value_field: Option<String>,
    /// The field holding the date, e.g. `CloseDate`; none uses the event time.
    pub date_field: Option<String>,
    /// What a match counts as, e.g. `deal_won`.
    pub activity_type: String,
    /// Only active workflows let data through.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WorkflowRow> for WorkflowView {
    fn from(r: WorkflowRow) -> Self {
        WorkflowView {
            id: r.id,
            integration_id: r.integration_id,
            name: r.name,
            object_type: r.object_type,
            triggers: r.triggers,
            conditions: r.conditions,
            user_field: r.user_field,
            value_field: r.value_field,
            date_field: r.date_field,
            activity_type: r.activity_type,
            active: r.active,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct WorkflowPath {
    pub company_id: Uuid,
    pub workflow_id: Uuid,
}

/// A workflow as entered, before validation.
struct Draft<'a> {
    name: String,
    object_type: String,
    triggers: &'a [TriggerName],
    conditions: &'a Value,
    user_field: String,
    value_field: Option<String>,
    date_field: Option<String>,
    activity_type: String,
}

/// Builds and validates a spec with the evaluator's own rules, naming the offending field.
fn spec(d: Draft<'_>) -> ApiResult<WorkflowSpec> {
    let Draft {
        name,
        object_type,
        triggers,
        conditions,
        user_field,
        value_field,
        date_field,
        activity_type,
    } = d;
    let conditions = Condition::from_json(conditions)
        .map_err(|e| ApiError::invalid(format!("conditions{}", e.path), e.to_string()))?;
    let mut triggers: Vec<Trigger> = triggers.iter().map(|t| t.trigger()).collect();
    triggers.dedup();
    let spec = WorkflowSpec {
        name: name.trim().to_owned(),
        object_type: object_type.trim().to_owned(),
        triggers,
        conditions,
        user_field: user_field.trim().to_owned(),
        value_field: value_field.map(|v| v.trim().to_owned()),
        date_field: date_field.map(|v| v.trim().to_owned()),
        activity_type: activity_type.trim().to_owned(),
    };
    spec.validate().map_err(|e| match &e {
        SpecError::Field { field, .. } => ApiError::invalid(*field, e.to_string()),
        SpecError::Condition(c) => {
            ApiError::invalid(format!("conditions{}", c.path), e.to_string())
        }
        #[allow(unreachable_patterns)]
        _ => ApiError::invalid("", e.to_string()),
    })?;
    Ok(spec)
}

/// The spec of a stored workflow, as the evaluator builds it.
pub(super) fn stored_spec(row: &WorkflowRow) -> ApiResult<WorkflowSpec> {
    let triggers: Vec<TriggerName> = row
        .triggers
        .iter()
        .filter_map(|t| serde_json::from_value(Value::String(t.clone())).ok())
        .collect();
    spec(Draft {
        name: row.name.clone(),
        object_type: row.object_type.clone(),
        triggers: &triggers,
        conditions: &row.conditions,
        user_field: row.user_field.clone(),
        value_field: row.value_field.clone(),
        date_field: row.date_field.clone(),
        activity_type: row.activity_type.clone(),
    })
    .map_err(|e| ApiError::internal("reading the stored workflow", e.message))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WorkflowListQuery {
    /// Only this integration's workflows.
    pub integration_id: Option<Uuid>,
    /// Only active (or only inactive) workflows.
    pub active: Option<bool>,
    /// Page size, 1–200 (default 50).
    pub limit: Option<u32>,
    /// The previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The company's workflows.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/workflows",
    tag = "workflows",
    params(CompanyPath, WorkflowListQuery),
    responses((status = 200, body = Page<WorkflowView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<WorkflowListQuery>,
) -> ApiResult<Json<Page<WorkflowView>>> {
    let (limit, after) = paging::keyset_args(q.limit, q.cursor.as_deref())?;
    let filter = Filter {
        integration_id: q.integration_id,
        active: q.active,
    };
    let rows = store::list(&state.pool, caller.company(), &filter, after, limit + 1).await?;
    Ok(Json(paging::keyset(rows, limit, WorkflowView::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWorkflowBody {
    pub integration_id: Uuid,
    /// Unique within the integration.
    pub name: String,
    pub object_type: String,
    pub triggers: Vec<TriggerName>,
    /// The condition tree; absent: every record of the object matches.
    #[schema(value_type = Object)]
    #[serde(default = "always")]
    pub conditions: Value,
    pub user_field: String,
    pub value_field: Option<String>,
    pub date_field: Option<String>,
    pub activity_type: String,
    /// Start active (default: inactive, so it can be dry-run first).
    #[serde(default)]
    pub active: bool,
}

fn always() -> Value {
    json!({"all": []})
}

/// Creates a workflow, validated exactly as the evaluator will read it.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/workflows",
    tag = "workflows",
    params(CompanyPath),
    request_body = NewWorkflowBody,
    responses((status = 201, body = WorkflowView), WriteErrors)
)]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<NewWorkflowBody>,
) -> ApiResult<(StatusCode, Json<WorkflowView>)> {
    let spec = spec(Draft {
        name: b.name,
        object_type: b.object_type,
        triggers: &b.triggers,
        conditions: &b.conditions,
        user_field: b.user_field,
        value_field: b.value_field,
        date_field: b.date_field,
        activity_type: b.activity_type,
    })?;
    let mut tx = state.pool.begin().await?;
    let row = store::create(&mut tx, caller.company(), b.integration_id, &spec, b.active)
        .await
        .map_err(conflict_on(
            "name",
            "a workflow with this name in this integration",
        ))?
        .ok_or_else(|| {
            ApiError::invalid("integration_id", "no such integration in this company")
        })?;
    commit_audited(
        tx,
        &caller,
        "workflow.created",
        "workflow",
        row.id,
        json!({"spec": spec, "active": row.active}),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// One workflow.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/workflows/{workflow_id}",
    tag = "workflows",
    params(WorkflowPath),
    responses((status = 200, body = WorkflowView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<WorkflowPath>,
) -> ApiResult<Json<WorkflowView>> {
    store::get(&state.pool, caller.company(), p.workflow_id)
        .await?
        .map(|r| Json(r.into()))
        .or_not_found("workflow")
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowPatch {
    pub name: Option<String>,
    pub object_type: Option<String>,
    pub triggers: Option<Vec<TriggerName>>,
    #[schema(value_type = Object)]
    pub conditions: Option<Value>,
    pub user_field: Option<String>,
    /// `null` clears it (count 1 per record).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub value_field: Option<Option<String>>,
    /// `null` clears it (use the event time).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub date_field: Option<Option<String>>,
    pub activity_type: Option<String>,
    pub active: Option<bool>,
}

/// Changes a workflow; absent fields keep their value. The result is validated as a whole.
#[utoipa::path(
    patch,
    path = "/admin/v1/companies/{company_id}/workflows/{workflow_id}",
    tag = "workflows",
    params(WorkflowPath),
    request_body = WorkflowPatch,
    responses((status = 200, body = WorkflowView), WriteErrors)
)]
pub async fn update(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<WorkflowPath>,
    JsonBody(b): JsonBody<WorkflowPatch>,
) -> ApiResult<Json<WorkflowView>> {
    let mut tx = state.pool.begin().await?;
    let current = store::get(&mut *tx, caller.company(), p.workflow_id)
        .await?
        .or_not_found("workflow")?;
    let triggers = match b.triggers {
        Some(t) => t,
        None => current
            .triggers
            .iter()
            .filter_map(|t| serde_json::from_value(Value::String(t.clone())).ok())
            .collect(),
    };
    let spec = spec(Draft {
        name: b.name.unwrap_or(current.name.clone()),
        object_type: b.object_type.unwrap_or(current.object_type.clone()),
        triggers: &triggers,
        conditions: b.conditions.as_ref().unwrap_or(&current.conditions),
        user_field: b.user_field.unwrap_or(current.user_field.clone()),
        value_field: b.value_field.unwrap_or(current.value_field.clone()),
        date_field: b.date_field.unwrap_or(current.date_field.clone()),
        activity_type: b.activity_type.unwrap_or(current.activity_type.clone()),
    })?;
    let active = b.active.unwrap_or(current.active);
    let row = store::update(&mut tx, caller.company(), p.workflow_id, &spec, active)
        .await
        .map_err(conflict_on(
            "name",
            "a workflow with this name in this integration",
        ))?
        .or_not_found("workflow")?;
    commit_audited(
        tx,
        &caller,
        "workflow.updated",
        "workflow",
        row.id,
        json!({"spec": spec, "active": active, "was_active": current.active}),
    )
    .await?;
    Ok(Json(row.into()))
}

/// Deletes a workflow and the activities it recorded; downstream is told they are retracted.
#[utoipa::path(
    delete,
    path = "/admin/v1/companies/{company_id}/workflows/{workflow_id}",
    tag = "workflows",
    params(WorkflowPath),
    responses((status = 204, description = "Deleted"), WriteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<WorkflowPath>,
) -> ApiResult<StatusCode> {
    use crm_sync_store::admin::activities;
    let mut tx = state.pool.begin().await?;
    let current = store::get(&mut *tx, caller.company(), p.workflow_id)
        .await?
        .or_not_found("workflow")?;
    // The schema cascades the delete to the activities: what downstream knows of them must go too.
    let recorded =
        activities::recorded_of_workflow(&mut tx, caller.company(), p.workflow_id).await?;
    let mut batch = Batch::new();
    batch
        .stage_activities(
            &mut tx,
            &state.activities_topic,
            caller.company(),
            &recorded,
            false,
            ActivityState::Retracted,
        )
        .await?;
    store::delete(&mut tx, caller.company(), p.workflow_id).await?;
    commit_audited(
        tx,
        &caller,
        "workflow.deleted",
        "workflow",
        p.workflow_id,
        json!({"name": current.name, "retracted_activities": recorded.len()}),
    )
    .await?;
    batch.publish(&state).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_active(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    active: bool,
) -> ApiResult<Json<WorkflowView>> {
    let mut tx = state.pool.begin().await?;
    let row = store::set_active(&mut tx, caller.company(), id, active)
        .await?
        .or_not_found("workflow")?;
    commit_audited(
        tx,
        caller,
        if active {
            "workflow.activated"
        } else {
            "workflow.deactivated"
        },
        "workflow",
        id,
        json!({}),
    )
    .await?;
    Ok(Json(row.into()))
}

/// Lets data through this workflow (evaluators pick the change up within a second).
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/workflows/{workflow_id}/activate",
    tag = "workflows",
    params(WorkflowPath),
    responses((status = 200, body = WorkflowView), WriteErrors)
)]
pub async fn activate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<WorkflowPath>,
) -> ApiResult<Json<WorkflowView>> {
    set_active(&state, &caller, p.workflow_id, true).await
}

/// Stops data flowing through this workflow; what it recorded stays.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/workflows/{workflow_id}/deactivate",
    tag = "workflows",
    params(WorkflowPath),
    responses((status = 200, body = WorkflowView), WriteErrors)
)]
pub async fn deactivate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<WorkflowPath>,
) -> ApiResult<Json<WorkflowView>> {
    set_active(&state, &caller, p.workflow_id, false).await
}
