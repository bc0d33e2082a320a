//! What every webhook route does around its CRM-specific checks: a request id on the span, the
//! response and every error body; the integration lookup; per-integration rate limits; media
//! type and size checks; and accepting events (owner memory and Kafka) all or nothing. Outcomes
//! are counted and logged the same way for every CRM.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use crm_sync_kafka::OutgoingMessage;
use crm_sync_proto::Message as _;
use crm_sync_proto::v1::CrmEvent;
use crm_sync_store::credentials::IntegrationSecrets;
use crm_sync_store::crm_user_status as crm_status;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{Instrument, field};
use uuid::Uuid;

use super::integrations::Resolved;
use super::refuse;
use super::{ApiError, AppState, body};
use crate::event;
use crate::metric_definitions::{NOTIFICATIONS, REQUESTS, USER_EVENTS};

/// A webhook route: the CRM of the integrations it serves and how it is named in logs/metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Endpoint {
    /// The `crm` of integrations this route accepts (and the `crm` metric label).
    pub crm: &'static str,
    /// The `endpoint` metric label.
    pub name: &'static str,
    /// How log lines name a request, e.g. "salesforce outbound message".
    pub describes: &'static str,
}

pub(crate) const REQUEST_ID_HEADER: &str = "x-request-id";

/// A request the route accepted: its notification count and the CRM's expected answer.
struct Accepted {
    notifications: usize,
    response: Response,
}

/// What a CRM format checks of a request and reads from it: its method, URI, headers and body.
pub(crate) struct Webhook {
    pub parts: Parts,
    pub body: Body,
}

impl Webhook {
    pub fn headers(&self) -> &HeaderMap {
        &self.parts.headers
    }

    /// The query string as `T`; None when it does not parse (each format says what is missing).
    pub fn query<T: DeserializeOwned>(&self) -> Option<T> {
        Query::<T>::try_from_uri(&self.parts.uri)
            .ok()
            .map(|Query(query)| query)
    }
}

/// A CRM's webhook format: only what is specific to the CRM. The route around it
/// ([`handle`]) looks the integration up, publishes the events all or nothing, answers, and
/// counts and logs the outcome the same way for every CRM.
pub(crate) trait WebhookFormat: Send + Sync + 'static {
    const ENDPOINT: Endpoint;

    /// Authenticates the request for the integration, applies its rate limit once the
    /// request is authenticated, checks the payload belongs to the integration's CRM account,
    /// and reads its events.
    fn events(
        state: &AppState,
        resolved: &Resolved,
        request: Webhook,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CrmEvent>, ApiError>> + Send;

    /// The answer the CRM expects once Kafka has every event.
    fn answer(accepted: usize) -> Response {
        Json(serde_json::json!({ "accepted": accepted })).into_response()
    }
}

/// The route of every webhook format.
pub(crate) async fn handle<F: WebhookFormat>(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let integration_id = path_id(path);
    let (parts, body) = request.into_parts();
    let trace = trace_headers(&parts.headers);
    serve(F::ENDPOINT, integration_id, &trace, || async move {
        let resolved = state.integration(F::ENDPOINT, integration_id).await?;
        let now = Utc::now();
        let received = async {
            let events = F::events(&state, &resolved, Webhook { parts, body }, now).await?;
            state.accept(&resolved, &events, now).await?;
            Ok::<_, ApiError>(events.len())
        };
        // A refusal of an integration's request is the CRM's (or its set-up's) to fix: its
        // health says so, rather than only that no webhook arrives. Our own failures (5xx) are
        // not the CRM's, and a rate limit only asks it to retry later.
        let accepted = received.await.inspect_err(|error| {
            if error.status.is_client_error() && error.status != StatusCode::TOO_MANY_REQUESTS {
                let id = resolved.integration.id;
                state.webhooks_seen.refused(&state.pool, id, now, error);
            }
        })?;
        Ok(Accepted {
            notifications: accepted,
            response: F::answer(accepted),
        })
    })
    .await
}

