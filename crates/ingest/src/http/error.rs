use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 5;
/// The code and message of every 401.
pub const UNAUTHORIZED_CODE: &str = "unauthorized";
pub const UNAUTHORIZED_MESSAGE: &str = "the request is not authenticated for this integration; check the credentials the integration's set-up instructions give";

/// A refused request: answered as `{"error": "<code>", "message": "<human text>", "request_id":
/// "<id>"}`. The code is stable (clients and the `outcome` metric label use it); the message
/// explains this instance and never contains a secret.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<u64>,
    /// Sent as `WWW-Authenticate` with a 401.
    pub challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            challenge: None,
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

    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_signature", message)
    }

    pub fn stale_timestamp(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "stale_timestamp", message)
    }

    pub fn invalid_credentials(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials", message)
    }

    pub fn malformed_message(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_message", message)
    }

    /// The payload claims another CRM account than the integration is bound to.
    pub fn foreign_account(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "foreign_account", message)
    }

    /// Events that cannot be stored or published: the message names the field or the limit.
    pub fn refused(refusal: crate::check::Refusal) -> Self {
        use crate::check::Refusal;
        let (status, code) = match &refusal {
            Refusal::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_value"),
            Refusal::TooManyEvents { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events"),
            Refusal::EventTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "event_too_large"),
        };
        Self::new(status, code, refusal.to_string())
    }

    pub fn unsupported_media_type(expected: &[&str]) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send Content-Type {}", expected.join(" or ")),
        )
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this integration sends more requests than its limit; retry after {retry_after_secs} s"
                ),
            )
        }
    }

    /// A dependency is down: the sender should retry, and nothing was accepted.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    pub fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// The answer, with the request id in the body (a header is added by the caller). Every
    /// 401 reads the same: which check failed (a missing header, a wrong secret, an integration
    /// without credentials) would tell an unauthenticated caller how the integration is set
    /// up. The specific code stays in the log line and the `outcome` metric label.
    pub fn into_response_with(self, request_id: Option<&str>) -> Response {
        let (code, message) = if self.status == StatusCode::UNAUTHORIZED {
            (UNAUTHORIZED_CODE, UNAUTHORIZED_MESSAGE.to_owned())
        } else {
            (self.code, self.message)
        };
        let mut body = serde_json::json!({ "error": code, "message": message });
        if let Some(id) = request_id {
            body["request_id"] = serde_json::Value::from(id);
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_with(None)
    }
}
