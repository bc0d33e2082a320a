//! What every subcommand needs: the layered settings (with command-line overrides), a database
//! pool and topic names.

use anyhow::Context as _;
use crm_sync_runtime::settings::DatabaseSettings;
use crm_sync_runtime::{ServiceDefaults, Settings};
use sqlx::PgPool;

pub const DEFAULTS: ServiceDefaults = ServiceDefaults {
    name: "crm-sync",
    http_port: 0,
    consumer_group: "crm-sync-cli",
};

pub struct Context {
    pub settings: Settings,
}

impl Context {
    /// Settings as the services read them (defaults < `CRM_SYNC_CONFIG` file < `CRM_SYNC__*`
    /// environment), then the command-line flags on top.
    pub fn load(brokers: Option<String>, database_url: Option<String>) -> anyhow::Result<Context> {
        let mut settings = Settings::load(DEFAULTS)?;
        crm_sync_kafka::clients::validate(&settings.kafka)?;
        if let Some(brokers) = brokers {
            settings.kafka.brokers = brokers;
        }
        if let Some(url) = database_url {
            settings.database.url = url.into();
        }
        Ok(Context { settings })
    }

    /// A connected pool: unlike the services, a command should fail at once when the database is
    /// unreachable, naming where it looked.
    pub async fn pool(&self) -> anyhow::Result<PgPool> {
        let db = &self.settings.database;
        let url = redact_url(secrecy::ExposeSecret::expose_secret(&db.url));
        let settings = DatabaseSettings {
            max_connections: 4,
            // A command is over in moments: nothing to keep open.
            min_connections: 0,
            ..db.clone()
        };
        let pool = crm_sync_store::pool_from_settings(&settings)
            .with_context(|| format!("database URL {url}"))?;
        crm_sync_store::ping(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the database at {url}: {e}"))?;
        Ok(pool)
    }

    /// Resolves a topic alias (`events`, `matches`, `activities`, `users`, each optionally with
    /// `.dlq`) to the configured name; anything else is taken as a literal topic name.
    pub fn resolve_topic(&self, topic: &str) -> String {
        let (base, dlq) = match topic.strip_suffix(".dlq") {
            Some(base) => (base, true),
            None => (topic, false),
        };
        let topics = &self.settings.topics;
        let resolved = match base {
            "events" => &topics.events,
            "matches" => &topics.matches,
            "activities" => &topics.activities,
            "users" => &topics.users,
            _ => return topic.to_owned(),
        };
        if dlq {
            crm_sync_runtime::settings::TopicSettings::dlq_of(resolved)
        } else {
            resolved.clone()
        }
    }
}

/// The URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://crm_sync:s3cret@127.0.0.1:5432/crm_sync"),
            "postgres://crm_sync:***@127.0.0.1:5432/crm_sync"
        );
        assert_eq!(redact_url("postgres://host/db"), "postgres://host/db");
    }
}