/// Runs one webhook request: `work` does the integration's part.
async fn serve<W, Fut>(
    endpoint: Endpoint,
    integration_id: Option<Uuid>,
    trace: &[(String, String)],
    work: W,
) -> Response
where
    W: FnOnce() -> Fut,
    Fut: Future<Output = Result<Accepted, ApiError>>,
{
    let request_id = Uuid::new_v4().simple().to_string();
    // The URL may carry credentials (`?token=`, `?code=`): neither it nor the query is logged.
    let span = tracing::info_span!(
        "webhook",
        request_id = %request_id,
        endpoint = endpoint.name,
        crm = endpoint.crm,
        integration_id = field::Empty,
        notifications = field::Empty,
    );
    if let Some(id) = integration_id {
        span.record("integration_id", field::display(id));
    }
    if tracing::Span::current().is_none() {
        // Without a server span around us (tests, other routers) continue the caller's trace.
        crm_sync_kafka::headers::adopt_trace_context(&span, trace);
    }
    async move {
        let result = work().await;
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(e) => e.code,
        };
        metrics::counter!(REQUESTS, "crm" => endpoint.crm, "endpoint" => endpoint.name, "outcome" => outcome)
            .increment(1);
        let mut response = match result {
            Ok(accepted) => {
                metrics::counter!(NOTIFICATIONS, "crm" => endpoint.crm, "endpoint" => endpoint.name)
                    .increment(accepted.notifications as u64);
                tracing::info!(
                    notifications = accepted.notifications,
                    outcome,
                    "{} accepted",
                    endpoint.describes
                );
                accepted.response
            }
            Err(error) => {
                if error.status.is_server_error() {
                    tracing::warn!(outcome, status = error.status.as_u16(), reason = %error.message, "{} not accepted", endpoint.describes);
                } else {
                    tracing::info!(outcome, status = error.status.as_u16(), reason = %error.message, "{} refused", endpoint.describes);
                }
                refuse::answer(error, &request_id)
            }
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        response
    }
    .instrument(span)
    .await
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

/// The integration id of the route's path; None for anything that is not a UUID (answered like
/// an unknown integration).
fn path_id(path: Result<Path<String>, PathRejection>) -> Option<Uuid> {
    path.ok().and_then(|Path(raw)| Uuid::parse_str(&raw).ok())
}

/// Constant-time equality of two secrets of any length (compared as SHA-256 digests, so that
/// not even the length leaks).
pub(crate) fn same_secret(presented: &str, stored: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(stored.as_bytes());
    a.ct_eq(&b).into()
}

/// The media type without parameters, lowercased.
pub(crate) fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
}

pub(crate) const JSON_MEDIA_TYPES: [&str; 1] = ["application/json"];

pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

