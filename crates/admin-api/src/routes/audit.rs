use axum::extract::State;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_store::admin::audit::{self as store, Entry};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::integrations::ListQuery;
use super::{CompanyPath, ReadErrors};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::extract::QueryParams;
use crate::paging::{self, Cursor, Page};

/// One change: who, what, when.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    pub id: i64,
    /// The admin token that made the change (absent for the command-line tool).
    pub token_id: Option<Uuid>,
    pub actor: String,
    /// e.g. `integration.updated`, `team.member_placed`.
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    /// What changed.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub at: DateTime<Utc>,
}

impl From<Entry> for AuditEntryView {
    fn from(e: Entry) -> Self {
        AuditEntryView {
            id: e.id,
            token_id: e.token_id,
            actor: e.actor,
            action: e.action,
            target_type: e.target_type,
            target_id: e.target_id,
            details: e.details,
            at: e.at,
        }
    }
}

/// The company's audit log, newest first. Viewers do not see the changes to admin tokens (who
/// holds access), as they may not list the tokens.
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/audit-log",
    tag = "audit",
    params(CompanyPath, ListQuery),
    responses((status = 200, body = Page<AuditEntryView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page<AuditEntryView>>> {
    let limit = paging::limit(q.limit)?;
    let before = paging::before(q.cursor.as_deref())?;
    let mut rows = store::list(
        &state.pool,
        caller.company(),
        before,
        limit + 1,
        caller.is_admin(),
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| rows.last().map(|r| Cursor::Before(r.id).encode()))
        .flatten();
    Ok(Json(Page {
        items: rows.into_iter().map(AuditEntryView::from).collect(),
        next_cursor,
    }))
}
