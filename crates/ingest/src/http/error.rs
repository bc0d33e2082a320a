use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u32 = 5;

/// A refused request: answered as `{"error": "<code>", "message": "<human text>"}`. The code is
/// stable (clients and the `outcome` metric label use it); the message explains this instance.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// Unknown, unparsable, and other-CRM integration ids look alike, so that probing reveals
    /// nothing about which integrations exist.
    pub fn unknown_integration() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            "no integration of this kind with this id",
        )
    }

    pub fn invalid_token(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", message)
    }

    pub fn malformed_message(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_message", message)
    }

    /// A dependency is down: the sender should retry, and nothing was accepted.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}
