//! Every refusal is JSON: `{"error": "<stable code>", "message": "<this instance>", "field": "<path>"}`
//! (`field` only where one input is at fault, as a slash path such as `conditions/all/0/op`),
//! plus the `request_id` every answer carries in its `x-request-id` header: the shape of
//! `crm_sync_runtime::api_error`, which ingest answers with too.

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

pub use crm_sync_runtime::api_error::ApiError;

/// What a 401 of the admin port asks for.
const CHALLENGE: &str = "Bearer realm=\"crm-sync admin\"";

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `validation_failed`, `not_found`, `forbidden`.
    #[schema(example = "validation_failed")]
    pub error: String,
    /// What is wrong with this request, for people.
    pub message: String,
    /// The offending input, as a slash-separated path into the body or the query parameter's
    /// name, e.g. `conditions/all/0/op`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "conditions/all/0/op")]
    pub field: Option<String>,
    /// This request's id, also in the `x-request-id` header and the service's log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// A request without a valid admin token.
pub fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_challenge(CHALLENGE)
}

/// A viewer token asking for a change.
pub fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "this token has the viewer role: only admin tokens may change anything",
    )
}

pub type ApiResult<T> = Result<T, ApiError>;

/// `None` from a company-scoped lookup as the API's 404, which looks the same for a missing and
/// for another company's row.
pub trait OrNotFound<T> {
    fn or_not_found(self, what: &str) -> ApiResult<T>;
}

impl<T> OrNotFound<T> for Option<T> {
    fn or_not_found(self, what: &str) -> ApiResult<T> {
        self.ok_or_else(|| ApiError::not_found(what))
    }
}
