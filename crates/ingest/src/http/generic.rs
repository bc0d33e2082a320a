//! `POST /v1/integrations/{integration_id}/events`
//!
//! The generic JSON form of `CrmEvent` (one, or an array), for any source without a connector,
//! signed with `X-Crm-Sync-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! keyed with the integration's signing secret (`webhook_secret`). Timestamps more than
//! `ingest.signature_tolerance_secs` away from now are refused as replays.

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::CrmEvent;

use super::integrations::Resolved;
use super::pipeline::{Endpoint, Webhook, WebhookFormat};
use super::refuse;
use super::{ApiError, AppState};
use crate::generic::{self, signature};

/// The generic JSON form of `CrmEvent`.
pub(crate) struct Generic;

impl WebhookFormat for Generic {
    const ENDPOINT: Endpoint = Endpoint {
        crm: "generic",
        name: "events",
        describes: "generic events",
    };

    async fn events(
        state: &AppState,
        resolved: &Resolved,
        request: Webhook,
        now: DateTime<Utc>,
    ) -> Result<Vec<CrmEvent>, ApiError> {
        let integration = &resolved.integration;
        let secret = state.secret(
            resolved,
            "signing secret (credentials.webhook_secret)",
            |s| s.webhook_secret.as_deref(),
        )?;
        let header = request
            .headers()
            .get(signature::HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                refuse::invalid_signature("the request has no X-Crm-Sync-Signature header")
            })?;
        let parsed = signature::parse_header(header).ok_or_else(|| {
            refuse::invalid_signature("X-Crm-Sync-Signature is not t=<unix seconds>,v1=<hex>")
        })?;
        let age = Utc::now().timestamp().saturating_sub(parsed.timestamp);
        let tolerance = state.signature_tolerance.as_secs() as i64;
        if age.abs() > tolerance {
            return Err(refuse::stale_timestamp(format!(
                "the signature's timestamp is {} s away from now; at most {tolerance} s are accepted",
                age.abs()
            )));
        }
        let bytes = state
            .json_body(&request.parts.headers, request.body)
            .await?;
        if !signature::verify(secret.as_bytes(), &parsed, &bytes) {
            return Err(refuse::invalid_signature(
                "X-Crm-Sync-Signature does not match this body and the integration's signing secret",
            ));
        }
        state.rate_limit(integration.id)?;
        let events = generic::to_events(integration.id, &integration.crm_account_id, &bytes, now)
            .map_err(|e| refuse::malformed_message(e.to_string()))?;
        if let Some(other) = events
            .iter()
            .find(|e| e.crm_account_id != integration.crm_account_id)
        {
            return Err(refuse::foreign_account(format!(
                "crmAccountId {} is not the account this integration is bound to",
                other.crm_account_id
            )));
        }
        Ok(events)
    }
}
