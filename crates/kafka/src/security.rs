//! The one place a Kafka client's configuration starts: bootstrap servers, how the client
//! authenticates (TLS, SASL, OAUTHBEARER/OIDC) and the operator's librdkafka pass-through for the
//! client's role. Every producer, consumer, admin client, the CLI and the test kit begin here.

use std::collections::BTreeMap;

use crm_sync_runtime::settings::{KafkaSettings, SaslMechanism, SettingsError};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use secrecy::ExposeSecret;

/// What a client does, which decides the pass-through section applied on top of `common`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Producers, including transactional ones.
    Producer,
    /// Consumers, including transactional ones and the CLI's readers.
    Consumer,
    /// Admin clients and metadata checks (`/readyz`, topic creation).
    Admin,
}

impl Role {
    const ALL: [Role; 3] = [Role::Producer, Role::Consumer, Role::Admin];

    fn section(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::Admin => "admin",
        }
    }

    fn options(self, settings: &KafkaSettings) -> &BTreeMap<String, String> {
        let options = &settings.librdkafka_options;
        match self {
            Role::Producer => &options.producer,
            Role::Consumer => &options.consumer,
            Role::Admin => &options.admin,
        }
    }

    /// Properties crm-sync sets itself for this role (its delivery guarantees or its own
    /// configuration keys depend on them), so the pass-through may not change them.
    fn reserved(self) -> &'static [&'static str] {
        match self {
            Role::Producer => &[
                "enable.idempotence",
                "acks",
                "request.required.acks",
                "transactional.id",
                "transaction.timeout.ms",
                "delivery.timeout.ms",
                "message.timeout.ms",
                "linger.ms",
                "queue.buffering.max.ms",
                "compression.type",
            ],
            Role::Consumer => &[
                "group.id",
                "enable.auto.commit",
                "auto.commit.interval.ms",
                "enable.auto.offset.store",
                "auto.offset.reset",
                "isolation.level",
                "session.timeout.ms",
                "enable.partition.eof",
                "statistics.interval.ms",
                "partition.assignment.strategy",
            ],
            Role::Admin => &[],
        }
    }
}

/// Set from `kafka.*` keys of their own (secrets among them), never through the pass-through.
const SECURITY_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("client.id", "kafka.consumer_group"),
    ("security.protocol", "kafka.security_protocol"),
    ("sasl.mechanism", "kafka.sasl_mechanism"),
    ("sasl.mechanisms", "kafka.sasl_mechanism"),
    ("sasl.username", "kafka.sasl_username"),
    ("sasl.password", "kafka.sasl_password"),
    ("sasl.oauthbearer.method", "kafka.sasl_mechanism"),
    (
        "sasl.oauthbearer.token.endpoint.url",
        "kafka.oauth_token_endpoint_url",
    ),
    ("sasl.oauthbearer.client.id", "kafka.oauth_client_id"),
    (
        "sasl.oauthbearer.client.secret",
        "kafka.oauth_client_secret",
    ),
    ("sasl.oauthbearer.scope", "kafka.oauth_scope"),
    ("ssl.ca.location", "kafka.ssl_ca_location"),
    ("ssl.certificate.location", "kafka.ssl_certificate_location"),
    ("ssl.key.location", "kafka.ssl_key_location"),
    ("ssl.key.password", "kafka.ssl_key_password"),
];

/// Environment variables cannot hold dots, so `socket_keepalive_enable` means
/// `socket.keepalive.enable` (librdkafka's property names have no underscores).
fn property_name(key: &str) -> String {
    key.replace('_', ".")
}

/// The start of every client's configuration for `role`. Properties the caller sets afterwards
/// (its guarantees) are the reserved ones, which [`validate`] keeps out of the pass-through.
pub fn base_config(settings: &KafkaSettings, role: Role) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &settings.brokers).set(
        "security.protocol",
        settings.security_protocol.as_librdkafka(),
    );
    if let Some(mechanism) = settings.sasl_mechanism {
        config.set("sasl.mechanism", mechanism.as_librdkafka());
        if mechanism == SaslMechanism::OauthBearer {
            // librdkafka fetches and refreshes the token itself (client credentials grant).
            config.set("sasl.oauthbearer.method", "oidc");
        }
    }
    let optional = [
        ("sasl.username", settings.sasl_username.as_deref()),
        (
            "sasl.password",
            settings.sasl_password.as_ref().map(|s| s.expose_secret()),
        ),
        (
            "sasl.oauthbearer.token.endpoint.url",
            settings.oauth_token_endpoint_url.as_deref(),
        ),
        (
            "sasl.oauthbearer.client.id",
            settings.oauth_client_id.as_deref(),
        ),
        (
            "sasl.oauthbearer.client.secret",
            settings
                .oauth_client_secret
                .as_ref()
                .map(|s| s.expose_secret()),
        ),
        ("sasl.oauthbearer.scope", settings.oauth_scope.as_deref()),
        (
            "ssl.key.password",
            settings
                .ssl_key_password
                .as_ref()
                .map(|s| s.expose_secret()),
        ),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            config.set(key, value);
        }
    }
    let files = [
        ("ssl.ca.location", &settings.ssl_ca_location),
        (
            "ssl.certificate.location",
            &settings.ssl_certificate_location,
        ),
        ("ssl.key.location", &settings.ssl_key_location),
    ];
    for (key, path) in files {
        if let Some(path) = path {
            config.set(key, path.to_string_lossy());
        }
    }
    let common = &settings.librdkafka_options.common;
    for (key, value) in common.iter().chain(role.options(settings)) {
        config.set(property_name(key), value);
    }
    config
}

