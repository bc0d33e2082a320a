//! An integration's health at a glance: when its CRM last reached us, what matched in the last
//! hour, the last reconciliation, and a red state when nothing arrived for longer than the
//! company's `silence_alert_minutes` while workflows are active (an integration without active
//! workflows expects nothing and is `idle`).

use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use crm_sync_store::admin::health as store;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ReadErrors;
use super::integrations::IntegrationPath;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiResult, OrNotFound};
use crate::extract::ApiPath;

/// What an admin reads to judge whether an integration works.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    pub integration_id: Uuid,
    /// `ok`, `red` (see `reasons`) or `idle` (no active workflow, so nothing is expected).
    #[schema(example = "red")]
    pub state: String,
    /// Why the state is not `ok`, in words.
    pub reasons: Vec<String>,
    /// When the CRM last delivered a webhook (precise to a few seconds).
    pub last_webhook_at: Option<DateTime<Utc>>,
    pub last_reconciliation_at: Option<DateTime<Utc>>,
    pub last_reconciliation_error: Option<String>,
    pub active_workflows: i64,
    /// Activities recorded or updated in the last hour: events that matched a workflow.
    pub matched_last_hour: i64,
    /// Of those, the ones waiting for their CRM user to be mapped.
    pub unmapped_last_hour: i64,
    /// Activities retracted in the last hour.
    pub retracted_last_hour: i64,
    /// The company's threshold for `red` (`settings.silence_alert_minutes`).
    pub silence_alert_minutes: i32,
}

/// The state and its reasons from the figures, as of `now`.
fn judge(
    h: &store::HealthRow,
    last_webhook_at: Option<DateTime<Utc>>,
    reconciliation_error: Option<&str>,
    now: DateTime<Utc>,
) -> (String, Vec<String>) {
    if h.active_workflows == 0 {
        return (
            "idle".into(),
            vec!["no active workflow: nothing is expected".into()],
        );
    }
    let mut reasons = Vec::new();
    let silence = Duration::minutes(i64::from(h.silence_alert_minutes));
    match last_webhook_at {
        None => reasons.push(format!(
            "no webhook has arrived yet while {} workflow(s) are active",
            h.active_workflows
        )),
        Some(at) if now - at > silence => reasons.push(format!(
            "no webhook for {} minutes while {} workflow(s) are active (alert after {})",
            (now - at).num_minutes(),
            h.active_workflows,
            h.silence_alert_minutes
        )),
        Some(_) => {}
    }
    if let Some(error) = reconciliation_error {
        reasons.push(format!("the last reconciliation failed: {error}"));
    }
    let state = if reasons.is_empty() { "ok" } else { "red" };
    (state.into(), reasons)
}

#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/health",
    tag = "integrations",
    params(IntegrationPath),
    responses((status = 200, body = HealthView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
) -> ApiResult<Json<HealthView>> {
    let health = store::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let sync = crm_sync_store::sync_status::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let (verdict, reasons) = judge(
        &health,
        sync.last_webhook_at,
        sync.last_reconciliation_error.as_deref(),
        Utc::now(),
    );
    Ok(Json(HealthView {
        integration_id: p.integration_id,
        state: verdict,
        reasons,
        last_webhook_at: sync.last_webhook_at,
        last_reconciliation_at: sync.last_reconciliation_at,
        last_reconciliation_error: sync.last_reconciliation_error,
        active_workflows: health.active_workflows,
        matched_last_hour: health.matched_last_hour,
        unmapped_last_hour: health.unmapped_last_hour,
        retracted_last_hour: health.retracted_last_hour,
        silence_alert_minutes: health.silence_alert_minutes,
    }))
}
