//! Settings for production infrastructure: how clients authenticate to Kafka, PostgreSQL's TLS
//! mode, and secrets read from files (as Kubernetes mounts a Secret). Secret values are
//! [`SecretString`]s, whose `Debug` never shows them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

use secrecy::ExposeSecret;

use crate::settings::{KafkaSettings, Settings, SettingsError};

/// librdkafka `security.protocol`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    #[serde(rename = "PLAINTEXT", alias = "plaintext")]
    Plaintext,
    #[serde(rename = "SSL", alias = "ssl")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT", alias = "sasl_plaintext")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL", alias = "sasl_ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// librdkafka `sasl.mechanism`. OAUTHBEARER fetches its tokens with OIDC client credentials.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN", alias = "plain")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256", alias = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512", alias = "scram-sha-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER", alias = "oauthbearer")]
    OauthBearer,
}

impl SaslMechanism {
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
            SaslMechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

/// Any other librdkafka property, per client role: `common` applies to every client, then the
/// role's own map. Keys may be written with `_` for `.` (environment variables cannot hold dots):
/// `CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__PRODUCER__SOCKET_KEEPALIVE_ENABLE=true`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibrdkafkaOptions {
    #[serde(default)]
    pub common: BTreeMap<String, String>,
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    #[serde(default)]
    pub admin: BTreeMap<String, String>,
}

impl Settings {
    /// Every secret can come from a file (`…_file`), as Kubernetes mounts a Secret.
    pub(crate) fn read_secret_files(&mut self) -> Result<(), SettingsError> {
        let k = &mut self.kafka;
        resolve_secret_file(
            &mut k.sasl_password,
            k.sasl_password_file.as_deref(),
            "kafka.sasl_password_file",
        )?;
        resolve_secret_file(
            &mut k.oauth_client_secret,
            k.oauth_client_secret_file.as_deref(),
            "kafka.oauth_client_secret_file",
        )?;
        resolve_secret_file(
            &mut k.ssl_key_password,
            k.ssl_key_password_file.as_deref(),
            "kafka.ssl_key_password_file",
        )?;
        let db = &mut self.database;
        if let Some(path) = db.url_file.as_deref() {
            db.url = read_secret_file(path, "database.url_file")?;
        }
        resolve_secret_file(
            &mut db.password,
            db.password_file.as_deref(),
            "database.password_file",
        )?;
        resolve_secret_file(
            &mut self.secrets.encryption_key,
            self.secrets.encryption_key_file.as_deref(),
            "secrets.encryption_key_file",
        )?;
        let t = &mut self.telemetry;
        resolve_secret_file(
            &mut t.otlp_headers,
            t.otlp_headers_file.as_deref(),
            "telemetry.otlp_headers_file",
        )
    }

    /// The Kafka and PostgreSQL security settings fit together and name files that exist.
    pub(crate) fn validate_security(&self) -> Result<(), SettingsError> {
        let key = |key, reason: &str| {
            Err(SettingsError::Key {
                key,
                reason: reason.to_owned(),
            })
        };
        let k = &self.kafka;
        match (k.security_protocol.uses_sasl(), k.sasl_mechanism) {
            (true, None) => {
                return key(
                    "kafka.sasl_mechanism",
                    "required with security_protocol SASL_PLAINTEXT or SASL_SSL",
                );
            }
            (false, Some(_)) => {
                return key(
                    "kafka.security_protocol",
                    "must be SASL_PLAINTEXT or SASL_SSL when kafka.sasl_mechanism is set",
                );
            }
            (true, Some(SaslMechanism::OauthBearer)) => {
                if k.oauth_token_endpoint_url.is_none() {
                    return key("kafka.oauth_token_endpoint_url", "required for OAUTHBEARER");
                }
                if k.oauth_client_id.is_none() {
                    return key("kafka.oauth_client_id", "required for OAUTHBEARER");
                }
                if k.oauth_client_secret.is_none() {
                    return key(
                        "kafka.oauth_client_secret",
                        "required for OAUTHBEARER (or kafka.oauth_client_secret_file)",
                    );
                }
            }
            (true, Some(_)) => {
                if k.sasl_username.as_deref().is_none_or(str::is_empty) {
                    return key("kafka.sasl_username", "required for PLAIN and SCRAM");
                }
                if k.sasl_password.is_none() {
                    return key(
                        "kafka.sasl_password",
                        "required for PLAIN and SCRAM (or kafka.sasl_password_file)",
                    );
                }
            }
            (false, None) => {}
        }
        if k.ssl_certificate_location.is_some() != k.ssl_key_location.is_some() {
            return key(
                "kafka.ssl_key_location",
                "a client certificate needs its key and the other way round (set both or neither)",
            );
        }
        check_file(k.ssl_ca_location.as_ref(), "kafka.ssl_ca_location")?;
        check_file(
            k.ssl_certificate_location.as_ref(),
            "kafka.ssl_certificate_location",
        )?;
        check_file(k.ssl_key_location.as_ref(), "kafka.ssl_key_location")?;
        check_file(
            self.database.ssl_root_cert.as_ref(),
            "database.ssl_root_cert",
        )?;
        if let Some(headers) = &self.telemetry.otlp_headers
            && let Err(reason) = parse_headers(headers.expose_secret())
        {
            return key("telemetry.otlp_headers", &reason);
        }
        Ok(())
    }
}

