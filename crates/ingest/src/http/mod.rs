//! The webhook API: one route per CRM format, all sharing [`AppState`] and the JSON error shape
//! of [`ApiError`].

mod body;
mod error;
mod salesforce;

use axum::Router;
use axum::routing::post;
use crm_sync_kafka::Publisher;
use crm_sync_store::sqlx::PgPool;

pub use error::ApiError;

/// What every webhook handler needs.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub publisher: Publisher,
    /// Where `CrmEvent`s go (`topics.events`).
    pub events_topic: String,
    /// Larger bodies get 413 (`ingest.max_body_bytes`).
    pub max_body_bytes: usize,
}

/// Counts every webhook request by CRM and outcome (`accepted` or the error code).
pub const REQUESTS_METRIC: &str = "crm_sync_ingest_requests_total";
/// Counts the notifications (records) of accepted requests, by CRM.
pub const NOTIFICATIONS_METRIC: &str = "crm_sync_ingest_notifications_total";

/// The webhook routes. The ops routes (`/healthz`, `/readyz`, `/metrics`) are merged in by
/// [`crate::run`].
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/integrations/{integration_id}/salesforce/outbound-messages",
            post(salesforce::outbound_messages),
        )
        .with_state(state)
}
