//! An integration's pulls as admins see them: backfills of history (started, watched with their
//! progress, cancelled) and the sync status (is data flowing: the last webhook, the last
//! reconciliation and the missed webhooks it made up for). The jobs themselves run in ingest;
//! here they are only asked for and read.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_store::sync_jobs::Job;
use crm_sync_store::sync_jobs::backfills::{self as store, Refused};
use crm_sync_store::sync_status::{ObjectNotRead, SyncStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::integrations::{IntegrationPath, ListQuery};
use super::{ReadErrors, WriteErrors};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, JsonBody, QueryParams};
use crate::paging::{self, Page};

/// A backfill: what it pulls, how far it has come, and who asked for it.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackfillView {
    pub id: Uuid,
    pub integration_id: Uuid,
    /// `pending`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// Records modified at or after this time are pulled.
    pub since: DateTime<Utc>,
    /// The CRM objects pulled.
    pub objects: Vec<String>,
    pub records_scanned: i64,
    pub records_published: i64,
    /// How many records the CRM said there are to scan (null until it said).
    pub records_expected: Option<i64>,
    /// Of `records_expected`, 0–100 (null while unknown; 100 once succeeded).
    pub percent: Option<f64>,
    /// Records scanned per second since the job started.
    pub rate_per_sec: Option<f64>,
    /// Seconds left at that rate, while running with a known size.
    pub eta_secs: Option<i64>,
    /// When it should be done at that rate.
    pub eta_at: Option<DateTime<Utc>>,
    /// Requests made to the CRM's API.
    pub api_calls: i64,
    /// The last failure (the job retries transient ones from its checkpoint).
    pub last_error: Option<String>,
    /// Runs tried so far (a retried or resumed job counts each).
    pub attempts: i32,
    /// Set once someone asked it to stop; a running job stops after its current page.
    pub cancel_requested: bool,
    /// Who asked for it: a token (to viewers only `admin token`, not its label), `cli`, or
    /// `system` (on connect).
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

impl BackfillView {
    /// The job as `caller` reads it at `now`.
    pub fn new(job: Job, now: DateTime<Utc>, caller: &Caller) -> BackfillView {
        let progress = job.progress(now);
        let by_token = crm_sync_store::admin::tokens::is_token_actor(&job.requested_by);
        BackfillView {
            percent: progress.percent.map(|p| round(p, 1)),
            rate_per_sec: progress.rate_per_sec.map(|r| round(r, 2)),
            eta_secs: progress.eta_secs,
            eta_at: progress
                .eta_secs
                .map(|s| now + chrono::Duration::seconds(s)),
            id: job.id,
            integration_id: job.integration_id,
            state: job.state,
            since: job.since,
            objects: job.objects,
            records_scanned: job.records_scanned,
            records_published: job.records_published,
            records_expected: job.records_expected,
            api_calls: job.api_calls,
            last_error: job.last_error,
            attempts: job.attempts,
            cancel_requested: job.cancel_requested,
            requested_by: crate::auth::actor_shown(caller.is_admin(), job.requested_by, by_token),
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
        }
    }
}

fn refused(error: Refused) -> ApiError {
    let message = error.to_string();
    match error {
        Refused::NoIntegration => ApiError::not_found("integration"),
        Refused::NoJob => ApiError::not_found("backfill"),
        Refused::Invalid { field, message } => ApiError::invalid(field, message),
        Refused::NotPullable(_) => ApiError::new(StatusCode::CONFLICT, "not_pullable", message),
        Refused::AlreadyActive(..) => {
            ApiError::new(StatusCode::CONFLICT, "backfill_active", message)
        }
        Refused::AlreadyEnded(..) => ApiError::new(StatusCode::CONFLICT, "backfill_ended", message),
        Refused::Sealed(e) => ApiError::internal("opening the integration's credentials", e),
        Refused::Database(e) => e.into(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackfillPath {
    pub company_id: Uuid,
    pub integration_id: Uuid,
    pub job_id: Uuid,
}

/// What to backfill.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewBackfill {
    /// Pull records modified since then: an RFC 3339 date (`2026-11-01`, midnight UTC) or
    /// date-time with an offset; in the past, not before 2000-01-01.
    #[schema(example = "2026-11-01")]
    pub since: String,
    /// CRM objects to pull, each the object of one of the integration's workflows; default: the
    /// objects of its active workflows.
    pub objects: Option<Vec<String>>,
}

/// Starts a backfill: the integration's records modified since `since` are pulled from the
/// CRM's API and judged like webhooks (409 while another backfill of the integration is pending
/// or running, or when the integration has no API credentials).
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/backfills",
    tag = "backfills",
    params(IntegrationPath),
    request_body = NewBackfill,
    responses((status = 201, body = BackfillView), WriteErrors)
)]
pub async fn start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
    JsonBody(body): JsonBody<NewBackfill>,
) -> ApiResult<(StatusCode, Json<BackfillView>)> {
    let now = Utc::now();
    let since = store::parse_since(&body.since, now).map_err(refused)?;
    let key = super::credentials::key(&state)?;
    let job = store::start(
        &state.pool,
        key,
        &caller.actor(),
        caller.company(),
        p.integration_id,
        since,
        body.objects.as_deref(),
    )
    .await
    .map_err(refused)?;
    Ok((
        StatusCode::CREATED,
        Json(BackfillView::new(job, now, &caller)),
    ))
}

