//! `POST /v1/integrations/{integration_id}/events`
//!
//! The generic JSON form of `CrmEvent` (one, or an array), for any source without a connector,
//! signed with `X-Crm-Sync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! keyed with the integration's signing secret (`webhook_secret`). Timestamps more than
//! `ingest.signature_tolerance_secs` away from now are refused as replays.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::pipeline::{self, Accepted, Endpoint};
use super::{ApiError, AppState};
use crate::generic::{self, signature};

const ENDPOINT: Endpoint = Endpoint {
    crm: "generic",
    name: "events",
    describes: "generic events",
};

pub(crate) async fn events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let integration_id = pipeline::path_id(path);
    pipeline::serve(ENDPOINT, integration_id, &headers, || {
        accept(&state, integration_id, &headers, body)
    })
    .await
}

async fn accept(
    state: &AppState,
    integration_id: Option<Uuid>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let resolved = state.integration(ENDPOINT, integration_id).await?;
    let integration = &resolved.integration;
    let secret = state
        .secrets(&resolved, "signing secret (credentials.webhook_secret)")?
        .webhook_secret
        .clone()
        .ok_or_else(|| {
            ApiError::invalid_credentials(
                "the integration has no signing secret (credentials.webhook_secret) configured",
            )
        })?;
    let header = headers
        .get(signature::HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::invalid_signature("the request has no X-Crm-Sync-Signature header")
        })?;
    let parsed = signature::parse_header(header).ok_or_else(|| {
        ApiError::invalid_signature("X-Crm-Sync-Signature is not t=<unix seconds>,v1=<hex>")
    })?;
    let age = chrono::Utc::now()
        .timestamp()
        .saturating_sub(parsed.timestamp);
    let tolerance = state.signature_tolerance.as_secs() as i64;
    if age.abs() > tolerance {
        return Err(ApiError::stale_timestamp(format!(
            "the signature's timestamp is {} s away from now; at most {tolerance} s are accepted",
            age.abs()
        )));
    }
    let bytes = state.json_body(headers, body).await?;
    if !signature::verify(secret.as_bytes(), &parsed, &bytes) {
        return Err(ApiError::invalid_signature(
            "X-Crm-Sync-Signature does not match this body and the integration's signing secret",
        ));
    }
    state.rate_limit(integration.id)?;
    let now = chrono::Utc::now();
    let events = generic::to_events(integration.id, &integration.crm_account_id, &bytes, now)
        .map_err(|e| ApiError::malformed_message(e.to_string()))?;
    if let Some(other) = events
        .iter()
        .find(|e| e.crm_account_id != integration.crm_account_id)
    {
        return Err(ApiError::foreign_account(format!(
            "crmAccountId {} is not the account this integration is bound to",
            other.crm_account_id
        )));
    }
    state.accept(&resolved, &events, now).await?;
    Ok(Accepted {
        notifications: events.len(),
        response: Json(serde_json::json!({ "accepted": events.len() })).into_response(),
    })
}
