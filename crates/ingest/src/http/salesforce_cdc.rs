//! `POST /v1/integrations/{integration_id}/salesforce/change-events`
//!
//! Salesforce delivers Change Data Capture events to subscribers of the Streaming API (CometD)
//! or the Pub/Sub API, not to webhooks: a subscriber relays them here, one event or a batch, as
//! JSON (see [`crate::salesforce::cdc`] for the accepted forms). The relay authenticates with the
//! integration's webhook token, as `?token=` or `Authorization: Bearer <token>`. The answer comes
//! only once Kafka has every event, so the relay may advance its replay id then.

use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::CrmEvent;

use super::integrations::Resolved;
use super::pipeline::{Endpoint, Webhook, WebhookFormat};
use super::refuse;
use super::salesforce::{TokenQuery, check_token};
use super::{ApiError, AppState};
use crate::salesforce::cdc;

/// Change Data Capture events, relayed by a subscriber.
pub(crate) struct ChangeEvents;

impl WebhookFormat for ChangeEvents {
    const ENDPOINT: Endpoint = Endpoint {
        crm: "salesforce",
        name: "change-events",
        describes: "salesforce change events",
    };

    async fn events(
        state: &AppState,
        resolved: &Resolved,
        request: Webhook,
        now: DateTime<Utc>,
    ) -> Result<Vec<CrmEvent>, ApiError> {
        let token = request
            .query::<TokenQuery>()
            .and_then(|q| q.token)
            .or_else(|| bearer(request.headers()));
        check_token(resolved, token.as_deref())?;
        state.rate_limit(resolved.integration.id)?;
        let bytes = state
            .json_body(&request.parts.headers, request.body)
            .await?;
        let parsed = cdc::parse(&bytes).map_err(|e| refuse::malformed_message(e.to_string()))?;
        Ok(cdc::to_events(resolved.integration.id, &parsed, now))
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}
