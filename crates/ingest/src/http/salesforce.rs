//! `POST /v1/integrations/{integration_id}/salesforce/outbound-messages?token=…`
//!
//! Salesforce redelivers a message until it gets the SOAP `<Ack>true</Ack>`, so the Ack is sent
//! only after Kafka acknowledged every event of the message; any failure answers an error status
//! and Salesforce tries again later (event ids are stable, so the retry deduplicates).

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crm_sync_proto::v1::CrmEvent;
use serde::Deserialize;
use std::time::Duration;

use super::integrations::Resolved;
use super::pipeline::{Endpoint, Webhook, WebhookFormat};
use super::refuse;
use super::{AppState, body};
use crate::http::ApiError;
use crate::salesforce;

const ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    "\n",
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#,
);

const XML_MEDIA_TYPES: [&str; 3] = ["text/xml", "application/xml", "application/soap+xml"];

#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    pub(crate) token: Option<String>,
}

/// Salesforce's Outbound Messages (SOAP).
pub(crate) struct OutboundMessages;

impl WebhookFormat for OutboundMessages {
    const ENDPOINT: Endpoint = Endpoint {
        crm: "salesforce",
        name: "outbound-messages",
        describes: "salesforce outbound message",
    };

    /// The checks in the order the API documents them.
    async fn events(
        state: &AppState,
        resolved: &Resolved,
        request: Webhook,
        now: DateTime<Utc>,
    ) -> Result<Vec<CrmEvent>, ApiError> {
        let integration = &resolved.integration;
        let token = request.query::<TokenQuery>().and_then(|q| q.token);
        check_token(resolved, token.as_deref())?;
        state.rate_limit(integration.id)?;
        let headers = &request.parts.headers;
        if !is_xml(headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "an Outbound Message is XML: send Content-Type {}",
                    XML_MEDIA_TYPES.join(", ")
                ),
            ));
        }
        let bytes = body::read_limited(headers, request.body, state.max_body_bytes).await?;
        let message = parse(bytes).await?;
        tracing::Span::current().record("notifications", message.notifications.len());
        if !same_organization(&message.organization_id, &integration.crm_account_id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "foreign_organization",
                format!(
                    "OrganizationId {} is not the Salesforce organization this integration is bound to",
                    message.organization_id
                ),
            ));
        }
        salesforce::to_events(integration.id, &message, now)
            .map_err(|e| refuse::malformed_message(e.to_string()))
    }

    /// Salesforce redelivers until it reads this Ack.
    fn answer(_accepted: usize) -> Response {
        ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], ACK).into_response()
    }
}

/// Bodies up to this size are parsed on the request's own task: a few hundred microseconds.
const INLINE_PARSE_BYTES: usize = 64 * 1024;
/// How long reading one message may take. The parser is linear in the body's size (a 4 MiB
/// body takes milliseconds), so only a body built to be slow comes near it.
const PARSE_BUDGET: Duration = Duration::from_secs(1);

/// Parses the message; large bodies on a blocking thread, so that they never hold up the async
/// workers serving other requests.
async fn parse(bytes: Vec<u8>) -> Result<salesforce::OutboundMessage, ApiError> {
    let parsed = if bytes.len() <= INLINE_PARSE_BYTES {
        salesforce::outbound::parse_within(&bytes, Some(PARSE_BUDGET))
    } else {
        tokio::task::spawn_blocking(move || {
            salesforce::outbound::parse_within(&bytes, Some(PARSE_BUDGET))
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "parsing an outbound message failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the message could not be read",
            )
        })?
    };
    parsed.map_err(|e| refuse::malformed_message(e.to_string()))
}

/// The integration's webhook token, as `?token=` (Salesforce can send nothing else).
pub(crate) fn check_token(
    resolved: &super::integrations::Resolved,
    token: Option<&str>,
) -> Result<(), ApiError> {
    match token {
        None | Some("") => Err(refuse::invalid_token(
            "the request has no token: append ?token=<the integration's webhook token> to the endpoint URL",
        )),
        Some(token) if !resolved.integration.accepts_token(token) => Err(refuse::invalid_token(
            "the token is not valid for this integration",
        )),
        Some(_) => Ok(()),
    }
}

fn is_xml(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|media_type| media_type.trim().to_ascii_lowercase())
        .is_some_and(|media_type| XML_MEDIA_TYPES.contains(&media_type.as_str()))
}

/// Salesforce ids come in a case-sensitive 15-character form and an 18-character form that
/// appends a checksum; Outbound Messages carry the 18-character one, while an admin may have
/// configured either.
fn same_organization(sent: &str, bound: &str) -> bool {
    let (sent, bound) = (sent.trim(), bound.trim());
    if sent == bound {
        return true;
    }
    match (sent.len(), bound.len()) {
        (18, 15) => sent.starts_with(bound),
        (15, 18) => bound.starts_with(sent),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn xml_media_types_are_recognised_with_parameters_and_any_case() {
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_xml(&h)
        };
        assert!(with("text/xml; charset=utf-8"));
        assert!(with("Application/SOAP+XML;charset=UTF-8;action=\"x\""));
        assert!(with("application/xml"));
        assert!(!with("application/json"));
        assert!(!with("text/xml-ish"));
        assert!(!is_xml(&HeaderMap::new()));
    }

    #[test]
    fn organization_ids_match_in_15_and_18_character_forms() {
        assert!(same_organization(
            "00D5g000004ABCDEAA",
            "00D5g000004ABCDEAA"
        ));
        assert!(same_organization("00D5g000004ABCDEAA", "00D5g000004ABCD"));
        assert!(same_organization("00D5g000004ABCD", "00D5g000004ABCDEAA"));
        assert!(!same_organization(
            "00D5g000004ABCDEAA",
            "00D5g000004abcdEAA"
        ));
        assert!(!same_organization("00D5g000004ABCDEAA", "00D5g000004XXXX"));
        assert!(!same_organization("00D5g000004ABCDEAA", ""));
    }

    #[test]
    fn the_ack_is_the_soap_response_salesforce_expects() {
        assert!(ACK.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<soapenv:Envelope"));
        assert!(ACK.contains(
            "<notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\"><Ack>true</Ack></notificationsResponse>"
        ));
    }
}
