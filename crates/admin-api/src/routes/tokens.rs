//! A company's admin tokens: listed without secrets (only a hash of each is stored) and revoked
//! at once. Admin tokens only: a viewer may not see who else holds access.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use crm_sync_store::admin::tokens::{self as store, Role, TokenRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::integrations::ListQuery;
use super::{CompanyPath, ReadErrors, WriteErrors};
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, OrNotFound};
use crate::extract::{ApiPath, QueryParams};
use crate::paging::{self, Page};

/// A token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    /// `admin` or `viewer`.
    pub role: String,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Set once revoked: the token answers 401 from then on.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Neither expired nor revoked.
    pub live: bool,
}

impl From<TokenRow> for TokenView {
    fn from(r: TokenRow) -> Self {
        TokenView {
            live: r.revoked_at.is_none() && r.expires_at > Utc::now(),
            id: r.id,
            role: r.role,
            label: r.label,
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TokenPath {
    pub company_id: Uuid,
    pub token_id: Uuid,
}

fn admin_only(caller: &Caller) -> ApiResult<()> {
    if caller.0.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only admin tokens may list or revoke the company's tokens",
        ))
    }
}

/// The company's admin tokens, live or not (admin tokens only).
#[utoipa::path(
    get,
    path = "/admin/v1/companies/{company_id}/admin-tokens",
    tag = "tokens",
    params(CompanyPath, ListQuery),
    responses((status = 200, body = Page<TokenView>), ReadErrors)
)]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Page<TokenView>>> {
    admin_only(&caller)?;
    let (limit, after) = paging::keyset_args(q.limit, q.cursor.as_deref())?;
    let rows = store::list(&state.pool, caller.company(), after, limit + 1).await?;
    Ok(Json(paging::keyset(rows, limit, TokenView::from)))
}

/// Revokes a token at once, audited; revoking a revoked token changes nothing.
#[utoipa::path(
    post,
    path = "/admin/v1/companies/{company_id}/admin-tokens/{token_id}/revoke",
    tag = "tokens",
    params(TokenPath),
    responses((status = 200, body = TokenView), WriteErrors)
)]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(path): ApiPath<TokenPath>,
) -> ApiResult<Json<TokenView>> {
    admin_only(&caller)?;
    let revoked = store::revoke(
        &state.pool,
        Some(caller.company()),
        path.token_id,
        &caller.actor(),
    )
    .await?
    .or_not_found("admin token")?;
    Ok(Json(TokenView::from(revoked)))
}
