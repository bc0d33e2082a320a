//! Deleting an integration. What goes with it is shown first (the page names the counts), and
//! the delete itself needs the integration's name as confirmation, so that a stray request
//! cannot remove a company's CRM connection.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use crm_sync_proto::v1::ActivityState;
use crm_sync_store::admin::activities;
use crm_sync_store::admin::integrations::{self as store, DeletionCounts};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::integrations::IntegrationPath;
use super::{ReadErrors, WriteErrors, commit_audited};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, QueryParams};
use crate::publish::Batch;

/// What deleting the integration removes. Platform users stay (with their other identities and
/// activities); the integration's recorded activities are retracted downstream.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionPreview {
    /// The name to pass as `confirm`.
    pub name: String,
    pub workflows: i64,
    pub active_workflows: i64,
    /// CRM users seen by this integration (their mappings to platform users go).
    pub crm_identities: i64,
    /// Activities waiting for their CRM user to be mapped.
    pub unmapped_activities: i64,
    /// Activities counting for platform users: deleted, and retracted downstream.
    pub recorded_activities: i64,
    /// Whether credentials (signing secret, API credentials, …) are stored; they are erased.
    pub has_credentials: bool,
    /// Backfills and the reconciliation schedule.
    pub sync_jobs: i64,
}

impl DeletionPreview {
    fn new(name: String, c: DeletionCounts) -> Self {
        DeletionPreview {
            name,
            workflows: c.workflows,
            active_workflows: c.active_workflows,
            crm_identities: c.crm_identities,
            unmapped_activities: c.unmapped_activities,
            recorded_activities: c.recorded_activities,
            has_credentials: c.has_credentials,
            sync_jobs: c.sync_jobs,
        }
    }
}

/// What deleting the integration would remove, for the confirmation.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/deletion",
    tag = "integrations",
    params(IntegrationPath),
    responses((status = 200, body = DeletionPreview), ReadErrors)
)]
pub async fn preview(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
) -> ApiResult<Json<DeletionPreview>> {
    let mut conn = state.pool.acquire().await?;
    let row = store::get(&mut *conn, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let counts = store::deletion_counts(&mut conn, row.id).await?;
    Ok(Json(DeletionPreview::new(row.name, counts)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// The integration's name, exactly: the confirmation that this one is meant.
    pub confirm: Option<String>,
}

/// Deletes the integration with its workflows, CRM identities, activities (retracted
/// downstream), credentials and sync jobs; platform users stay. Needs `?confirm=<its name>`:
/// without it the answer is 409 naming what would go.
#[utoipa::path(
    delete,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}",
    tag = "integrations",
    params(IntegrationPath, DeleteQuery),
    responses((status = 200, description = "Deleted: what went", body = DeletionPreview), WriteErrors)
)]
pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
    QueryParams(q): QueryParams<DeleteQuery>,
) -> ApiResult<Json<DeletionPreview>> {
    let company = caller.company();
    let mut tx = state.pool.begin().await?;
    let row = store::lock(&mut tx, company, p.integration_id)
        .await?
        .or_not_found("integration")?;
    let counts = store::deletion_counts(&mut tx, row.id).await?;
    match q.confirm.as_deref() {
        Some(name) if name == row.name => {}
        given => {
            let what = format!(
                "deleting integration {:?} removes {} workflows ({} active), {} CRM identities, \
                 {} unmapped and {} recorded activities, {}{} sync jobs; confirm with ?confirm=<its name>",
                row.name,
                counts.workflows,
                counts.active_workflows,
                counts.crm_identities,
                counts.unmapped_activities,
                counts.recorded_activities,
                if counts.has_credentials {
                    "its credentials, "
                } else {
                    ""
                },
                counts.sync_jobs,
            );
            return Err(match given {
                None => {
                    ApiError::new(StatusCode::CONFLICT, "confirmation_required", what).at("confirm")
                }
                Some(_) => ApiError::invalid(
                    "confirm",
                    format!("confirm does not match the name; {what}"),
                ),
            });
        }
    }
    // The schema cascades the delete to the activities: what downstream knows of them must go.
    let recorded = activities::recorded_of_integration(&mut tx, company, row.id).await?;
    let mut batch = Batch::new();
    batch
        .stage_activities(
            &mut tx,
            &state.activities_topic,
            company,
            &recorded,
            false,
            ActivityState::Retracted,
        )
        .await?;
    store::delete(&mut tx, company, row.id).await?;
    let preview = DeletionPreview::new(row.name.clone(), counts);
    commit_audited(
        tx,
        &caller,
        "integration.deleted",
        "integration",
        row.id,
        json!({"name": row.name, "crm": row.crm, "removed": serde_json::to_value(&preview).unwrap_or_default()}),
    )
    .await?;
    batch.publish(&state).await;
    Ok(Json(preview))
}
