use super::*;

const SVC: ServiceDefaults = ServiceDefaults {
    name: "test",
    http_port: 9999,
    consumer_group: "test-group",
};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_apply_without_any_source() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.http.port, 9999);
    assert_eq!(s.kafka.consumer_group, "test-group");
    assert_eq!(s.topics.events, "crm.events.v1");
    assert_eq!(s.telemetry.log_format, LogFormat::Auto);
    assert!(s.telemetry.otlp_endpoint.is_none());
}

#[test]
fn environment_overrides_file_overrides_defaults() {
    let dir = std::env::temp_dir().join(format!("crm-sync-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(
        &file,
        "[kafka]\nbrokers = \"file:9092\"\n[http]\nport = 7000\n",
    )
    .unwrap();
    let s = Settings::load_from(
        SVC,
        Some(file),
        env(&[
            ("CRM_SYNC__HTTP__PORT", "7100"),
            ("CRM_SYNC__TOPICS__EVENTS", "t.events"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(s.kafka.brokers, "file:9092");
    assert_eq!(s.http.port, 7100);
    assert_eq!(s.topics.events, "t.events");
}

#[test]
fn a_bad_value_names_its_key() {
    let err = Settings::load_from(SVC, None, env(&[("CRM_SYNC__HTTP__PORT", "eighty")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("http.port"), "{err}");
    let err = Settings::load_from(SVC, None, env(&[("CRM_SYNC__DATABASE__URL", "mysql://x")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("database.url"), "{err}");
}

#[test]
fn an_unknown_key_is_refused() {
    let err = Settings::load_from(SVC, None, env(&[("CRM_SYNC__KAFKA__BROKRS", "x:1")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("brokrs"), "{err}");
}

#[test]
fn a_refused_key_is_told_once_with_the_error_chain() {
    let err =
        Settings::load_from(SVC, None, env(&[("CRM_SYNC__KAFKA__BROKRS", "x:1")])).unwrap_err();
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert_eq!(
        chain.matches("unknown field `brokrs`").count(),
        1,
        "{chain}"
    );
}

#[test]
fn the_encryption_key_is_optional_and_never_printed() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert!(s.secrets.encryption_key.is_none());
    let s = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__SECRETS__ENCRYPTION_KEY", "c2VjcmV0LWtleQ==")]),
    )
    .unwrap();
    assert_eq!(
        s.secrets.encryption_key.as_ref().map(|k| k.expose_secret()),
        Some("c2VjcmV0LWtleQ==")
    );
    assert!(!format!("{s:?}").contains("c2VjcmV0LWtleQ"));
    assert_eq!(s.ingest.rate_limit_per_second, 200);
    assert_eq!(s.directory.timeout_ms, 2_000);
}

#[test]
fn the_directory_deadline_defaults_to_five_seconds_and_must_be_positive() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.directory.inline_deadline_ms, 5_000);
    let err = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__DIRECTORY__INLINE_DEADLINE_MS", "0")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("directory.inline_deadline_ms"), "{err}");
}

#[test]
fn the_transactional_id_is_optional_and_configurable() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.kafka.transactional_id, None);
    let s = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__KAFKA__TRANSACTIONAL_ID", "evaluator-0")]),
    )
    .unwrap();
    assert_eq!(s.kafka.transactional_id.as_deref(), Some("evaluator-0"));
    let err = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__KAFKA__TRANSACTIONAL_ID", " ")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("kafka.transactional_id"), "{err}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let err = Settings::load_from(SVC, Some("/nonexistent/crm.toml".into()), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/crm.toml"), "{err}");
}

#[test]
fn the_pull_section_has_defaults_and_names_bad_keys() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert!(s.pull.enabled);
    assert_eq!(s.pull.reconcile_interval_secs, 900);
    assert_eq!(s.pull.backfill_on_connect_days, 30);
    assert_eq!(s.pull.max_evaluator_lag, 400);
    assert_eq!(s.pull.evaluator_group, "crm-sync-workflow-evaluator");
    let s = Settings::load_from(
        SVC,
        None,
        env(&[
            ("CRM_SYNC__PULL__ENABLED", "false"),
            ("CRM_SYNC__PULL__SALESFORCE_MAX_API_SHARE", "0.25"),
        ]),
    )
    .unwrap();
    assert!(!s.pull.enabled);
    assert_eq!(s.pull.salesforce_max_api_share, 0.25);
    assert_eq!(s.pull.lease_secs, 60, "the other keys keep their defaults");
    let err = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__PULL__SALESFORCE_MAX_API_SHARE", "2")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pull.salesforce_max_api_share"), "{err}");
}

#[test]
fn the_record_store_memory_defaults_to_its_minimum_and_less_is_refused_naming_the_key() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.evaluator.state_memory_mib, 8);
    assert_eq!(s.provisioner.concurrent_batches, 2);
    let err = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__EVALUATOR__STATE_MEMORY_MIB", "4")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("evaluator.state_memory_mib"), "{err}");
}

#[test]
fn the_evaluator_keeps_two_transactions_in_flight_and_none_is_refused_naming_the_key() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.evaluator.transactional_producers, 2);
    refused_naming_the_key("evaluator.transactional_producers", &["0", "5"]);
}

/// Each of `values` for `key` (set through its environment variable) is refused, the error
/// naming the key.
fn refused_naming_the_key(key: &str, values: &[&str]) {
    let var = format!("CRM_SYNC__{}", key.replace('.', "__").to_uppercase());
    for wrong in values {
        let err = Settings::load_from(SVC, None, env(&[(var.as_str(), wrong)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{wrong}: {err}");
    }
}

#[test]
fn the_evaluator_commits_up_to_250_events_at_once_and_a_size_out_of_range_names_the_key() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.evaluator.batch_max_events, 250);
    let larger = env(&[("CRM_SYNC__EVALUATOR__BATCH_MAX_EVENTS", "500")]);
    let s = Settings::load_from(SVC, None, larger).unwrap();
    assert_eq!(s.evaluator.batch_max_events, 500);
    refused_naming_the_key("evaluator.batch_max_events", &["0", "2001"]);
}

#[test]
fn deleted_integrations_are_forgotten_every_ten_minutes_unless_configured() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.evaluator.purge_interval_secs, 600);
    refused_naming_the_key("evaluator.purge_interval_secs", &["0"]);
}

#[test]
fn services_keep_two_database_connections_and_more_than_the_pool_is_refused_naming_the_key() {
    let s = Settings::load_from(SVC, None, env(&[])).unwrap();
    assert_eq!(s.database.min_connections, 2);
    let err = Settings::load_from(
        SVC,
        None,
        env(&[
            ("CRM_SYNC__DATABASE__MAX_CONNECTIONS", "3"),
            ("CRM_SYNC__DATABASE__MIN_CONNECTIONS", "4"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("database.min_connections"), "{err}");
}

#[test]
fn the_provisioner_section_is_optional_and_refuses_unknown_keys() {
    let s = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__PROVISIONER__CONCURRENT_BATCHES", "0")]),
    )
    .unwrap();
    assert_eq!(s.provisioner.concurrent_batches, 0, "0: no limit");
    let err = Settings::load_from(
        SVC,
        None,
        env(&[("CRM_SYNC__PROVISIONER__CONCURRENT_BATCHS", "1")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("concurrent_batchs"), "{err}");
}
