//! The webhook API's refusals, in the shape every crm-sync API answers with
//! ([`ApiError`]): a stable code for clients and the `outcome` metric label, a message that
//! explains this instance and never contains a secret.

use axum::http::StatusCode;
use axum::response::Response;

pub use crm_sync_runtime::api_error::ApiError;

/// The code and message of every 401.
pub const UNAUTHORIZED_CODE: &str = "unauthorized";
pub const UNAUTHORIZED_MESSAGE: &str = "the request is not authenticated for this integration; check the credentials the integration's set-up instructions give";

/// The answer, with the request id in the body (a header is added by the caller). Every 401
/// reads the same: which check failed (a missing header, a wrong secret, an integration without
/// credentials) would tell an unauthenticated caller how the integration is set up. The
/// specific code stays in the log line and the `outcome` metric label.
pub fn answer(error: ApiError, request_id: &str) -> Response {
    let error = if error.status == StatusCode::UNAUTHORIZED {
        ApiError {
            code: UNAUTHORIZED_CODE,
            message: UNAUTHORIZED_MESSAGE.to_owned(),
            ..error
        }
    } else {
        error
    };
    error.into_response_with(Some(request_id))
}

/// Unknown, unparsable, and other-CRM integration ids look alike, so that probing reveals
/// nothing about which integrations exist.
pub fn unknown_integration() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_integration",
        "no integration of this kind with this id",
    )
}

pub fn invalid_token(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
}

pub fn invalid_signature(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", message)
}

pub fn stale_timestamp(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "stale_timestamp", message)
}

pub fn invalid_credentials(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_credentials", message)
}

pub fn malformed_message(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_message", message)
}

/// The payload claims another CRM account than the integration is bound to.
pub fn foreign_account(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "foreign_account", message)
}

/// Events that cannot be stored or published: the message names the field or the limit.
pub fn refused(refusal: crate::check::Refusal) -> ApiError {
    use crate::check::Refusal;
    let status = match &refusal {
        Refusal::Invalid { .. } => StatusCode::BAD_REQUEST,
        Refusal::TooManyEvents { .. } | Refusal::EventTooLarge { .. } => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
    };
    ApiError::new(status, refusal.code(), refusal.to_string())
}

pub fn unsupported_media_type(expected: &[&str]) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("send Content-Type {}", expected.join(" or ")),
    )
}

pub fn rate_limited(retry_after_secs: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this integration sends more requests than its limit; retry after {retry_after_secs} s"
        ),
    )
    .with_retry_after(retry_after_secs)
}
