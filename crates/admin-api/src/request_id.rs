//! Every answer of the admin port carries an `x-request-id` header, and every error body the same
//! id as `request_id`, so a user's report ("it said … with request id …") finds its log lines:
//! the id is a field of the request's span. Requests no route serves (an unknown path, a method
//! the path does not take) are answered with the same JSON error body as every other refusal.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::ApiError;

pub const HEADER: &str = "x-request-id";

/// Middleware: gives the request an id, logs within a span that carries it, answers with it.
pub async fn assign(request: Request, next: Next) -> Response {
    let id = Uuid::new_v4().simple().to_string();
    let span = tracing::info_span!(
        "admin request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let mut response = crm_sync_runtime::api_error::with_request_id(id.clone(), next.run(request))
        .instrument(span)
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

/// The answer for a path that exists with another method (axum's own is an empty body).
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// The answer for a path no route serves.
pub async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}
