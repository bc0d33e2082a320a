//! provisioner: turns matched workflow outcomes into platform state. Creates the platform user
//! the first time a CRM user's data arrives (auto-sync), records activities idempotently, and
//! forwards `UserProvisioned` / `ActivityChanged` through a transactional outbox.

pub mod apply;
pub mod auto_sync;
mod batch;
mod counts;
pub mod directory;
pub mod metric_definitions;
pub mod outcome;
pub mod people;
mod provision;

use std::time::Duration;

use crm_sync_kafka::Publisher;
use crm_sync_kafka::service::ConsumerService;
use crm_sync_outbox::{Outbox, Sweep};
use crm_sync_runtime::Settings;
use crm_sync_runtime::ops::Readiness;
use crm_sync_runtime::service::Service;

pub use apply::Provisioner;

pub const SERVICE: crm_sync_runtime::ServiceDefaults = crm_sync_runtime::ServiceDefaults {
    name: "provisioner",
    http_port: 8083,
    consumer_group: "crm-sync-provisioner",
};

/// Messages left in the outbox by a replica that crashed between commit and publish: every
/// writer's rows (the provisioner's replicas, and admin-api's as a backstop to its own relay).
const RELAY: Sweep = Sweep {
    batch_prefix: "",
    abandoned_after: Duration::from_secs(60),
    limit: 1000,
    interval: Duration::from_secs(30),
    on_relayed: |_| {},
};

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    crm_sync_kafka::clients::validate(&settings.kafka)?;
    let metrics = crm_sync_runtime::ops::install_metrics()?;
    metric_definitions::describe();
    crm_sync_kafka::metric_definitions::describe();
    crm_sync_store::metric_definitions::describe();
    crm_sync_crm_directory::metric_definitions::describe();
    let mut service = crm_sync_kafka::service::start(SERVICE.name, &settings);
    let pool = crm_sync_store::pool_from_settings(&settings.database)?;
    crm_sync_store::open_min_connections(&pool);
    // A batch's messages are handed over at once, after its commit, and awaited. Without any
    // linger the first of them left alone and the rest followed in more requests, about 2.6 per
    // partition and batch (librdkafka sends one produce request per partition); 2 ms lets the
    // whole batch share one per partition, for the broker's CPU, at 2 ms per batch.
    let publisher = Publisher::new(crm_sync_kafka::clients::producer_with_linger(
        &settings.kafka,
        SERVICE.name,
        2,
    )?);
    let outbox = Outbox::new(pool.clone(), publisher.clone());
    let readiness = Readiness::new().with_check("postgres", crm_sync_store::readiness_check(&pool));
    let handler = Provisioner {
        directory: directory::Directory::from_settings(pool.clone(), outbox.clone(), &settings)?,
        pool,
        outbox,
        activities_topic: settings.topics.activities.clone(),
        users_topic: settings.topics.users.clone(),
        concurrent_batches: Some(settings.provisioner.concurrent_batches).filter(|n| *n > 0),
    };
    spawn_background(&mut service, &handler, &settings);
    let topic = settings.topics.matches.clone();
    ConsumerService {
        name: SERVICE.name,
        settings: &settings,
        topic: &topic,
        handler,
        publisher,
        readiness,
        metrics,
        service,
    }
    .run()
    .await
}

/// The provisioner's background tasks: the outbox relay, the directory's completion of pending
/// accounts, and the listeners that act as soon as the database says so.
fn spawn_background(service: &mut Service, handler: &Provisioner, settings: &Settings) {
    let shutdown = service.shutdown();
    let background = service.background();
    background.spawn(
        "outbox relay",
        handler
            .outbox
            .clone()
            .relay_leftovers(RELAY, shutdown.clone()),
    );
    if let Some(directory) = &handler.directory {
        background.spawn(
            "directory completion",
            directory.clone().complete_pending(shutdown.clone()),
        );
    }
    // Users the CRM says are inactive, deactivated as soon as that is known.
    background.spawn(
        "CRM-inactive listener",
        people::CrmInactive::new(
            handler.pool.clone(),
            handler.outbox.clone(),
            settings.topics.users.clone(),
            settings.topics.activities.clone(),
        )
        .run(shutdown.clone()),
    );
    // Identities waiting unmapped when an integration's auto-sync is turned on.
    background.spawn(
        "auto-sync listener",
        auto_sync::AutoSync::new(handler.clone()).run(shutdown),
    );
}
