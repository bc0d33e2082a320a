//! `POST /v1/integrations/{integration_id}/dynamics/webhooks`
//!
//! Dataverse posts the `RemoteExecutionContext` of the step the webhook is registered for. The
//! webhook's authentication is one of Dataverse's three kinds, matched against the integration's
//! `webhook_key`: `HttpHeader` (a header name and value), `WebhookKey` (the query parameter
//! `code`) or `HttpQueryString` (any query parameter). The context's OrganizationId must be the
//! integration's environment. Dataverse retries asynchronous steps that fail, so the answer
//! comes only once Kafka has every event.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use crm_sync_proto::v1::CrmEvent;

use super::integrations::Resolved;
use super::pipeline::{Endpoint, Webhook, WebhookFormat, same_secret};
use super::refuse;
use super::{ApiError, AppState};
use crate::dynamics::{self, context::guid};

/// Dataverse sets it when the context exceeded 256 KB and was stripped of its data.
const SIZE_EXCEEDED_HEADER: &str = "x-ms-dynamics-msg-size-exceeded";

/// Dataverse's `RemoteExecutionContext` webhooks.
pub(crate) struct Dynamics;

impl WebhookFormat for Dynamics {
    const ENDPOINT: Endpoint = Endpoint {
        crm: "dynamics",
        name: "webhooks",
        describes: "dynamics webhook",
    };

    async fn events(
        state: &AppState,
        resolved: &Resolved,
        request: Webhook,
        now: DateTime<Utc>,
    ) -> Result<Vec<CrmEvent>, ApiError> {
        let integration = &resolved.integration;
        check_key(state, resolved, &request)?;
        state.rate_limit(integration.id)?;
        let stripped = request.headers().contains_key(SIZE_EXCEEDED_HEADER);
        let bytes = state
            .json_body(&request.parts.headers, request.body)
            .await?;
        let context =
            dynamics::parse(&bytes).map_err(|e| refuse::malformed_message(e.to_string()))?;
        if guid(&integration.crm_account_id).as_deref() != Some(context.organization_id.as_str()) {
            return Err(refuse::foreign_account(format!(
                "OrganizationId {} is not the Dataverse environment this integration is bound to",
                context.organization_id
            )));
        }
        if stripped {
            tracing::warn!(
                message_name = %context.message_name,
                "Dataverse stripped the context (over 256 KB): the event names only the record"
            );
        }
        let mut events = dynamics::to_events(integration.id, &context, now)
            .map_err(|e| refuse::malformed_message(e.to_string()))?;
        // What changed was in the part Dataverse left out: the evaluator fetches the record.
        for event in &mut events {
            event.fields_omitted = stripped;
        }
        Ok(events)
    }
}

/// The webhook key, where the integration says Dataverse sends it.
fn check_key(state: &AppState, resolved: &Resolved, request: &Webhook) -> Result<(), ApiError> {
    let key = state.secret(resolved, "webhook key (credentials.webhook_key)", |s| {
        s.webhook_key.as_ref()
    })?;
    let (presented, place) = match (&key.header, &key.query) {
        (Some(name), _) => (
            request
                .headers()
                .get(name.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            format!("header {name}"),
        ),
        (None, Some(name)) => (
            request
                .query::<HashMap<String, String>>()
                .and_then(|mut query| query.remove(name)),
            format!("query parameter {name}"),
        ),
        (None, None) => (None, "nowhere".to_owned()),
    };
    let presented = presented.ok_or_else(|| {
        refuse::invalid_credentials(format!("the request has no webhook key ({place})"))
    })?;
    if !same_secret(presented.trim(), &key.value) {
        return Err(refuse::invalid_credentials(format!(
            "the webhook key ({place}) is not valid for this integration"
        )));
    }
    Ok(())
}