impl KafkaSettings {
    /// Plaintext access to `brokers` with the built-in defaults (tools, examples, tests).
    pub fn for_brokers(brokers: &str) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.to_owned(),
            consumer_group: "crm-sync-tools".to_owned(),
            delivery_timeout_ms: 30_000,
            session_timeout_ms: 10_000,
            transactional_id: None,
            security_protocol: SecurityProtocol::Plaintext,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            sasl_password_file: None,
            oauth_token_endpoint_url: None,
            oauth_client_id: None,
            oauth_client_secret: None,
            oauth_client_secret_file: None,
            oauth_scope: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            ssl_key_password_file: None,
            librdkafka_options: LibrdkafkaOptions::default(),
            credential_check_ms: 10_000,
        }
    }
}

/// PostgreSQL `sslmode`, as libpq names it.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PgSslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Replaces `value` with the contents of `file` when a file is configured (the file wins, so a
/// default or a value left in a config file never shadows the mounted secret). One trailing line
/// break is dropped: most ways of writing a secret file add one.
pub(crate) fn resolve_secret_file(
    value: &mut Option<SecretString>,
    file: Option<&Path>,
    file_key: &'static str,
) -> Result<(), SettingsError> {
    let Some(path) = file else { return Ok(()) };
    *value = Some(read_secret_file(path, file_key)?);
    Ok(())
}

pub(crate) fn read_secret_file(
    path: &Path,
    file_key: &'static str,
) -> Result<SecretString, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Key {
        key: file_key,
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let text = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if text.is_empty() {
        return Err(SettingsError::Key {
            key: file_key,
            reason: format!("{} is empty", path.display()),
        });
    }
    Ok(SecretString::from(text.to_owned()))
}

/// A configured file (CA bundle, certificate, key) must exist when the service starts, so a typo
/// is a configuration error rather than a connection failure much later.
pub(crate) fn check_file(path: Option<&PathBuf>, key: &'static str) -> Result<(), SettingsError> {
    match path {
        Some(path) if !path.is_file() => Err(SettingsError::Key {
            key,
            reason: format!("{} does not exist or is not a file", path.display()),
        }),
        _ => Ok(()),
    }
}

