//! Layered configuration: built-in defaults < optional file named by `CRM_SYNC_CONFIG` <
//! environment variables `CRM_SYNC__SECTION__KEY` (e.g. `CRM_SYNC__KAFKA__BROKERS`).

use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use crate::pull_settings::PullSettings;
pub use crate::section_settings::{ProvisionerSettings, TrailSettings};
pub use crate::security::{LibrdkafkaOptions, PgSslMode, SaslMechanism, SecurityProtocol};
pub use crate::settings_error::SettingsError;
use crate::settings_error::key;

/// Everything a crm-sync service can be configured with. Services read the sections they need.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub kafka: KafkaSettings,
    pub topics: TopicSettings,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub telemetry: TelemetrySettings,
    pub shutdown: ShutdownSettings,
    pub ingest: IngestSettings,
    pub evaluator: EvaluatorSettings,
    /// Absent from most configurations: a service that never decrypts anything needs no key.
    #[serde(default)]
    pub secrets: SecretsSettings,
    pub directory: DirectorySettings,
    /// Pull jobs (backfills, reconciliation, hydration) run by ingest; every key has a default.
    #[serde(default)]
    pub pull: PullSettings,
    /// The record trail the evaluator keeps; every key has a default.
    #[serde(default)]
    pub trail: TrailSettings,
    /// How the provisioner writes to the database; every key has a default.
    #[serde(default)]
    pub provisioner: ProvisionerSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    /// Consumer group of this service; replicas of one service share it.
    pub consumer_group: String,
    /// How long a producer may keep retrying one message before reporting it failed.
    pub delivery_timeout_ms: u64,
    /// librdkafka `session.timeout.ms` for consumers.
    pub session_timeout_ms: u64,
    /// `transactional.id` of a service that consumes and produces in Kafka transactions (the
    /// workflow-evaluator). Unique per replica and stable across its restarts, so that a
    /// restarted replica fences its predecessor and aborts what it left open. Default:
    /// `<consumer_group>-<hostname>-<http.port>`.
    #[serde(default)]
    pub transactional_id: Option<String>,
    /// PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (OIDC client credentials).
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    #[serde(default)]
    pub sasl_username: Option<String>,
    #[serde(default)]
    pub sasl_password: Option<SecretString>,
    #[serde(default)]
    pub sasl_password_file: Option<PathBuf>,
    /// OAUTHBEARER: the OIDC token endpoint and client credentials.
    #[serde(default)]
    pub oauth_token_endpoint_url: Option<String>,
    #[serde(default)]
    pub oauth_client_id: Option<String>,
    #[serde(default)]
    pub oauth_client_secret: Option<SecretString>,
    #[serde(default)]
    pub oauth_client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub oauth_scope: Option<String>,
    /// CA bundle (PEM) that signed the brokers' certificates; none: the system's.
    #[serde(default)]
    pub ssl_ca_location: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    #[serde(default)]
    pub ssl_certificate_location: Option<PathBuf>,
    #[serde(default)]
    pub ssl_key_location: Option<PathBuf>,
    #[serde(default)]
    pub ssl_key_password: Option<SecretString>,
    #[serde(default)]
    pub ssl_key_password_file: Option<PathBuf>,
    /// Other librdkafka properties per client role, checked at start-up.
    #[serde(default)]
    pub librdkafka_options: LibrdkafkaOptions,
    /// How often the credential files above are checked for a new version (which the service
    /// restarts to load); 0: never.
    pub credential_check_ms: u64,
}

/// Topic names. Dead-letter topics are `<topic>.dlq`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSettings {
    pub events: String,
    pub matches: String,
    pub activities: String,
    pub users: String,
    /// The evaluator's per-record state (compacted changelog, partitioned like `events`).
    pub records: String,
    /// Requests to fetch a record whole from its CRM (hydration).
    pub hydrations: String,
}

impl TopicSettings {
    /// The dead-letter topic of `topic`: `<topic>.dlq`.
    pub fn dlq_of(topic: &str) -> String {
        format!("{topic}.dlq")
    }
}

