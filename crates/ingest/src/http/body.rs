use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;

use super::ApiError;
use super::refuse;

/// Reads the whole body, refusing it with 413 as soon as it exceeds `limit` bytes (before
/// reading anything when `Content-Length` already says so).
pub(crate) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body exceeds the limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            let error = e.into_inner();
            if crm_sync_runtime::server::is_body_timeout(error.as_ref()) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the body stopped arriving before it was complete",
                )
            } else {
                refuse::malformed_message(format!("could not read the request body: {error}"))
            }
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
