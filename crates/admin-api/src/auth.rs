//! Authentication and authorization for every API route, in one place so that no handler can
//! forget it: a bearer token (401 when missing or unknown), the company in the path must be the
//! token's (404 otherwise: another company's data does not exist for this caller), and only
//! `admin` tokens may use methods other than GET (403).

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use crm_sync_store::admin::audit::Actor;
use crm_sync_store::admin::tokens::{self, AdminToken, Role};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated caller, put into the request's extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct Caller(pub AdminToken);

impl Caller {
    /// The company every query of this request is scoped by.
    pub fn company(&self) -> Uuid {
        self.0.company_id
    }

    /// Whether the caller holds an `admin` token (viewers may only read, and not everything).
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    pub fn actor(&self) -> Actor {
        Actor {
            token_id: Some(self.0.id),
            name: self.0.actor(),
        }
    }
}

/// What a viewer reads as the actor of a change made with an admin token: that an admin token
/// made it, not which one by its label (labels name whoever holds a token, and viewers may not
/// list the tokens).
pub const TOKEN_ACTOR_FOR_VIEWERS: &str = "admin token";

/// Who did something (`actor` as recorded; `by_token`: an admin token) as a caller reads it:
/// an admin (`admin`) as recorded, a viewer a token's actor as [`TOKEN_ACTOR_FOR_VIEWERS`].
pub fn actor_shown(admin: bool, actor: String, by_token: bool) -> String {
    if by_token && !admin {
        TOKEN_ACTOR_FOR_VIEWERS.to_owned()
    } else {
        actor
    }
}

/// Prefix of the company-scoped routes; the segment after it is the company id.
pub const COMPANY_PREFIX: &str = "/admin/v1/companies/";

pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let presented = bearer(req.headers()).map(str::to_owned);
    let checked = check(
        &state,
        presented.as_deref(),
        req.uri().path().to_owned(),
        req.method().clone(),
    )
    .await;
    match checked {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(error) => {
            metrics::counter!(crate::metric_definitions::REFUSED, "status" => error.status.as_str().to_owned())
                .increment(1);
            error.into_response()
        }
    }
}

async fn check(
    state: &AppState,
    presented: Option<&str>,
    path: String,
    method: Method,
) -> Result<Caller, ApiError> {
    let presented = presented.ok_or_else(|| {
        crate::error::unauthorized(
            "send `Authorization: Bearer <token>` (see `crm-sync admin create-token`)",
        )
    })?;
    let token = tokens::authenticate(&state.pool, presented)
        .await?
        .ok_or_else(|| crate::error::unauthorized("unknown, expired or revoked token"))?;
    if let Some(rest) = path.strip_prefix(COMPANY_PREFIX) {
        let segment = rest.split('/').next().unwrap_or_default();
        if Uuid::try_parse(segment).ok() != Some(token.company_id) {
            return Err(ApiError::not_found("company"));
        }
    }
    if !matches!(method, Method::GET | Method::HEAD) && token.role != Role::Admin {
        return Err(crate::error::forbidden());
    }
    Ok(Caller(token))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
