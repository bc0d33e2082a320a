//! The PostgreSQL store shared by every crm-sync service: connection, migrations, and the queries
//! more than one service needs. A service's own transactional logic lives with the service.

pub mod admin;
pub mod announce;
mod api_credentials;
pub mod credentials;
pub mod crm_user_status;
pub mod integrations;
pub mod listen;
pub mod metric_definitions;
pub mod outbox;
mod ping;
pub mod provisioning;
pub mod record_owners;
pub mod salesforce_ids;
pub mod secrets;
pub mod sync_jobs;
pub mod sync_status;
pub mod tenants;
pub mod trail;
pub mod views;
pub mod workflows;

use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};

pub use ping::{ping, readiness_check};
pub use sqlx;

/// The schema, embedded in every binary so that `crm-sync migrate` and tests need no files.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}

/// A pool that connects lazily, so a service starts (and reports not-ready) while PostgreSQL is
/// down instead of crashing.
pub fn pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, StoreError> {
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .connect_lazy(url)?)
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("running database migrations")
}

/// The pool a service configures from `database.*` settings.
pub fn pool_from_settings(
    settings: &crm_sync_runtime::settings::DatabaseSettings,
) -> Result<PgPool, StoreError> {
    let lock_timeout = settings.lock_timeout_ms;
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        // A statement stuck behind someone else's lock (a transaction left open in psql, a
        // migration) would hold its consumer for good, silently; failing after a while turns
        // it into a retried batch that the logs and /readyz report. Set after connecting
        // rather than as a startup option, which connection poolers in front of managed
        // PostgreSQL may refuse.
        .after_connect(move |connection, _| {
            Box::pin(async move {
                if lock_timeout > 0 {
                    sqlx::query(&format!("SET lock_timeout = {lock_timeout}"))
                        .execute(connection)
                        .await?;
                }
                Ok(())
            })
        })
        .connect_lazy_with(connect_options(settings)?))
}

/// Opens the pool's `min_connections` in the background, for a service at start: a lazy pool
/// opens none before it is used, so the first batches of every partition would each wait for a
/// connection (TLS and SCRAM handshakes, on a machine busy starting everything else). Later,
/// the pool replaces a connection it retires at once. PostgreSQL being down is no error here:
/// the connections are then opened when it is back and needed.
pub fn open_min_connections(pool: &PgPool) {
    let pool = pool.clone();
    tokio::spawn(async move {
        let wanted = pool.options().get_min_connections();
        let held = futures::future::join_all((0..wanted).map(|_| pool.acquire())).await;
        let opened = held.iter().filter(|c| c.is_ok()).count();
        match held.into_iter().find_map(Result::err) {
            None => tracing::debug!(opened, "database connections opened at start"),
            Some(error) => {
                tracing::info!(opened, wanted, %error, "could not open every database connection at start; they open when needed")
            }
        }
    });
}

/// The URL, then the separate password and TLS keys on top of what it says.
pub fn connect_options(
    settings: &crm_sync_runtime::settings::DatabaseSettings,
) -> Result<PgConnectOptions, StoreError> {
    use crm_sync_runtime::settings::PgSslMode as Mode;
    use secrecy::ExposeSecret;
    // The error of a malformed URL could quote it, password included: say what is wrong only.
    let mut options = PgConnectOptions::from_str(settings.url.expose_secret()).map_err(|_| {
        StoreError::Invalid(
            "invalid configuration: key `database.url`: not a valid postgres:// URL".to_owned(),
        )
    })?;
    if let Some(password) = &settings.password {
        options = options.password(password.expose_secret());
    }
    if let Some(mode) = settings.sslmode {
        options = options.ssl_mode(match mode {
            Mode::Disable => PgSslMode::Disable,
            Mode::Allow => PgSslMode::Allow,
            Mode::Prefer => PgSslMode::Prefer,
            Mode::Require => PgSslMode::Require,
            Mode::VerifyCa => PgSslMode::VerifyCa,
            Mode::VerifyFull => PgSslMode::VerifyFull,
        });
    }
    if let Some(ca) = &settings.ssl_root_cert {
        options = options.ssl_root_cert(ca);
    }
    Ok(options)
}
