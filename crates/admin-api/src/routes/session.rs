use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ErrorBody;

/// Who the presented token is.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub token_id: Uuid,
    pub company_id: Uuid,
    pub company_name: String,
    /// `admin` or `viewer`.
    pub role: String,
}

/// The token's company and role: what the page signs in with.
#[utoipa::path(
    get,
    path = "/admin/v1/session",
    tag = "session",
    responses(
        (status = 200, body = SessionView),
        (status = 401, description = "Missing, malformed, unknown or revoked bearer token", body = ErrorBody),
    )
)]
pub async fn get_session(Extension(caller): Extension<Caller>) -> Json<SessionView> {
    let t = &caller.0;
    Json(SessionView {
        token_id: t.id,
        company_id: t.company_id,
        company_name: t.company_name.clone(),
        role: t.role.as_str().to_owned(),
    })
}
