//! admin-api: the control plane. Company admins turn automatic user sync on, manage workflows,
//! place new users on teams and watch the leaderboard, through a JSON API under
//! `/admin/v1/companies/{company_id}/…` and the integration management page served at `/admin/`.
//!
//! - [`auth`]: bearer tokens, roles and tenant isolation, applied to every API route;
//! - [`routes`]: the handlers, each declared once for both the router and the OpenAPI document;
//! - [`publish`]: visibility changes (`ActivityChanged`) through the transactional outbox;
//! - [`explain`]: the workflow dry run, saying which condition failed;
//! - [`request_id`]: an id on every answer, its error body and its log lines;
//! - [`assets`]: the page (static files compiled into the binary: no CDN, no build step).

pub mod assets;
pub mod auth;
pub mod error;
pub mod explain;
pub mod extract;
pub mod metric_definitions;
pub mod paging;
pub mod publish;
pub mod request_id;
pub mod routes;

use anyhow::Context;
use axum::Router;
use crm_sync_kafka::Publisher;
use crm_sync_outbox::Outbox;
use crm_sync_runtime::ops::{self, Readiness};
use crm_sync_runtime::service::OpsServer;
use crm_sync_runtime::{ServiceDefaults, Settings};
use sqlx::PgPool;
use utoipa::OpenApi;

pub const SERVICE: ServiceDefaults = ServiceDefaults {
    name: "admin-api",
    http_port: 8081,
    // admin-api consumes nothing; the name only fills the shared settings' required key.
    consumer_group: "crm-sync-admin-api",
};

/// Where `/healthz`, `/readyz` and `/metrics` are served unless `http.ops_port` says otherwise:
/// not on the admin port, which browsers and API clients reach.
pub const OPS_PORT: u16 = 9081;

/// What every handler needs.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub outbox: Outbox,
    /// Where visibility changes go (`topics.activities`).
    pub activities_topic: String,
    /// Where changes of users go (`topics.users`).
    pub users_topic: String,
    /// Seals and opens integration credentials (`secrets.encryption_key`); without it they can
    /// be neither set nor inspected through the API.
    pub secret_key: Option<crm_sync_store::credentials::SecretKey>,
    /// Which CRM API URLs credentials may name (`directory.allowed_hosts`,
    /// `directory.allow_insecure_http`).
    pub egress: crm_sync_store::credentials::Egress,
    /// Where CRMs reach ingest (`ingest.public_url`), for the webhook URLs admins paste.
    pub ingest_url: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "crm-sync admin API",
        description = "The control plane of crm-sync. Every route needs `Authorization: Bearer <token>` \
            (tokens come from `crm-sync admin create-token`). Company-scoped routes answer 404 for \
            another company's ids, 403 when a viewer token tries to change anything, 422 with the \
            offending `field` for invalid input. Lists take `limit` (1–200, default 50) and \
            `cursor` (the previous page's `next_cursor`)."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "session", description = "Who the token is"),
        (name = "company", description = "The company's settings: its time zone, in which dates of periods begin and end"),
        (name = "integrations", description = "CRM connections and the auto-sync setting"),
        (name = "backfills", description = "Pulls from the CRM's API: backfills of history with their progress, and whether an integration's data is flowing"),
        (name = "workflows", description = "What counts as an activity, validated and dry-run"),
        (name = "teams", description = "Teams and memberships: only users on a team are visualized"),
        (name = "users", description = "Platform users, pending ones included, and CRM identities"),
        (name = "activities", description = "Recorded activities (unmapped ones included) and the leaderboard"),
        (name = "trail", description = "Why a record did (not) count: each event, every workflow's decision in words, what followed, and dead letters (newest first, a page at a time: `limit` and `cursor`)"),
        (name = "audit", description = "Who changed what, when"),
        (name = "tokens", description = "The company's admin tokens: listed without secrets, revoked at once"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin API token: `csa_…`"))
                    .build(),
            ),
        );
    }
}

/// The API routes (authenticated) and their OpenAPI document, from the same declarations.
pub fn api(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, doc) = routes::router()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
        .split_for_parts();
    (router, doc)
}

/// The HTTP surface of the admin port: the API, `/openapi.json` and the page. The ops endpoints
/// are served on a port of their own (`http.ops_port`).
pub fn app(state: AppState) -> Router {
    let (api, doc) = api(state);
    let doc = std::sync::Arc::new(doc);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .merge(assets::router())
    .method_not_allowed_fallback(request_id::method_not_allowed)
    .fallback(request_id::no_route)
    .layer(axum::middleware::from_fn(request_id::assign))
}

/// Serves the API and the page until SIGTERM/SIGINT, then drains in-flight requests (bounded by
/// `shutdown.grace_period_secs`) and publishes what they staged.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    crm_sync_kafka::clients::validate(&settings.kafka)?;
    let metrics = ops::install_metrics()?;
    metric_definitions::describe();
    crm_sync_store::metric_definitions::describe();
    crm_sync_kafka::metric_definitions::describe();
    let pool = crm_sync_store::pool_from_settings(&settings.database)
        .context("configuring the PostgreSQL pool (database.url)")?;
    crm_sync_store::open_min_connections(&pool);
    let producer = crm_sync_kafka::clients::producer(&settings.kafka, SERVICE.name)?;
    let outbox = Outbox::new(pool.clone(), Publisher::new(producer));
    let readiness = Readiness::new()
        .with_check("postgres", crm_sync_store::readiness_check(&pool))
        .with_check(
            "kafka",
            crm_sync_kafka::admin::readiness_check(&settings.kafka),
        );
    let mut service = crm_sync_kafka::service::start(SERVICE.name, &settings);
    let stop = service.shutdown();
    // Visibility changes whose publishing was interrupted (Kafka down, a crash after commit).
    service.background().spawn(
        "outbox relay",
        publish::relay_leftovers(outbox.clone(), stop.clone()),
    );
    let secret_key = crm_sync_store::credentials::SecretKey::from_settings(&settings.secrets)?;
    if secret_key.is_none() {
        tracing::warn!(
            "no secrets.encryption_key configured: integration credentials cannot be set through the API"
        );
    }
    let state = AppState {
        pool,
        outbox,
        activities_topic: settings.topics.activities.clone(),
        users_topic: settings.topics.users.clone(),
        secret_key,
        egress: crm_sync_store::credentials::egress_from_settings(&settings.directory),
        ingest_url: settings
            .ingest
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned()),
    };
    let app = app(state);

    let (listener, ops_listener) = ops::bind_api_and_ops(
        "admin-api",
        &settings.http,
        OPS_PORT,
        &settings.topics.activities,
    )
    .await?;
    let ops = OpsServer::new(ops_listener, readiness, metrics, &settings.http);
    let serve_api = ops::serve(listener, app, stop, ops.limits);
    service.run(ops, serve_api).await
}
