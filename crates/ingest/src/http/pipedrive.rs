//! `POST /v1/integrations/{integration_id}/pipedrive/webhooks`
//!
//! Pipedrive webhooks v2, one event per request, authenticated with the HTTP Basic credentials
//! set on the webhook (`http_auth_user` / `http_auth_password`), which must equal the
//! integration's `webhook_basic_auth`. Pipedrive retries deliveries that fail, so the answer
//! comes only once Kafka has the event.

use axum::http::{HeaderMap, header};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::CrmEvent;

use super::integrations::Resolved;
use super::pipeline::{Endpoint, Webhook, WebhookFormat, same_secret};
use super::refuse;
use super::{ApiError, AppState};
use crate::pipedrive;

const CHALLENGE: &str = "Basic realm=\"crm-sync\", charset=\"UTF-8\"";

/// Pipedrive's webhooks v2.
pub(crate) struct Pipedrive;

impl WebhookFormat for Pipedrive {
    const ENDPOINT: Endpoint = Endpoint {
        crm: "pipedrive",
        name: "webhooks",
        describes: "pipedrive webhook",
    };

    async fn events(
        state: &AppState,
        resolved: &Resolved,
        request: Webhook,
        now: DateTime<Utc>,
    ) -> Result<Vec<CrmEvent>, ApiError> {
        let integration = &resolved.integration;
        check_credentials(state, resolved, request.headers())?;
        state.rate_limit(integration.id)?;
        let bytes = state
            .json_body(&request.parts.headers, request.body)
            .await?;
        let hook =
            pipedrive::parse(&bytes).map_err(|e| refuse::malformed_message(e.to_string()))?;
        let event = pipedrive::to_event(integration.id, &hook, now);
        // Required: without it the account check could be skipped by leaving it out.
        if event.crm_account_id.is_empty() {
            return Err(refuse::malformed_message(
                "meta.company_id is required: it names the Pipedrive company the webhook comes from",
            ));
        }
        if event.crm_account_id != integration.crm_account_id.trim() {
            return Err(refuse::foreign_account(format!(
                "meta.company_id {} is not the Pipedrive company this integration is bound to",
                event.crm_account_id
            )));
        }
        Ok(vec![event])
    }
}

/// The user and password of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The HTTP Basic credentials set on the webhook, against the integration's.
fn check_credentials(
    state: &AppState,
    resolved: &Resolved,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let expected = state
        .secret(
            resolved,
            "HTTP Basic credentials (credentials.webhook_basic_auth)",
            |s| s.webhook_basic_auth.as_ref(),
        )
        .map_err(|e| e.with_challenge(CHALLENGE))?;
    let (user, password) = basic_credentials(headers).ok_or_else(|| {
        refuse::invalid_credentials("the request has no HTTP Basic credentials")
            .with_challenge(CHALLENGE)
    })?;
    // Both compared in full, so the time taken does not say which one was wrong.
    let user_ok = same_secret(&user, &expected.username);
    let password_ok = same_secret(&password, &expected.password);
    if !(user_ok & password_ok) {
        return Err(refuse::invalid_credentials(
            "the HTTP Basic credentials are not valid for this integration",
        )
        .with_challenge(CHALLENGE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn basic_credentials_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        // "crm-sync:pa:ss" — a password may contain colons.
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Y3JtLXN5bmM6cGE6c3M="),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("crm-sync".into(), "pa:ss".into()))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(basic_credentials(&h), None);
    }
}