/// `Debug` shows the URL without its password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May carry the password; `url_file` replaces it when set.
    pub url: SecretString,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// Replaces the URL's password when set (or read from `password_file`).
    #[serde(default)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// libpq's sslmode (disable … verify-full); none: what the URL says (default prefer).
    #[serde(default)]
    pub sslmode: Option<PgSslMode>,
    /// CA (PEM) that signed the server's certificate, for verify-ca / verify-full.
    #[serde(default)]
    pub ssl_root_cert: Option<PathBuf>,
    pub max_connections: u32,
    /// Connections a service opens at start and keeps open (no work waits for a new one).
    pub min_connections: u32,
    pub acquire_timeout_ms: u64,
    /// How long a statement waits for a lock before it fails (its batch is then retried);
    /// 0: for ever.
    pub lock_timeout_ms: u64,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field(
                "url",
                &crate::security::redact_url(self.url.expose_secret()),
            )
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("sslmode", &self.sslmode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("lock_timeout_ms", &self.lock_timeout_ms)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Where ingest and admin-api serve `/healthz`, `/readyz` and `/metrics` (none: their
    /// default, see `OPS_PORT` of each); the other services serve only those, on `port`.
    pub ops_port: Option<u16>,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout_ms: u64,
    /// The longest pause while a request's body is read.
    pub body_read_timeout_ms: u64,
    /// How long a request may take, body included, until its answer starts (else 408).
    pub request_timeout_ms: u64,
    /// Connections open at once per listener; more wait until one closes.
    pub max_connections: usize,
}

impl HttpSettings {
    /// The ops port of a service that serves its API on `port`, `default` unless configured.
    pub fn ops_port_or(&self, default: u16) -> Result<u16, SettingsError> {
        let ops = self.ops_port.unwrap_or(default);
        if ops == self.port && ops != 0 {
            return Err(SettingsError::Key {
                key: "http.ops_port",
                reason: format!("must differ from http.port ({})", self.port),
            });
        }
        Ok(ops)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal (containers), human-readable on a terminal.
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// A `tracing` filter, e.g. `info,crm_sync_provisioner=debug`.
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP/HTTP traces endpoint (e.g. `http://127.0.0.1:4318/v1/traces`); none: no export.
    pub otlp_endpoint: Option<String>,
    /// Headers sent with every export (`name=value,name2=value2`, e.g. a hosted collector's API
    /// key); `otlp_headers_file` replaces it when set.
    #[serde(default)]
    pub otlp_headers: Option<SecretString>,
    #[serde(default)]
    pub otlp_headers_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// How long SIGTERM may take to drain in-flight work before the process exits anyway.
    pub grace_period_secs: u64,
}

impl ShutdownSettings {
    pub fn grace_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.grace_period_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// Largest webhook body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Sustained webhook requests per second one integration may send before getting 429.
    pub rate_limit_per_second: u32,
    /// Requests an integration may send in a burst above the sustained rate.
    pub rate_limit_burst: u32,
    /// How far a signed request's timestamp may be from now (HubSpot v3, generic signatures).
    pub signature_tolerance_secs: u64,
    /// How long an integration's settings and credentials are reused before being re-read.
    pub integration_cache_ms: u64,
    /// Kafka transactions in flight at once (one transactional producer each); the committers
    /// after the first take requests only when they queue.
    pub transactional_producers: usize,
    /// Events one request may produce after expansion; more get 413.
    pub max_events_per_request: usize,
    /// Bytes of one field value; larger get 400.
    pub max_field_bytes: usize,
    /// Bytes of one encoded event; larger get 413. Must stay below Kafka's message size limit.
    pub max_event_bytes: usize,
    /// The address CRMs reach ingest at (e.g. `https://hooks.example.com`): admin-api shows each
    /// integration's webhook URL under it, ready to paste into the CRM. Unset: only the path.
    #[serde(default)]
    pub public_url: Option<String>,
}

/// The workflow-evaluator's record state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluatorSettings {
    /// Where the record state is kept on local disk. It is a cache of `topics.records` (rebuilt
    /// from it when lost); default: a folder per replica under the system's temporary folder.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Memory the local store may use for its block cache and write buffers, in MiB (at least
    /// 8, the default). A larger cache saves re-reading blocks from the operating system's page
    /// cache; the default saves the evaluator 30–40 MiB of resident memory in a backlog
    /// against the former 64.
    pub state_memory_mib: u64,
    /// A record whose fields the workflows need but that were never seen is asked for from its
    /// CRM (hydration) at most once per this interval.
    pub hydration_interval_secs: u64,
    /// Kafka transactions in flight at once (one transactional producer each): the next
    /// batch's begins once the previous batch's outputs are delivered; they commit in order.
    pub transactional_producers: usize,
    /// Events per transaction at most, in a backlog: larger ones catch up faster for more memory.
    pub batch_max_events: usize,
    /// How often each replica forgets the record state of integrations deleted meanwhile
    /// (tombstones in the changelog, removal from the local store).
    pub purge_interval_secs: u64,
}

/// Secrets that must be used again (CRM client secrets, API credentials) are stored encrypted
/// with this key. `Debug` never shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsSettings {
    /// 32 bytes, base64 (standard alphabet) or 64 hex digits.
    pub encryption_key: Option<SecretString>,
    /// Replaces `encryption_key` when set.
    #[serde(default)]
    pub encryption_key_file: Option<PathBuf>,
}

