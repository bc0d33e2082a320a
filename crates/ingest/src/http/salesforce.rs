//! `POST /v1/integrations/{integration_id}/salesforce/outbound-messages?token=…`
//!
//! Salesforce redelivers a message until it gets the SOAP `<Ack>true</Ack>`, so the Ack is sent
//! only after Kafka acknowledged every event of the message; any failure answers an error status
//! and Salesforce tries again later (event ids are stable, so the retry deduplicates).

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use crm_sync_kafka::OutgoingMessage;
use crm_sync_proto::Message as _;
use serde::Deserialize;
use tracing::{Instrument, field};
use uuid::Uuid;

use super::{AppState, NOTIFICATIONS_METRIC, REQUESTS_METRIC, body};
use crate::http::ApiError;
use crate::salesforce;

const CRM: &str = "salesforce";

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
    token: Option<String>,
}

pub(crate) async fn outbound_messages(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<TokenQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let integration_id = path.ok().and_then(|Path(raw)| Uuid::parse_str(&raw).ok());
    // The request URI carries the token, so it is deliberately not a span or log field.
    let span = tracing::info_span!(
        "salesforce_outbound_message",
        integration_id = field::Empty,
        notifications = field::Empty,
    );
    if let Some(id) = integration_id {
        span.record("integration_id", field::display(id));
    }
    crm_sync_kafka::headers::adopt_trace_context(&span, &trace_headers(&headers));

    async move {
        let token = query.ok().and_then(|Query(q)| q.token);
        let mut notifications = None;
        let result = accept(
            &state,
            integration_id,
            token.as_deref(),
            &headers,
            body,
            &mut notifications,
        )
        .await;
        let outcome = match &result {
            Ok(()) => "accepted",
            Err(e) => e.code,
        };
        metrics::counter!(REQUESTS_METRIC, "crm" => CRM, "outcome" => outcome).increment(1);
        let integration_id = integration_id.map(|id| id.to_string());
        match result {
            Ok(()) => {
                let count = notifications.unwrap_or(0);
                metrics::counter!(NOTIFICATIONS_METRIC, "crm" => CRM).increment(count as u64);
                tracing::info!(
                    integration_id,
                    notifications = count,
                    outcome,
                    "salesforce outbound message accepted"
                );
                ([(header::CONTENT_TYPE, "text/xml; charset=utf-8")], ACK).into_response()
            }
            Err(error) => {
                if error.status.is_server_error() {
                    tracing::warn!(integration_id, notifications, outcome, status = error.status.as_u16(), reason = %error.message, "salesforce outbound message not accepted");
                } else {
                    tracing::info!(integration_id, notifications, outcome, status = error.status.as_u16(), reason = %error.message, "salesforce outbound message refused");
                }
                error.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// The checks in the order the API documents them, then the publish. `notifications` is set as
/// soon as the message is parsed, for the request log.
async fn accept(
    state: &AppState,
    integration_id: Option<Uuid>,
    token: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    notifications: &mut Option<usize>,
) -> Result<(), ApiError> {
    let integration_id = integration_id.ok_or_else(ApiError::unknown_integration)?;
    let integration = crm_sync_store::integrations::find(&state.pool, integration_id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "looking up the integration failed");
            ApiError::unavailable(
                "database_unavailable",
                "the integration could not be looked up; retry later",
            )
        })?
        .filter(|i| i.crm == CRM)
        .ok_or_else(ApiError::unknown_integration)?;

    match token {
        None | Some("") => {
            return Err(ApiError::invalid_token(
                "the request has no token: append ?token=<the integration's webhook token> to the endpoint URL",
            ));
        }
        Some(token) if !integration.accepts_token(token) => {
            return Err(ApiError::invalid_token(
                "the token is not valid for this integration",
            ));
        }
        Some(_) => {}
    }

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

    let bytes = body::read_limited(headers, body, state.max_body_bytes).await?;
    let message =
        salesforce::parse(&bytes).map_err(|e| ApiError::malformed_message(e.to_string()))?;
    *notifications = Some(message.notifications.len());
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

    let events = salesforce::to_events(integration_id, &message, chrono::Utc::now())
        .map_err(|e| ApiError::malformed_message(e.to_string()))?;
    let outgoing: Vec<OutgoingMessage> = events
        .iter()
        .map(|event| OutgoingMessage {
            topic: state.events_topic.clone(),
            key: format!("{integration_id}/{}/{}", event.object_type, event.record_id),
            payload: event.encode_to_vec(),
            event_id: event.event_id.clone(),
            headers: Vec::new(),
        })
        .collect();
    state.publisher.publish_all(&outgoing).await.map_err(|e| {
        tracing::error!(error = %e, "publishing the events failed");
        ApiError::unavailable(
            "kafka_unavailable",
            "the events could not be stored in Kafka; nothing was acknowledged, retry later",
        )
    })
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

fn trace_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|name| {
            let value = headers.get(name)?.to_str().ok()?;
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
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
