//! The one refusal every HTTP API answers with (ingest's webhooks, admin-api):
//! `{"error": "<stable code>", "message": "<this instance>", "field": "<path>", "request_id": "<id>"}`.
//! The code is stable (clients and the `outcome` metric labels use it); the message explains this
//! instance and never carries a secret; `field` names the one input at fault, where there is one,
//! as a slash path such as `conditions/all/0/op`; `request_id` is the id the answer's
//! `x-request-id` header and the request's log lines carry.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a client should wait before retrying after a 503.
const RETRY_AFTER_SECS: u64 = 5;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// Runs `work` as the request `id`: every [`ApiError`] answered within carries the id.
pub async fn with_request_id<F: Future>(id: String, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// The id of the request being answered (none outside [`with_request_id`]).
pub fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The input at fault, as a slash path into the body or a query parameter's name.
    pub field: Option<String>,
    /// Sent as `Retry-After` (seconds).
    pub retry_after: Option<u64>,
    /// Sent as `WWW-Authenticate`.
    pub challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// A 422: the input at `field` is not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            message,
        )
        .at(field)
    }

    /// A 409: the input at `field` collides with what exists.
    pub fn conflict(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message).at(field)
    }

    /// Missing, foreign and malformed ids look alike, so probing reveals nothing.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such {what}"),
        )
    }

    /// A dependency is down: the sender should retry, and nothing was accepted.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }

    /// A 500 whose cause goes to the log, not to the caller.
    pub fn internal(context: &str, error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed; see the service log"),
        )
    }

    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The answer, with `request_id` in the body (the caller adds the header).
    pub fn into_response_with(self, request_id: Option<&str>) -> Response {
        let mut body = serde_json::json!({ "error": self.code, "message": self.message });
        if let Some(field) = self.field {
            body["field"] = serde_json::Value::from(field);
        }
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
        let id = current_request_id();
        self.into_response_with(id.as_deref())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if matches!(
            error,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
        ) {
            tracing::warn!(%error, "database unavailable");
            return Self::unavailable("unavailable", "the database is unavailable; retry shortly");
        }
        if crate::refusal::busy(&error) {
            tracing::warn!(%error, "database busy");
            return Self::unavailable(
                "unavailable",
                "the database is busy (a lock held elsewhere or a conflict); retry shortly",
            );
        }
        // A value the database refuses (out of range, NUL, too long for an index) is the
        // caller's input, whatever route let it through.
        if let Some(reason) = crate::refusal::refused_value(&error) {
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_refusal_names_its_field_and_the_request_it_answers() {
        let response = with_request_id("r-1".to_owned(), async {
            ApiError::invalid("conditions/all/0/op", "unknown operator").into_response()
        })
        .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = body_of(response).await;
        assert_eq!(body["error"], "validation_failed");
        assert_eq!(body["field"], "conditions/all/0/op");
        assert_eq!(body["request_id"], "r-1");
    }

    #[tokio::test]
    async fn a_database_away_is_a_503_to_retry_and_a_refused_value_a_422() {
        let away = ApiError::from(sqlx::Error::PoolTimedOut).into_response();
        assert_eq!(away.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(away.headers()[header::RETRY_AFTER], "5");
        let body = body_of(away).await;
        assert_eq!(body["error"], "unavailable");
        assert!(body.get("field").is_none() && body.get("request_id").is_none());
        let refused = ApiError::from(sqlx::Error::Decode("not a number".into()));
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
