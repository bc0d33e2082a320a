//! `POST /v1/integrations/{integration_id}/dynamics/webhooks`
//!
//! Dataverse posts the `RemoteExecutionContext` of the step the webhook is registered for. The
//! webhook's authentication is one of Dataverse's three kinds, matched against the integration's
//! `webhook_key`: `HttpHeader` (a header name and value), `WebhookKey` (the query parameter
//! `code`) or `HttpQueryString` (any query parameter). The context's OrganizationId must be the
//! integration's environment. Dataverse retries asynchronous steps that fail, so the answer
//! comes only once Kafka has every event.

use std::collections::HashMap;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::pipeline::{self, Accepted, Endpoint, same_secret};
use super::{ApiError, AppState};
use crate::dynamics::{self, context::guid};

const ENDPOINT: Endpoint = Endpoint {
    crm: "dynamics",
    name: "webhooks",
    describes: "dynamics webhook",
};

/// Dataverse sets it when the context exceeded 256 KB and was stripped of its data.
const SIZE_EXCEEDED_HEADER: &str = "x-ms-dynamics-msg-size-exceeded";

pub(crate) async fn webhooks(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let integration_id = pipeline::path_id(path);
    let query = query.map(|Query(q)| q).unwrap_or_default();
    pipeline::serve(ENDPOINT, integration_id, &headers, || {
        accept(&state, integration_id, &query, &headers, body)
    })
    .await
}

async fn accept(
    state: &AppState,
    integration_id: Option<Uuid>,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Accepted, ApiError> {
    let resolved = state.integration(ENDPOINT, integration_id).await?;
    let integration = &resolved.integration;
    let key = state
        .secrets(&resolved, "webhook key (credentials.webhook_key)")?
        .webhook_key
        .as_ref()
        .ok_or_else(|| {
            ApiError::invalid_credentials(
                "the integration has no webhook key (credentials.webhook_key) configured",
            )
        })?;
    let (presented, place) = match (&key.header, &key.query) {
        (Some(name), _) => (
            headers
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            format!("header {name}"),
        ),
        (None, Some(name)) => (query.get(name).cloned(), format!("query parameter {name}")),
        (None, None) => (None, "nowhere".to_owned()),
    };
    let presented = presented.ok_or_else(|| {
        ApiError::invalid_credentials(format!("the request has no webhook key ({place})"))
    })?;
    if !same_secret(presented.trim(), &key.value) {
        return Err(ApiError::invalid_credentials(format!(
            "the webhook key ({place}) is not valid for this integration"
        )));
    }
    state.rate_limit(integration.id)?;
    let bytes = state.json_body(headers, body).await?;
    let context =
        dynamics::parse(&bytes).map_err(|e| ApiError::malformed_message(e.to_string()))?;
    if guid(&integration.crm_account_id).as_deref() != Some(context.organization_id.as_str()) {
        return Err(ApiError::foreign_account(format!(
            "OrganizationId {} is not the Dataverse environment this integration is bound to",
            context.organization_id
        )));
    }
    if headers.contains_key(SIZE_EXCEEDED_HEADER) {
        tracing::warn!(
            message_name = %context.message_name,
            "Dataverse stripped the context (over 256 KB): the event names only the record"
        );
    }
    let now = chrono::Utc::now();
    let events = dynamics::to_events(integration.id, &context, now)
        .map_err(|e| ApiError::malformed_message(e.to_string()))?;
    state.accept(&resolved, &events, now).await?;
    Ok(Accepted {
        notifications: events.len(),
        response: Json(serde_json::json!({ "accepted": events.len() })).into_response(),
    })
}