/// Looking CRM users up through the CRMs' APIs (the provisioner's directory clients).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySettings {
    /// Per HTTP request to a CRM API.
    pub timeout_ms: u64,
    /// Attempts of one lookup made while an outcome waits (the background completion retries
    /// on its own schedule).
    pub inline_attempts: u32,
    /// How long a batch of outcomes waits for its CRM users' lookups at most: one CRM that
    /// hangs must not hold the other tenants of its partition longer. Lookups not answered by
    /// then are left to the background completion.
    pub inline_deadline_ms: u64,
    /// How long a looked-up name and email are reused.
    pub cache_ttl_secs: u64,
    /// How often users created without a name or email are looked up again.
    pub completion_interval_secs: u64,
    /// How long a mapped CRM user's directory answer (active or not) is trusted before it is
    /// asked again; 0 turns the re-check off.
    pub recheck_interval_secs: u64,
    /// Hosts a CRM API URL may name beyond each CRM's own, comma-separated: exact names or
    /// `*.domain`. Checked when credentials are saved and at every call.
    pub allowed_hosts: String,
    /// Tests and local development only: also accept `http://` URLs and loopback, private and
    /// link-local addresses (hosts must still be allowed).
    pub allow_insecure_http: bool,
}

impl DirectorySettings {
    /// `allowed_hosts` as a list.
    pub fn allowed_host_list(&self) -> Vec<String> {
        self.allowed_hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Per-service defaults that differ between services.
#[derive(Debug, Clone, Copy)]
pub struct ServiceDefaults {
    pub name: &'static str,
    pub http_port: u16,
    pub consumer_group: &'static str,
}

/// librdkafka and sqlx say at `info` what the services report better themselves; the record
/// store's engine (fjall, lsm_tree) two lines per keyspace it opens, each partition's at start.
const DEFAULT_LOG_LEVEL: &str = "info,rdkafka=warn,sqlx=warn,fjall=warn,lsm_tree=warn";

impl Settings {
    /// Loads the layered configuration from the process environment.
    pub fn load(service: ServiceDefaults) -> Result<Self, SettingsError> {
        let file = std::env::var_os("CRM_SYNC_CONFIG").map(PathBuf::from);
        Self::load_from(service, file, std::env::vars())
    }

    /// Loads from an explicit file and environment, so tests need not touch the process env.
    pub fn load_from(
        service: ServiceDefaults,
        file: Option<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder()
            .set_default("kafka.brokers", "127.0.0.1:9092")?
            .set_default("kafka.consumer_group", service.consumer_group)?
            .set_default("kafka.delivery_timeout_ms", 30_000)?
            .set_default("kafka.session_timeout_ms", 10_000)?
            .set_default("kafka.credential_check_ms", 10_000)?
            .set_default("topics.events", "crm.events.v1")?
            .set_default("topics.matches", "crm.matches.v1")?
            .set_default("topics.activities", "salesscreen.activities.v1")?
            .set_default("topics.users", "salesscreen.users.v1")?
            .set_default("topics.records", "crm.records.v1")?
            .set_default("topics.hydrations", "crm.hydrations.v1")?
            .set_default(
                "database.url",
                "postgres://crm_sync:crm_sync@127.0.0.1:5432/crm_sync",
            )?
            .set_default("database.max_connections", 10)?
            .set_default("database.min_connections", 2)?
            .set_default("database.acquire_timeout_ms", 5_000)?
            .set_default("database.lock_timeout_ms", 10_000)?
            .set_default("http.host", "0.0.0.0")?
            .set_default("http.port", service.http_port)?
            .set_default("http.header_read_timeout_ms", 10_000)?
            .set_default("http.body_read_timeout_ms", 10_000)?
            .set_default("http.request_timeout_ms", 60_000)?
            .set_default("http.max_connections", 1024)?
            .set_default("telemetry.log_level", DEFAULT_LOG_LEVEL)?
            .set_default("telemetry.log_format", "auto")?
            .set_default("shutdown.grace_period_secs", 25)?
            .set_default("ingest.max_body_bytes", 4 * 1024 * 1024)?
            .set_default("ingest.rate_limit_per_second", 200)?
            .set_default("ingest.rate_limit_burst", 400)?
            .set_default("ingest.signature_tolerance_secs", 300)?
            .set_default("ingest.integration_cache_ms", 5_000)?
            .set_default("ingest.transactional_producers", 2)?
            .set_default("evaluator.state_memory_mib", 8)?
            .set_default("evaluator.hydration_interval_secs", 900)?
            .set_default("evaluator.transactional_producers", 2)?
            .set_default("evaluator.batch_max_events", 250)?
            .set_default("evaluator.purge_interval_secs", 600)?
            .set_default("ingest.max_events_per_request", 1000)?
            .set_default("ingest.max_field_bytes", 131_072)?
            .set_default("ingest.max_event_bytes", 524_288)?
            .set_default("directory.timeout_ms", 2_000)?
            .set_default("directory.inline_attempts", 2)?
            .set_default("directory.inline_deadline_ms", 5_000)?
            .set_default("directory.cache_ttl_secs", 3_600)?
            .set_default("directory.completion_interval_secs", 30)?
            .set_default("directory.recheck_interval_secs", 86_400)?
            .set_default("directory.allowed_hosts", "")?
            .set_default("directory.allow_insecure_http", false)?;
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError::MissingFile { path });
            }
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CRM_SYNC__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CRM_SYNC")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        settings.read_secret_files()?;
        settings.validate()?;
        settings.validate_security()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        self.validate_stores()?;
        self.validate_http()?;
        self.validate_ingest()?;
        self.validate_directory()?;
        self.pull.validate()?;
        if self
            .secrets
            .encryption_key
            .as_ref()
            .is_some_and(|k| k.expose_secret().trim().is_empty())
        {
            return key(
                "secrets.encryption_key",
                "must be 32 bytes in base64 or hex when set",
            );
        }
        Ok(())
    }