async fn integration_exists(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<()> {
    crm_sync_store::admin::integrations::get(&state.pool, caller.company(), id)
        .await?
        .map(|_| ())
        .or_not_found("integration")
}

/// The integration's backfills, newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/backfills",
    tag = "backfills",
    params(IntegrationPath, ListQuery),
    responses((status = 200, body = Page<BackfillView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page<BackfillView>>> {
    let (limit, after) = paging::keyset_args(q.limit, q.cursor.as_deref())?;
    integration_exists(&state, &caller, p.integration_id).await?;
    let rows = store::list(
        &state.pool,
        caller.company(),
        p.integration_id,
        after,
        limit + 1,
    )
    .await?;
    let now = Utc::now();
    Ok(Json(paging::keyset(rows, limit, |job| {
        BackfillView::new(job, now, &caller)
    })))
}

/// One backfill with its progress: percent, rate and ETA.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/backfills/{job_id}",
    tag = "backfills",
    params(BackfillPath),
    responses((status = 200, body = BackfillView), ReadErrors)
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<BackfillPath>,
) -> ApiResult<Json<BackfillView>> {
    store::get(&state.pool, caller.company(), p.integration_id, p.job_id)
        .await?
        .map(|job| Json(BackfillView::new(job, Utc::now(), &caller)))
        .or_not_found("backfill")
}

/// Cancels a backfill: a pending one at once, a running one after its current page (its state
/// turns `cancelled` then). 409 once it has ended.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/backfills/{job_id}/cancel",
    tag = "backfills",
    params(BackfillPath),
    responses((status = 200, body = BackfillView), WriteErrors)
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<BackfillPath>,
) -> ApiResult<Json<BackfillView>> {
    let job = store::cancel(
        &state.pool,
        &caller.actor(),
        caller.company(),
        p.integration_id,
        p.job_id,
    )
    .await
    .map_err(refused)?;
    Ok(Json(BackfillView::new(job, Utc::now(), &caller)))
}

/// The latest reconciliation: what it scanned and published, and how it ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReconciliationView {
    pub at: DateTime<Utc>,
    pub job_id: Option<Uuid>,
    pub records_scanned: i64,
    pub records_published: i64,
    pub api_calls: i64,
    /// `succeeded` (every object read), `partial` (the run went through, but the CRM refused
    /// the objects in `objects_not_read`; the others were reconciled) or `failed` (the run
    /// failed as a whole: see `error`).
    #[schema(example = "partial")]
    pub outcome: String,
    /// Why it failed as a whole, if it did (null for a `partial` run).
    pub error: Option<String>,
    /// The objects the CRM refused while the others were reconciled, each with the CRM's
    /// answer; empty unless `partial`.
    pub objects_not_read: Vec<ObjectNotReadView>,
}

/// An object a reconciliation could not read, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectNotReadView {
    #[schema(example = "Quote")]
    pub object: String,
    /// The CRM's answer, e.g. an `INVALID_FIELD` for a field the API user may not read.
    pub error: String,
}

impl From<&ObjectNotRead> for ObjectNotReadView {
    fn from(o: &ObjectNotRead) -> Self {
        ObjectNotReadView {
            object: o.object.clone(),
            error: o.error.clone(),
        }
    }
}

impl ReconciliationView {
    /// The status's last reconciliation; None before the first one.
    fn of(status: &SyncStatus) -> Option<ReconciliationView> {
        Some(ReconciliationView {
            at: status.last_reconciliation_at?,
            job_id: status.last_reconciliation_job,
            records_scanned: status.last_reconciliation_scanned,
            records_published: status.last_reconciliation_published,
            api_calls: status.last_reconciliation_api_calls,
            outcome: status.reconciliation_outcome()?.as_str().to_owned(),
            error: status.last_reconciliation_error.clone(),
            objects_not_read: status
                .last_reconciliation_objects_not_read
                .iter()
                .map(ObjectNotReadView::from)
                .collect(),
        })
    }
}

/// Whether the integration's data is flowing.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncStatusView {
    pub integration_id: Uuid,
    /// When the CRM last reached ingest (precise to a few seconds); null if never.
    pub last_webhook_at: Option<DateTime<Utc>>,
    /// When ingest last refused one of the integration's webhook requests, and why (status,
    /// code and message); null if never.
    pub last_refused_webhook_at: Option<DateTime<Utc>>,
    pub last_webhook_refusal: Option<String>,
    /// Null until a reconciliation has run.
    pub last_reconciliation: Option<ReconciliationView>,
    /// Records pulls found changed that no webhook had brought: webhooks the CRM never delivered.
    pub missed_webhooks_fixed: i64,
    pub last_fixed_at: Option<DateTime<Utc>>,
    /// The pending or running backfill, if any.
    pub active_backfill: Option<BackfillView>,
}

/// The integration's sync status: last webhook, last reconciliation, missed webhooks fixed, and
/// the backfill in progress.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/integrations/{integration_id}/sync-status",
    tag = "backfills",
    params(IntegrationPath),
    responses((status = 200, body = SyncStatusView), ReadErrors)
)]
pub async fn sync_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(p): ApiPath<IntegrationPath>,
) -> ApiResult<Json<SyncStatusView>> {
    let status = crm_sync_store::sync_status::get(&state.pool, caller.company(), p.integration_id)
        .await?
        .or_not_found("integration")?;
    let active = store::active(&state.pool, caller.company(), p.integration_id).await?;
    let now = Utc::now();
    Ok(Json(SyncStatusView {
        integration_id: status.integration_id,
        last_webhook_at: status.last_webhook_at,
        last_refused_webhook_at: status.last_refused_webhook_at,
        last_webhook_refusal: status.last_webhook_refusal.clone(),
        last_reconciliation: ReconciliationView::of(&status),
        missed_webhooks_fixed: status.missed_webhooks_fixed,
        last_fixed_at: status.last_fixed_at,
        active_backfill: active.map(|job| BackfillView::new(job, now, &caller)),
    }))
}