/// `key=value,key2=value2` (the `OTEL_EXPORTER_OTLP_HEADERS` format).
pub fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| "each header must be written name=value".to_owned())?;
            let name = name.trim();
            if name.is_empty() {
                return Err("a header has no name".to_owned());
            }
            Ok((name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Shows a PostgreSQL URL without its password (for logs and `Debug`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable URL>".to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => format!("{scheme}://{authority}{tail}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::settings::ServiceDefaults;

    const SVC: ServiceDefaults = ServiceDefaults {
        name: "test",
        http_port: 9999,
        consumer_group: "test-group",
    };

    fn load(env: &[(&str, &str)], file: Option<PathBuf>) -> Result<Settings, SettingsError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(SVC, file, env)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("crm-sync-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn every_secret_can_come_from_a_file_and_none_is_ever_printed() {
        let dir = temp_dir("secret-files");
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        };
        let sasl = write("sasl", "sasl-s3cret\n");
        let oauth = write("oauth", "oauth-s3cret");
        let url = write("url", "postgres://app:url-s3cret@db:5432/crm\n");
        let password = write("password", "db-s3cret\r\n");
        let key = write("key", "a2V5LXMzY3JldA==\n");
        let headers = write("headers", "api-key=otlp-s3cret");
        let s = load(
            &[
                (
                    "CRM_SYNC__KAFKA__SASL_PASSWORD",
                    "ignored-when-a-file-is-set",
                ),
                ("CRM_SYNC__KAFKA__SASL_PASSWORD_FILE", &sasl),
                ("CRM_SYNC__KAFKA__OAUTH_CLIENT_SECRET_FILE", &oauth),
                ("CRM_SYNC__DATABASE__URL_FILE", &url),
                ("CRM_SYNC__DATABASE__PASSWORD_FILE", &password),
                ("CRM_SYNC__SECRETS__ENCRYPTION_KEY_FILE", &key),
                ("CRM_SYNC__TELEMETRY__OTLP_HEADERS_FILE", &headers),
            ],
            None,
        )
        .unwrap();
        let exposed = |s: &Option<SecretString>| s.as_ref().unwrap().expose_secret().to_owned();
        assert_eq!(exposed(&s.kafka.sasl_password), "sasl-s3cret");
        assert_eq!(exposed(&s.kafka.oauth_client_secret), "oauth-s3cret");
        assert_eq!(
            s.database.url.expose_secret(),
            "postgres://app:url-s3cret@db:5432/crm"
        );
        assert_eq!(exposed(&s.database.password), "db-s3cret");
        assert_eq!(exposed(&s.secrets.encryption_key), "a2V5LXMzY3JldA==");
        assert_eq!(exposed(&s.telemetry.otlp_headers), "api-key=otlp-s3cret");
        let debug = format!("{s:?}");
        for secret in ["s3cret", "a2V5LXMzY3JldA"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("postgres://app:***@db:5432/crm"), "{debug}");
    }

    #[test]
    fn an_unreadable_or_empty_secret_file_names_its_key() {
        let err = load(
            &[("CRM_SYNC__DATABASE__PASSWORD_FILE", "/nonexistent/pw")],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("database.password_file"), "{err}");
        let empty = temp_dir("empty-secret").join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let err = load(
            &[(
                "CRM_SYNC__KAFKA__SASL_PASSWORD_FILE",
                empty.to_str().unwrap(),
            )],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kafka.sasl_password_file"), "{err}");
    }

    #[test]
    fn security_settings_must_fit_together() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("CRM_SYNC__KAFKA__SECURITY_PROTOCOL", "SASL_SSL")],
                "kafka.sasl_mechanism",
            ),
            (
                &[("CRM_SYNC__KAFKA__SASL_MECHANISM", "PLAIN")],
                "kafka.security_protocol",
            ),
            (
                &[
                    ("CRM_SYNC__KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
                    ("CRM_SYNC__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"),
                    ("CRM_SYNC__KAFKA__SASL_USERNAME", "svc"),
                ],
                "kafka.sasl_password",
            ),
            (
                &[
                    ("CRM_SYNC__KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
                    ("CRM_SYNC__KAFKA__SASL_MECHANISM", "OAUTHBEARER"),
                ],
                "kafka.oauth_token_endpoint_url",
            ),
            (
                &[("CRM_SYNC__KAFKA__SECURITY_PROTOCOL", "TLS")],
                "security_protocol",
            ),
            (
                &[("CRM_SYNC__KAFKA__SSL_CA_LOCATION", "/nonexistent/ca.pem")],
                "kafka.ssl_ca_location",
            ),
            (
                &[("CRM_SYNC__DATABASE__SSLMODE", "verify-everything")],
                "sslmode",
            ),
            (
                &[("CRM_SYNC__TELEMETRY__OTLP_HEADERS", "no-equals-sign")],
                "telemetry.otlp_headers",
            ),
        ];
        for (env, key) in cases {
            let err = load(env, None).unwrap_err().to_string();
            assert!(err.contains(key), "{env:?}: {err}");
        }
        let s = load(
            &[
                ("CRM_SYNC__KAFKA__SECURITY_PROTOCOL", "sasl_ssl"),
                ("CRM_SYNC__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"),
                ("CRM_SYNC__KAFKA__SASL_USERNAME", "svc"),
                ("CRM_SYNC__KAFKA__SASL_PASSWORD", "pw"),
                ("CRM_SYNC__DATABASE__SSLMODE", "verify-full"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(s.kafka.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s.database.sslmode, Some(PgSslMode::VerifyFull));
    }

    #[test]
    fn librdkafka_properties_keep_their_dots_in_a_config_file() {
        let file = temp_dir("librdkafka-file").join("c.toml");
        std::fs::write(
            &file,
            "[kafka.librdkafka_options.producer]\n\"batch.num.messages\" = \"5000\"\n",
        )
        .unwrap();
        let s = load(&[], Some(file)).unwrap();
        assert_eq!(
            s.kafka
                .librdkafka_options
                .producer
                .get("batch.num.messages")
                .map(String::as_str),
            Some("5000"),
            "{:?}",
            s.kafka.librdkafka_options
        );
    }

    #[test]
    fn urls_lose_their_password_only() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/crm?sslmode=verify-full"),
            "postgres://app:***@db:5432/crm?sslmode=verify-full"
        );
        assert_eq!(redact_url("postgres://db/crm"), "postgres://db/crm");
        assert_eq!(redact_url("postgres://app@db/crm"), "postgres://app@db/crm");
    }

    #[test]
    fn headers_parse_as_otel_writes_them() {
        assert_eq!(
            parse_headers("api-key=abc, x-team = t1").unwrap(),
            vec![
                ("api-key".to_owned(), "abc".to_owned()),
                ("x-team".to_owned(), "t1".to_owned())
            ]
        );
        assert!(parse_headers("nonsense").is_err());
    }
}
