//! Every refusal is JSON: `{"error": "<stable code>", "message": "<this instance>", "field": "<path>"}`
//! (`field` only where one input is at fault, as a slash path such as `conditions/all/0/op`),
//! plus the `request_id` every answer carries in its `x-request-id` header.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

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

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token has the viewer role: only admin tokens may change anything",
        )
    }

    /// Missing, foreign and malformed ids look alike, so probing reveals nothing.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "validation_failed",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
            field: Some(field.into()),
        }
    }

    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed; see the service log"),
        )
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if matches!(
            error,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
        ) {
            tracing::warn!(%error, "database unavailable");
            let mut e = Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry shortly",
            );
            e.field = None;
            return e;
        }
        // A value the database refuses (out of range, NUL, too long for an index) is the
        // caller's input, whatever route let it through.
        if let Some(reason) = crm_sync_store::refusal::refused_value(&error) {
            tracing::info!(%reason, "the database refused a value of the request");
            return Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!("a value of the request cannot be stored ({reason})"),
            );
        }
        Self::internal("database query", error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_owned(),
            message: self.message,
            field: self.field,
            request_id: crate::request_id::current(),
        };
        let mut response = (self.status, Json(body)).into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"crm-sync admin\""),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
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
