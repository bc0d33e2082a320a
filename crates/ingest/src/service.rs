//! Wiring the service together: configuration, PostgreSQL, Kafka, the webhook routes and the
//! ops endpoints (on a port of their own).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use crm_sync_kafka::AtomicPublisher;
use crm_sync_kafka::transactional;
use crm_sync_runtime::ops::{self, Readiness};
use crm_sync_runtime::service::OpsServer;
use crm_sync_runtime::supervise::Supervisor;
use crm_sync_runtime::{ServiceDefaults, Settings};
use crm_sync_store::sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub const SERVICE: ServiceDefaults = ServiceDefaults {
    name: "ingest",
    http_port: 8080,
    consumer_group: "crm-sync-ingest",
};

/// Where `/healthz`, `/readyz` and `/metrics` are served unless `http.ops_port` says otherwise:
/// never on the webhook port, which faces the internet.
pub const OPS_PORT: u16 = 9080;

/// What background work started inside ingest gets: the pull jobs, built in a crate that itself
/// depends on this one's CRM mappings, hook in here.
pub struct Background<'a> {
    pub settings: &'a Settings,
    pub pool: PgPool,
    /// The publisher of the webhooks' events: pulled records go into the same kind of
    /// transactions on the same topic.
    pub publisher: AtomicPublisher,
    /// Tasks spawned here run until `shutdown`, then finish what they hold (hand back a
    /// lease) before the process exits, bounded by the grace period; one ending earlier stops
    /// the service.
    pub supervisor: &'a mut Supervisor,
    pub shutdown: CancellationToken,
    /// Checks of the background work's own, added to `/readyz`.
    pub readiness: &'a mut Readiness,
}

/// Serves the webhook API and the ops endpoints until SIGTERM/SIGINT, then drains in-flight
/// requests (bounded by `shutdown.grace_period_secs`) and lets the Kafka committer answer what it holds.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    run_with(settings, |_| Ok(())).await
}

/// [`run`], with background tasks that `background` spawns on the service's supervisor.
pub async fn run_with<B>(settings: Settings, background: B) -> anyhow::Result<()>
where
    B: FnOnce(Background<'_>) -> anyhow::Result<()>,
{
    crm_sync_kafka::clients::validate(&settings.kafka)?;
    let metrics = ops::install_metrics()?;
    crate::metric_definitions::describe();
    crm_sync_store::metric_definitions::describe();
    crm_sync_kafka::metric_definitions::describe();
    let pool = crm_sync_store::pool_from_settings(&settings.database)
        .context("configuring the PostgreSQL pool (database.url)")?;
    crm_sync_store::open_min_connections(&pool);
    let transactional_id = transactional::transactional_id(&settings.kafka, settings.http.port);
    tracing::info!(%transactional_id, "publishing each request in a Kafka transaction");
    let (publisher, committer) = AtomicPublisher::start(
        transactional::producer_config(&settings.kafka, SERVICE.name, &transactional_id),
        settings.ingest.transactional_producers,
    );

    let mut readiness = readiness(&settings, &pool, &publisher);

    let key = crm_sync_store::credentials::SecretKey::from_settings(&settings.secrets)?;
    if key.is_none() {
        tracing::warn!(
            "no secrets.encryption_key configured: only Salesforce integrations (webhook token) can be authenticated"
        );
    }
    let mut service = crm_sync_kafka::service::start(SERVICE.name, &settings);
    let stop = service.shutdown();
    background(Background {
        settings: &settings,
        pool: pool.clone(),
        publisher: publisher.clone(),
        supervisor: service.background(),
        shutdown: stop.clone(),
        readiness: &mut readiness,
    })?;
    let api = crate::http::router(app_state(&settings, pool, publisher, key));
    let (listener, ops_listener) =
        ops::bind_api_and_ops("ingest", &settings.http, OPS_PORT, &settings.topics.events).await?;
    let grace = service.grace();
    let ops = OpsServer::new(ops_listener, readiness, metrics, &settings.http);
    let serve_api = ops::serve(listener, api, stop, ops.limits);
    // Pull jobs hand their leases over before the process goes (probes still answer).
    let served = service.run(ops, serve_api).await;
    // Every acknowledged request's transaction is committed; requests still in the committer's
    // hands (abandoned by the grace period) are answered or aborted, bounded by the grace period.
    committer.finish(grace).await;
    served
}

/// `/readyz`: PostgreSQL, Kafka, and the transactional producers initialized.
fn readiness(settings: &Settings, pool: &PgPool, publisher: &AtomicPublisher) -> Readiness {
    Readiness::new()
        .with_check("postgres", crm_sync_store::readiness_check(pool))
        .with_check(
            "kafka",
            crm_sync_kafka::admin::readiness_check(&settings.kafka),
        )
        .with_check("kafka_transactions", {
            let publisher = publisher.clone();
            move || {
                let ready = publisher.ready();
                async move {
                    if ready {
                        Ok(())
                    } else {
                        Err("Kafka transactions not initialized yet".to_owned())
                    }
                }
            }
        })
}

/// What every webhook handler shares.
fn app_state(
    settings: &Settings,
    pool: PgPool,
    publisher: AtomicPublisher,
    key: Option<crm_sync_store::credentials::SecretKey>,
) -> crate::http::AppState {
    crate::http::AppState {
        pool: pool.clone(),
        publisher,
        events_topic: settings.topics.events.as_str().into(),
        max_body_bytes: settings.ingest.max_body_bytes,
        integrations: Arc::new(crate::http::Integrations::new(
            pool,
            key,
            Duration::from_millis(settings.ingest.integration_cache_ms),
        )),
        limiter: Arc::new(crate::http::RateLimiter::new(
            settings.ingest.rate_limit_per_second,
            settings.ingest.rate_limit_burst,
        )),
        signature_tolerance: Duration::from_secs(settings.ingest.signature_tolerance_secs),
        webhooks_seen: Arc::new(crate::http::WebhooksSeen::default()),
        limits: crate::check::Limits::from_settings(&settings.ingest),
    }
}