/// Checks the pass-through at start-up, so that a typo or a bad value is a configuration error
/// naming its key (`kafka.librdkafka_options.producer.linger_ms`) instead of a client that fails
/// later: unknown properties, invalid values and properties crm-sync sets itself are refused.
pub fn validate(settings: &KafkaSettings) -> Result<(), SettingsError> {
    let named = |section: &str, key: &str, reason: String| SettingsError::Named {
        key: format!("kafka.librdkafka_options.{section}.{key}"),
        reason,
    };
    let options = &settings.librdkafka_options;
    for role in Role::ALL {
        let sections = [
            ("common", &options.common),
            (role.section(), role.options(settings)),
        ];
        for (section, map) in sections {
            for key in map.keys() {
                let property = property_name(key);
                if let Some((_, own)) = SECURITY_KEYS.iter().find(|(p, _)| *p == property) {
                    return Err(named(section, key, format!("set it with `{own}` instead")));
                }
                if role.reserved().contains(&property.as_str()) {
                    return Err(named(
                        section,
                        key,
                        format!(
                            "crm-sync sets `{property}` itself for {} clients",
                            role.section()
                        ),
                    ));
                }
            }
        }
        match base_config(settings, role).create_native_config() {
            Ok(_) => {}
            Err(KafkaError::ClientConfig(_, description, property, _)) => {
                let section = [role.section(), "common"].into_iter().find(|s| {
                    let map = if *s == "common" {
                        &options.common
                    } else {
                        role.options(settings)
                    };
                    map.keys().any(|k| property_name(k) == property)
                });
                return Err(match section {
                    Some(section) => named(section, &property, description),
                    None => SettingsError::Named {
                        key: format!("kafka (librdkafka property {property})"),
                        reason: description,
                    },
                });
            }
            Err(other) => {
                return Err(SettingsError::Named {
                    key: "kafka".to_owned(),
                    reason: other.to_string(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crm_sync_runtime::settings::{ServiceDefaults, Settings};

    fn settings(env: &[(&str, &str)]) -> KafkaSettings {
        let defaults = ServiceDefaults {
            name: "t",
            http_port: 1,
            consumer_group: "g",
        };
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Settings::load_from(defaults, None, env).unwrap().kafka
    }

    #[test]
    fn scram_over_tls_reaches_every_role() {
        let s = settings(&[
            ("CRM_SYNC__KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
            ("CRM_SYNC__KAFKA__SASL_MECHANISM", "SCRAM-SHA-512"),
            ("CRM_SYNC__KAFKA__SASL_USERNAME", "svc"),
            ("CRM_SYNC__KAFKA__SASL_PASSWORD", "pw"),
        ]);
        for role in Role::ALL {
            let config = base_config(&s, role);
            assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
            assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
            assert_eq!(config.get("sasl.username"), Some("svc"));
        }
        validate(&s).unwrap();
        assert!(!format!("{s:?}").contains("\"pw\""), "{s:?}");
    }

    #[test]
    fn pass_through_applies_per_role_and_accepts_underscores() {
        let s = settings(&[
            (
                "CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__COMMON__SOCKET_KEEPALIVE_ENABLE",
                "true",
            ),
            (
                "CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__PRODUCER__BATCH_NUM_MESSAGES",
                "5000",
            ),
        ]);
        validate(&s).unwrap();
        let producer = base_config(&s, Role::Producer);
        assert_eq!(producer.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(producer.get("batch.num.messages"), Some("5000"));
        let consumer = base_config(&s, Role::Consumer);
        assert_eq!(consumer.get("socket.keepalive.enable"), Some("true"));
        assert_eq!(consumer.get("batch.num.messages"), None);
    }

    #[test]
    fn unknown_invalid_and_reserved_properties_name_their_key() {
        let cases = [
            (
                "CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__PRODUCER__NO_SUCH_THING",
                "1",
                "kafka.librdkafka_options.producer.no.such.thing",
            ),
            (
                "CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__CONSUMER__FETCH_WAIT_MAX_MS",
                "soon",
                "kafka.librdkafka_options.consumer.fetch.wait.max.ms",
            ),
            (
                "CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__PRODUCER__ACKS",
                "1",
                "kafka.librdkafka_options.producer.acks",
            ),
            (
                "CRM_SYNC__KAFKA__LIBRDKAFKA_OPTIONS__COMMON__SASL_PASSWORD",
                "x",
                "kafka.librdkafka_options.common.sasl_password",
            ),
        ];
        for (var, value, key) in cases {
            let err = validate(&settings(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{var}: {err}");
        }
    }
}
