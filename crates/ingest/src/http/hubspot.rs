//! `POST /v1/integrations/{integration_id}/hubspot/webhooks`
//!
//! HubSpot posts batches of up to 100 events and signs each request with
//! `X-HubSpot-Signature-v3` over the method, the URL it called, the body and
//! `X-HubSpot-Request-Timestamp`, keyed with the app's client secret (the integration's
//! `webhook_secret`). Requests whose timestamp is more than `ingest.signature_tolerance_secs`
//! (default 5 minutes) away from now are refused as replays. HubSpot retries failed deliveries,
//! so the answer comes only once Kafka has every event.

use axum::http::{HeaderMap, Uri, header};
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::CrmEvent;

use super::integrations::Resolved;
use super::pipeline::{Endpoint, Webhook, WebhookFormat};
use super::refuse;
use super::{ApiError, AppState};
use crate::hubspot::{self, signature};

/// HubSpot's webhook batches (v3 signatures).
pub(crate) struct HubSpot;

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The URLs HubSpot may have called to reach this request: the public scheme and host as a
/// proxy reports them (`X-Forwarded-Proto`, `X-Forwarded-Host`), else the `Host` header with
/// either scheme (TLS is usually terminated in front of ingest).
fn candidate_uris(uri: &Uri, headers: &HeaderMap) -> Vec<String> {
    let first = |name: &str| {
        header_text(headers, name)
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    let host = first("x-forwarded-host")
        .or_else(|| header_text(headers, header::HOST.as_str()))
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let schemes: Vec<&str> = match first("x-forwarded-proto") {
        Some(proto) => vec![proto],
        None => vec!["https", "http"],
    };
    schemes
        .into_iter()
        .map(|scheme| format!("{scheme}://{host}{path}"))
        .collect()
}

impl WebhookFormat for HubSpot {
    const ENDPOINT: Endpoint = Endpoint {
        crm: "hubspot",
        name: "webhooks",
        describes: "hubspot webhook batch",
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
            "HubSpot client secret (credentials.webhook_secret)",
            |s| s.webhook_secret.as_deref(),
        )?;
        let Webhook { parts, body } = request;
        let signature_value =
            header_text(&parts.headers, signature::SIGNATURE_HEADER).ok_or_else(|| {
                refuse::invalid_signature("the request has no X-HubSpot-Signature-v3 header")
            })?;
        let timestamp =
            header_text(&parts.headers, signature::TIMESTAMP_HEADER).ok_or_else(|| {
                refuse::invalid_signature("the request has no X-HubSpot-Request-Timestamp header")
            })?;
        check_age(state, timestamp)?;
        // The signature covers the body, so the body is read (size-limited) before it is checked.
        let bytes = state.json_body(&parts.headers, body).await?;
        if !signature::verify(
            secret.as_bytes(),
            parts.method.as_str(),
            &candidate_uris(&parts.uri, &parts.headers),
            &bytes,
            timestamp,
            signature_value,
        ) {
            return Err(refuse::invalid_signature(
                "X-HubSpot-Signature-v3 does not match this request and the integration's client secret",
            ));
        }
        state.rate_limit(integration.id)?;
        let batch = hubspot::parse(&bytes).map_err(|e| refuse::malformed_message(e.to_string()))?;
        if batch.portal_id != integration.crm_account_id.trim() {
            return Err(refuse::foreign_account(format!(
                "portalId {} is not the HubSpot account this integration is bound to",
                batch.portal_id
            )));
        }
        hubspot::to_events(integration.id, &batch, now)
            .map_err(|e| refuse::malformed_message(e.to_string()))
    }
}

/// Requests signed too long ago (or ahead) are refused as replays.
fn check_age(state: &AppState, timestamp: &str) -> Result<(), ApiError> {
    let millis: i64 = timestamp.parse().map_err(|_| {
        refuse::invalid_signature("X-HubSpot-Request-Timestamp is not a number of milliseconds")
    })?;
    let age_ms = Utc::now().timestamp_millis().saturating_sub(millis);
    let tolerance_ms = state.signature_tolerance.as_millis() as i64;
    if age_ms.abs() > tolerance_ms {
        return Err(refuse::stale_timestamp(format!(
            "X-HubSpot-Request-Timestamp is {} s away from now; at most {} s are accepted",
            age_ms.abs() / 1000,
            tolerance_ms / 1000
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn candidate_urls_follow_the_proxy_headers() {
        let uri: Uri = "/v1/integrations/x/hubspot/webhooks?a=1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("10.0.0.5:8080"));
        assert_eq!(
            candidate_uris(&uri, &headers),
            [
                "https://10.0.0.5:8080/v1/integrations/x/hubspot/webhooks?a=1",
                "http://10.0.0.5:8080/v1/integrations/x/hubspot/webhooks?a=1"
            ]
        );
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("hooks.example.com, proxy"),
        );
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(
            candidate_uris(&uri, &headers),
            ["https://hooks.example.com/v1/integrations/x/hubspot/webhooks?a=1"]
        );
    }
}
