//! The API's handlers, grouped by resource. Each handler is declared once with
//! `#[utoipa::path]` and registered through `routes!`, which puts it into the router and the
//! OpenAPI document together.

pub mod activities;
pub mod audit;
pub mod backfills;
pub mod company;
pub mod credentials;
pub mod dry_run;
pub mod health;
pub mod integration_delete;
pub mod integrations;
pub mod people;
pub mod session;
pub mod teams;
pub mod tokens;
pub mod trail;
pub mod users;
pub mod workflows;

use serde::Deserialize;
use sqlx::PgConnection;
use utoipa::{IntoParams, IntoResponses};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::ApiDoc;
use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};

pub fn router() -> OpenApiRouter<AppState> {
    use utoipa::OpenApi;
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(session::get_session))
        .routes(routes!(company::get, company::update))
        .routes(routes!(integrations::list, integrations::create))
        .routes(routes!(
            integrations::get,
            integrations::update,
            integration_delete::delete
        ))
        .routes(routes!(integration_delete::preview))
        .routes(routes!(integrations::rotate_webhook_token))
        .routes(routes!(credentials::get, credentials::update))
        .routes(routes!(backfills::list, backfills::start))
        .routes(routes!(backfills::get))
        .routes(routes!(backfills::cancel))
        .routes(routes!(backfills::sync_status))
        .routes(routes!(health::get))
        .routes(routes!(trail::record))
        .routes(routes!(trail::recent))
        .routes(routes!(trail::dead_letters))
        .routes(routes!(workflows::list, workflows::create))
        .routes(routes!(
            workflows::get,
            workflows::update,
            workflows::delete
        ))
        .routes(routes!(workflows::activate))
        .routes(routes!(workflows::deactivate))
        .routes(routes!(dry_run::dry_run))
        .routes(routes!(teams::list, teams::create))
        .routes(routes!(teams::get, teams::update, teams::delete))
        .routes(routes!(teams::place_member, teams::remove_member))
        .routes(routes!(users::list, users::create))
        .routes(routes!(users::get, people::rename))
        .routes(routes!(users::map_identity))
        .routes(routes!(people::unmap))
        .routes(routes!(people::deactivate))
        .routes(routes!(people::reactivate))
        .routes(routes!(people::merge))
        .routes(routes!(users::list_identities))
        .routes(routes!(activities::list))
        .routes(routes!(activities::leaderboard))
        .routes(routes!(audit::list))
        .routes(routes!(tokens::list))
        .routes(routes!(tokens::revoke))
}

/// Errors any read can answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum ReadErrors {
    /// Missing, malformed, unknown or revoked bearer token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such resource in this company (another company's ids answer this too).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// A query parameter is invalid; `field` names it.
    #[response(status = 422)]
    Invalid(ErrorBody),
}

/// Errors any change can answer.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub enum WriteErrors {
    /// The body is not JSON.
    #[response(status = 400)]
    Malformed(ErrorBody),
    /// Missing, malformed, unknown or revoked bearer token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token has the viewer role.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such resource in this company (another company's ids answer this too).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// The change conflicts with existing data (e.g. a name already taken); `field` names it.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// Invalid input; `field` points at it (e.g. `conditions/all/0/op`).
    #[response(status = 422)]
    Invalid(ErrorBody),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct CompanyPath {
    /// The company (must be the token's).
    pub company_id: Uuid,
}

/// Records the change in the audit log, in the change's own transaction.
pub async fn audit(
    conn: &mut PgConnection,
    caller: &Caller,
    action: &str,
    target_type: &str,
    target_id: impl ToString,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    crm_sync_store::admin::audit::record(
        conn,
        caller.company(),
        &caller.actor(),
        action,
        target_type,
        &target_id.to_string(),
        details,
    )
    .await?;
    Ok(())
}

/// Records the change in the audit log and commits it with the change: every write ends so, and
/// a change without its audit record must never commit.
pub async fn commit_audited(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    caller: &Caller,
    action: &str,
    target_type: &str,
    target_id: impl ToString,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    audit(&mut tx, caller, action, target_type, target_id, details).await?;
    tx.commit().await?;
    Ok(())
}

/// A required text input: trimmed, non-empty, at most `max` characters, without control
/// characters (a NUL cannot even be stored).
pub fn text(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    if v.chars().count() > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    Ok(v.to_owned())
}

/// Turns a unique violation into a 409 naming `field`; anything else stays a database error.
pub fn conflict_on(field: &'static str, what: &'static str) -> impl Fn(sqlx::Error) -> ApiError {
    move |e| match crm_sync_store::admin::unique_violation(&e) {
        Some(_) => ApiError::conflict(field, format!("{what} already exists")),
        None => e.into(),
    }
}

/// `Option<Option<T>>` for PATCH bodies: absent keeps, `null` clears, a value sets.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
