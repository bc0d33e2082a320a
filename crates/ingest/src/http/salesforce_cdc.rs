//! `POST /v1/integrations/{integration_id}/salesforce/change-events`
//!
//! Salesforce delivers Change Data Capture events to subscribers of the Streaming API (CometD)
//! or the Pub/Sub API, not to webhooks: a subscriber relays them here, one event or a batch, as
//! JSON (see [`crate::salesforce::cdc`] for the accepted forms). The relay authenticates with the
//! integration's webhook token, as `?token=` or `Authorization: Bearer <token>`. The answer comes
//! only once Kafka has every event, so the relay may advance its replay id then.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::pipeline::{self, Accepted, Endpoint};
use super::salesforce::{TokenQuery, check_token};
use super::{ApiError, AppState};
use crate::salesforce::cdc;

const ENDPOINT: Endpoint = Endpoint {
    crm: "salesforce",
    name: "change-events",
    describes: "salesforce change events",
};

pub(crate) async fn change_events(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TokenQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let integration_id = pipeline::path_id(path);
    let token = query
        .ok()
        .and_then(|Query(q)| q.token)
        .or_else(|| bearer(&headers));
    pipeline::serve(ENDPOINT, integration_id, &headers, || {
        accept(&state, integration_id, token.as_deref(), &headers, body)
    })
    .await
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

async fn accept(
    state: &AppState,
    integration_id: Option<Uuid>,
    token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let resolved = state.integration(ENDPOINT, integration_id).await?;
    check_token(&resolved, token)?;
    state.rate_limit(resolved.integration.id)?;
    let bytes = state.json_body(headers, body).await?;
    let parsed = cdc::parse(&bytes).map_err(|e| ApiError::malformed_message(e.to_string()))?;
    let now = chrono::Utc::now();
    let events = cdc::to_events(resolved.integration.id, &parsed, now);
    state.accept(&resolved, &events, now).await?;
    Ok(Accepted {
        notifications: events.len(),
        response: Json(serde_json::json!({ "accepted": events.len() })).into_response(),
    })
}