    /// Kafka, PostgreSQL and what the evaluator keeps.
    fn validate_stores(&self) -> Result<(), SettingsError> {
        if self.kafka.brokers.trim().is_empty() {
            return key("kafka.brokers", "must name at least one broker");
        }
        if self.kafka.consumer_group.trim().is_empty() {
            return key("kafka.consumer_group", "must not be empty");
        }
        if self
            .kafka
            .transactional_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return key("kafka.transactional_id", "must not be empty when set");
        }
        if self.database.max_connections == 0 {
            return key("database.max_connections", "must be at least 1");
        }
        if self.database.min_connections > self.database.max_connections {
            return key(
                "database.min_connections",
                "must not be more than database.max_connections",
            );
        }
        let url = self.database.url.expose_secret();
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return key("database.url", "must be a postgres:// URL");
        }
        if self.trail.retention_days == 0 {
            return key("trail.retention_days", "must be at least 1");
        }
        if self.trail.expiry_interval_secs == 0 {
            return key("trail.expiry_interval_secs", "must be at least 1");
        }
        if self.evaluator.state_memory_mib < 8 {
            return key("evaluator.state_memory_mib", "must be at least 8");
        }
        if !(1..=4).contains(&self.evaluator.transactional_producers) {
            return key(
                "evaluator.transactional_producers",
                "must be between 1 and 4",
            );
        }
        if !(1..=2000).contains(&self.evaluator.batch_max_events) {
            return key("evaluator.batch_max_events", "must be between 1 and 2000");
        }
        if self.evaluator.purge_interval_secs == 0 {
            return key("evaluator.purge_interval_secs", "must be at least 1");
        }
        Ok(())
    }

    fn validate_http(&self) -> Result<(), SettingsError> {
        for (name, ms) in [
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms,
            ),
            ("http.body_read_timeout_ms", self.http.body_read_timeout_ms),
            ("http.request_timeout_ms", self.http.request_timeout_ms),
        ] {
            if ms == 0 {
                return key(name, "must be at least 1");
            }
        }
        if !(1..=65_535).contains(&self.http.max_connections) {
            return key("http.max_connections", "must be between 1 and 65535");
        }
        Ok(())
    }

    fn validate_ingest(&self) -> Result<(), SettingsError> {
        if self.ingest.max_body_bytes < 1024 {
            return key("ingest.max_body_bytes", "must be at least 1024");
        }
        if self.ingest.rate_limit_per_second == 0 {
            return key("ingest.rate_limit_per_second", "must be at least 1");
        }
        if self.ingest.rate_limit_burst == 0 {
            return key("ingest.rate_limit_burst", "must be at least 1");
        }
        if !(1..=32).contains(&self.ingest.transactional_producers) {
            return key("ingest.transactional_producers", "must be between 1 and 32");
        }
        if let Some(url) = &self.ingest.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return key(
                "ingest.public_url",
                "must be an http:// or https:// address, e.g. https://hooks.example.com",
            );
        }
        if self.ingest.max_events_per_request == 0 {
            return key("ingest.max_events_per_request", "must be at least 1");
        }
        // librdkafka's default `message.max.bytes`: a larger event could never be produced.
        if !(1024..=1_000_000).contains(&self.ingest.max_event_bytes) {
            return key("ingest.max_event_bytes", "must be between 1024 and 1000000");
        }
        if !(1..=self.ingest.max_event_bytes).contains(&self.ingest.max_field_bytes) {
            return key(
                "ingest.max_field_bytes",
                "must be at least 1 and at most ingest.max_event_bytes",
            );
        }
        Ok(())
    }

    fn validate_directory(&self) -> Result<(), SettingsError> {
        if self.directory.timeout_ms == 0 {
            return key("directory.timeout_ms", "must be at least 1");
        }
        if self.directory.inline_deadline_ms == 0 {
            return key("directory.inline_deadline_ms", "must be at least 1");
        }
        if self.directory.completion_interval_secs == 0 {
            return key("directory.completion_interval_secs", "must be at least 1");
        }
        if let Some(bad) = self.directory.allowed_host_list().iter().find(|h| {
            let name = h.strip_prefix("*.").unwrap_or(h);
            name.is_empty() || name.contains(['*', '/', ':', '@', ' '])
        }) {
            return Err(SettingsError::Key {
                key: "directory.allowed_hosts",
                reason: format!("{bad:?} is not a host name, an address or *.domain"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
