//! The webhook API: one route per CRM format (a file each, implementing
//! [`pipeline::WebhookFormat`]), all served by [`pipeline::handle`] with [`AppState`] and the JSON
//! error shape of [`ApiError`].
//!
//! | route | file | authentication |
//! |---|---|---|
//! | `POST /v1/integrations/{id}/salesforce/outbound-messages` | [`salesforce`] | `?token=` (webhook token) and OrganizationId |
//! | `POST /v1/integrations/{id}/salesforce/change-events` | [`salesforce_cdc`] | `?token=` or `Authorization: Bearer` (webhook token) |
//! | `POST /v1/integrations/{id}/hubspot/webhooks` | [`hubspot`] | `X-HubSpot-Signature-v3` (client secret), 5-minute timestamp |
//! | `POST /v1/integrations/{id}/pipedrive/webhooks` | [`pipedrive`] | HTTP Basic |
//! | `POST /v1/integrations/{id}/dynamics/webhooks` | [`dynamics`] | the webhook key (header or query) |
//! | `POST /v1/integrations/{id}/events` | [`generic`] | `X-Crm-Sync-Signature` (signing secret) |

mod body;
mod dynamics;
mod generic;
mod hubspot;
pub(crate) mod integrations;
mod pipedrive;
mod pipeline;
pub(crate) mod ratelimit;
pub(crate) mod refuse;
mod salesforce;
mod salesforce_cdc;
pub(crate) mod seen;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use crm_sync_kafka::AtomicPublisher;
use crm_sync_store::sqlx::PgPool;

pub use integrations::Integrations;
pub use ratelimit::RateLimiter;
pub use refuse::ApiError;
pub use seen::WebhooksSeen;

/// What every webhook handler needs.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub publisher: AtomicPublisher,
    /// Where `CrmEvent`s go (`topics.events`), shared by every record written there.
    pub events_topic: Arc<str>,
    /// Larger bodies get 413 (`ingest.max_body_bytes`).
    pub max_body_bytes: usize,
    pub integrations: Arc<Integrations>,
    pub limiter: Arc<RateLimiter>,
    /// When each integration's CRM last reached us (its sync status), throttled.
    pub webhooks_seen: Arc<WebhooksSeen>,
    /// How far a signed request's timestamp may be from now.
    pub signature_tolerance: Duration,
    /// What the events of one request may carry (`ingest.max_*`).
    pub limits: crate::check::Limits,
}

/// The webhook routes. The ops routes (`/healthz`, `/readyz`, `/metrics`) are merged in by
/// [`crate::run`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/integrations/{integration_id}/salesforce/outbound-messages",
            post(pipeline::handle::<salesforce::OutboundMessages>),
        )
        .route(
            "/v1/integrations/{integration_id}/salesforce/change-events",
            post(pipeline::handle::<salesforce_cdc::ChangeEvents>),
        )
        .route(
            "/v1/integrations/{integration_id}/hubspot/webhooks",
            post(pipeline::handle::<hubspot::HubSpot>),
        )
        .route(
            "/v1/integrations/{integration_id}/pipedrive/webhooks",
            post(pipeline::handle::<pipedrive::Pipedrive>),
        )
        .route(
            "/v1/integrations/{integration_id}/dynamics/webhooks",
            post(pipeline::handle::<dynamics::Dynamics>),
        )
        .route(
            "/v1/integrations/{integration_id}/events",
            post(pipeline::handle::<generic::Generic>),
        )
        .with_state(state)
}