impl AppState {
    /// The integration the path names, if it is one of `endpoint`'s CRM.
    pub(crate) async fn integration(
        &self,
        endpoint: Endpoint,
        id: Option<Uuid>,
    ) -> Result<Arc<Resolved>, ApiError> {
        let id = id.ok_or_else(refuse::unknown_integration)?;
        self.integrations
            .get(id)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "looking up the integration failed");
                ApiError::unavailable(
                    "database_unavailable",
                    "the integration could not be looked up; retry later",
                )
            })?
            .filter(|r| r.integration.crm == endpoint.crm)
            .ok_or_else(refuse::unknown_integration)
    }

    /// The one credential a format authenticates with (`pick` chooses it from the
    /// integration's credentials); `what` names it for the error when it is not configured.
    pub(crate) fn secret<'a, T: ?Sized>(
        &self,
        resolved: &'a Resolved,
        what: &str,
        pick: impl FnOnce(&'a IntegrationSecrets) -> Option<&'a T>,
    ) -> Result<&'a T, ApiError> {
        match &resolved.secrets {
            Ok(secrets) => secrets.as_ref().and_then(pick).ok_or_else(|| {
                refuse::invalid_credentials(format!(
                    "the integration has no {what} configured, so no request can be authenticated"
                ))
            }),
            Err(_) => Err(ApiError::unavailable(
                "credentials_unavailable",
                "the integration's credentials cannot be read by this ingest (secrets.encryption_key); retry later",
            )),
        }
    }

    pub(crate) fn rate_limit(&self, id: Uuid) -> Result<(), ApiError> {
        self.limiter
            .check(id)
            .map_err(|wait| refuse::rate_limited(wait.as_secs_f64().ceil().max(1.0) as u64))
    }

    /// The JSON body, after the media type check.
    pub(crate) async fn json_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Vec<u8>, ApiError> {
        if !is_json(headers) {
            return Err(refuse::unsupported_media_type(&JSON_MEDIA_TYPES));
        }
        body::read_limited(headers, body, self.max_body_bytes).await
    }

    /// Checks the events (every connector's pass through here), then publishes them in one Kafka
    /// transaction, answering only once it is committed. A failure refuses the request with
    /// nothing published (the CRM retries, and the retry's events carry the same ids). Owners
    /// are not remembered here: the evaluator's record state knows each record's owner. What
    /// user events say about CRM users being active is recorded after the commit, before the
    /// answer: if that fails the CRM retries, its events are published again with the same ids
    /// (downstream deduplicates them) and the word is recorded then.
    pub(crate) async fn accept(
        &self,
        resolved: &Resolved,
        events: &[CrmEvent],
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        tracing::Span::current().record("notifications", events.len());
        crate::check::events(events, &self.limits).map_err(refuse::refused)?;
        let integration = &resolved.integration;
        let user_statuses =
            crate::users::statuses(&integration.crm, events).map_err(refuse::refused)?;
        if events.is_empty() {
            return Ok(());
        }
        let outgoing: Vec<OutgoingMessage> = events
            .iter()
            .map(|event| OutgoingMessage {
                topic: Arc::clone(&self.events_topic),
                key: event::kafka_key(event).into(),
                payload: event.encode_to_vec(),
                event_id: event.event_id.clone(),
                headers: Vec::new(),
                partition: None,
            })
            .collect();
        self.publisher.publish_all(&outgoing).await.map_err(|e| {
            tracing::error!(error = %e, "publishing the events failed");
            ApiError::unavailable(
                "kafka_unavailable",
                "the events could not be stored in Kafka; none of them was published, retry later",
            )
        })?;
        self.webhooks_seen.accepted(&self.pool, integration.id, now);
        self.record_user_statuses(integration.id, user_statuses)
            .await
    }

    async fn record_user_statuses(
        &self,
        integration_id: Uuid,
        statuses: Vec<crate::users::UserStatus>,
    ) -> Result<(), ApiError> {
        if statuses.is_empty() {
            return Ok(());
        }
        let said: Vec<crm_status::Said> = statuses
            .into_iter()
            .map(|s| crm_status::Said {
                crm_user_id: s.crm_user_id,
                active: s.active,
                at: s.at,
            })
            .collect();
        let known = crm_status::record_events(&self.pool, integration_id, &said)
            .await
            .map_err(|e| match crm_sync_runtime::refusal::refused_value(&e) {
                // Retrying would fail the same way: the sender must fix the value.
                Some(reason) => refuse::refused(crate::check::Refusal::Invalid {
                    record: None,
                    field: "record_id".into(),
                    reason: format!("the CRM user's id cannot be stored ({reason})"),
                }),
                None => {
                    tracing::error!(error = %e, "recording what user events say about CRM users failed");
                    ApiError::unavailable(
                        "database_unavailable",
                        "the events were stored, but what they say about CRM users being active could not be; retry later",
                    )
                }
            })?;
        metrics::counter!(USER_EVENTS).increment(said.len() as u64);
        tracing::info!(
            user_events = said.len(),
            identities_updated = known,
            "recorded what the CRM's user events say about its users being active"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "x"));
    }

    #[test]
    fn json_media_types_with_parameters_and_suffixes() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/vnd.api+json"));
        assert!(!with("text/plain"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
