//! The pipeline on production-like infrastructure: Kafka over SASL_SSL with SCRAM-SHA-512 and over
//! mutual TLS, PostgreSQL with `sslmode=verify-full`, every secret read from a file. The local
//! stack (`deploy/local/stack.sh up`) starts those listeners and writes where they are to
//! `$CRM_SYNC_HOME/secure.env`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crm_sync_e2e::app::{App, AppOptions, spawn_app};
use crm_sync_e2e::salesforce::{outbound_message, won_opportunity};
use crm_sync_e2e::{Service, Tenant, TestEnv, eventually, post_outbound_message};
use crm_sync_store::views;

const WAIT: Duration = Duration::from_secs(90);

mod oauth;
mod otlp;

/// What `stack.sh up` wrote about the secure listeners and certificates.
struct Secure(HashMap<String, String>);

impl Secure {
    /// `CRM_SYNC_TEST_SECURE_ENV` points at another stack's file (a second local stack).
    fn load() -> Secure {
        let file = std::env::var("CRM_SYNC_TEST_SECURE_ENV")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                let home = std::env::var("CRM_SYNC_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| {
                        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/crm-sync")
                    });
                home.join("secure.env")
            });
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{} (written by `deploy/local/stack.sh up`): {e}",
                file.display()
            )
        });
        Secure(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from secure.env"))
    }

    fn secret(&self, key: &str) -> String {
        std::fs::read_to_string(self.get(key))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// PostgreSQL as its own role, password from a file, server certificate checked.
    fn database_env(&self, env: &TestEnv) -> Vec<(String, String)> {
        let db = env.database_url.rsplit('/').next().unwrap();
        vec![
            (
                "CRM_SYNC__DATABASE__URL".into(),
                format!(
                    "postgres://{}@127.0.0.1:5432/{db}",
                    self.get("CRM_SYNC_TEST_PG_TLS_USER")
                ),
            ),
            (
                "CRM_SYNC__DATABASE__PASSWORD_FILE".into(),
                self.get("CRM_SYNC_TEST_PG_TLS_PASSWORD_FILE").into(),
            ),
            ("CRM_SYNC__DATABASE__SSLMODE".into(), "verify-full".into()),
            (
                "CRM_SYNC__DATABASE__SSL_ROOT_CERT".into(),
                self.get("CRM_SYNC_TEST_CA").into(),
            ),
        ]
    }

    fn scram_env(&self, user: &str, password_file: &str, ca: &str) -> Vec<(String, String)> {
        vec![
            (
                "CRM_SYNC__KAFKA__BROKERS".into(),
                self.get("CRM_SYNC_TEST_SASL_SSL_BROKERS").into(),
            ),
            (
                "CRM_SYNC__KAFKA__SECURITY_PROTOCOL".into(),
                "SASL_SSL".into(),
            ),
            (
                "CRM_SYNC__KAFKA__SASL_MECHANISM".into(),
                "SCRAM-SHA-512".into(),
            ),
            ("CRM_SYNC__KAFKA__SASL_USERNAME".into(), user.into()),
            (
                "CRM_SYNC__KAFKA__SASL_PASSWORD_FILE".into(),
                password_file.into(),
            ),
            ("CRM_SYNC__KAFKA__SSL_CA_LOCATION".into(), ca.into()),
        ]
    }

    fn mtls_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "CRM_SYNC__KAFKA__BROKERS".into(),
                self.get("CRM_SYNC_TEST_MTLS_BROKERS").into(),
            ),
            ("CRM_SYNC__KAFKA__SECURITY_PROTOCOL".into(), "SSL".into()),
            (
                "CRM_SYNC__KAFKA__SSL_CA_LOCATION".into(),
                self.get("CRM_SYNC_TEST_CA").into(),
            ),
            (
                "CRM_SYNC__KAFKA__SSL_CERTIFICATE_LOCATION".into(),
                self.get("CRM_SYNC_TEST_CLIENT_CERT").into(),
            ),
            (
                "CRM_SYNC__KAFKA__SSL_KEY_LOCATION".into(),
                self.get("CRM_SYNC_TEST_CLIENT_KEY").into(),
            ),
        ]
    }
}

fn borrowed(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Ingest, evaluator and provisioner with `extra` on top of the test's environment; a webhook
/// must come out as an activity.
async fn run_pipeline(env: &TestEnv, extra: &[(String, String)]) -> Vec<Service> {
    let tenant = Tenant::create(&env.pool, "secure", true, true).await;
    let extra = borrowed(extra);
    let options = AppOptions {
        ingest_env: &extra,
        evaluator_env: &extra,
        provisioner_env: &extra,
        ..AppOptions::default()
    };
    let App {
        ingest,
        evaluator,
        provisioner,
        ..
    } = spawn_app(env, options).await;
    let message = outbound_message(
        &tenant.organization_id,
        &[won_opportunity(
            "04l000000000001AAA",
            "006000000000001AAA",
            "005OWNER0000001",
            "1250.50",
        )],
    );
    let (status, body) = post_outbound_message(&ingest, &tenant, message).await;
    assert_eq!(status, 200, "{body}");
    let activities = eventually("the activity", WAIT, || async {
        let a = views::activities(&env.pool, tenant.company_id)
            .await
            .unwrap();
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(activities[0].value.to_string(), "1250.50");
    vec![ingest, evaluator, provisioner]
}

/// Every connection the services hold to the test's database is encrypted. Asked as the services'
/// role (over verify-full too): PostgreSQL shows a role's connections in detail only to itself.
async fn assert_database_connections_use_tls(env: &TestEnv, secure: &Secure) {
    use sqlx::ConnectOptions as _;
    use sqlx::postgres::{PgConnectOptions, PgSslMode};
    let db = env.database_url.rsplit('/').next().unwrap().to_owned();
    let user = secure.get("CRM_SYNC_TEST_PG_TLS_USER");
    let mut conn = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(5432)
        .username(user)
        .password(&secure.secret("CRM_SYNC_TEST_PG_TLS_PASSWORD_FILE"))
        .database(&db)
        .ssl_mode(PgSslMode::VerifyFull)
        .ssl_root_cert(secure.get("CRM_SYNC_TEST_CA"))
        .connect()
        .await
        .unwrap();
    let rows: Vec<(Option<bool>,)> = sqlx::query_as(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
         WHERE a.datname = $1 AND a.usename = $2 AND a.pid <> pg_backend_pid()",
    )
    .bind(&db)
    .bind(user)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        !rows.is_empty(),
        "the services hold no connection as {user}"
    );
    assert!(rows.iter().all(|(ssl,)| *ssl == Some(true)), "{rows:?}");
}

#[tokio::test]
async fn the_pipeline_runs_over_sasl_ssl_scram_and_postgres_verify_full_without_logging_secrets() {
    let secure = Secure::load();
    let env = TestEnv::new("secure-scram").await;
    let mut extra = secure.scram_env(
        secure.get("CRM_SYNC_TEST_SCRAM_USER"),
        secure.get("CRM_SYNC_TEST_SCRAM_PASSWORD_FILE"),
        secure.get("CRM_SYNC_TEST_CA"),
    );
    extra.extend(secure.database_env(&env));
    let services = run_pipeline(&env, &extra).await;
    assert_database_connections_use_tls(&env, &secure).await;

    // No secret in any log line (the services log at debug level for crm-sync here).
    let secrets = [
        secure.secret("CRM_SYNC_TEST_SCRAM_PASSWORD_FILE"),
        secure.secret("CRM_SYNC_TEST_PG_TLS_PASSWORD_FILE"),
    ];
    for service in services {
        let log = std::fs::read_to_string(&service.log_file).unwrap();
        assert!(!log.is_empty());
        for secret in &secrets {
            assert!(
                !log.contains(secret.as_str()),
                "{} logged a password",
                service.name
            );
        }
    }
}

#[tokio::test]
async fn the_pipeline_runs_over_mutual_tls() {
    let secure = Secure::load();
    let env = TestEnv::new("secure-mtls").await;
    let mut extra = secure.mtls_env();
    extra.extend(secure.database_env(&env));
    run_pipeline(&env, &extra).await;
}

async fn readyz(service: &Service) -> (u16, String) {
    match reqwest::get(service.url("/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Adds (or changes) a SCRAM user on the broker, as an operator fixing a credential would.
fn set_scram_user(secure: &Secure, user: &str, password: &str) {
    let status = std::process::Command::new("java")
        .args(["-Xmx256m", "-cp"])
        .arg(format!("{}/*", secure.get("CRM_SYNC_TEST_KAFKA_LIBS")))
        .args([
            "kafka.admin.ConfigCommand",
            "--bootstrap-server",
            secure.get("CRM_SYNC_TEST_PLAINTEXT_BROKERS"),
            "--alter",
            "--entity-type",
            "users",
            "--entity-name",
            user,
            "--add-config",
            &format!("SCRAM-SHA-512=[password={password}]"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "kafka-configs could not set user {user}");
}

#[tokio::test]
async fn a_wrong_password_makes_readyz_say_so_once_per_window_and_recovers_when_fixed() {
    let secure = Secure::load();
    let env = TestEnv::new("secure-wrong-password").await;
    // A user the broker does not know yet: its password is wrong until the operator adds it.
    let user = format!("late_{}", env.id);
    let password = uuid::Uuid::new_v4().simple().to_string();
    let password_file = env.log_dir.join("kafka-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let mut extra = secure.scram_env(
        &user,
        password_file.to_str().unwrap(),
        secure.get("CRM_SYNC_TEST_CA"),
    );
    extra.extend(secure.database_env(&env));
    let provisioner = env.spawn_service("provisioner", "provisioner", &borrowed(&extra));

    let body = eventually("readyz to name the failure", WAIT, || async {
        let (status, body) = readyz(&provisioner).await;
        (status == 503 && body.contains("kafka: SASL authentication failed")).then_some(body)
    })
    .await;
    assert!(!body.contains(&password), "{body}");
    // librdkafka retries every few seconds; the log says it once per window, not per retry.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let log = std::fs::read_to_string(&provisioner.log_file).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("SASL authentication failed"))
        .count();
    assert!(lines <= 2, "{lines} lines for one failure:\n{log}");
    assert!(!log.contains(&password), "the password was logged");

    set_scram_user(&secure, &user, &password);
    eventually("readyz to recover", WAIT, || async {
        (readyz(&provisioner).await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_broker_certificate_makes_readyz_say_so_and_a_fixed_ca_file_is_picked_up() {
    let secure = Secure::load();
    let env = TestEnv::new("secure-untrusted-ca").await;
    // The operator mounted the wrong CA; the file is corrected in place later (a Secret update).
    let ca_file = env.log_dir.join("kafka-ca.pem");
    std::fs::copy(secure.get("CRM_SYNC_TEST_UNTRUSTED_CA"), &ca_file).unwrap();
    let mut extra = secure.scram_env(
        secure.get("CRM_SYNC_TEST_SCRAM_USER"),
        secure.get("CRM_SYNC_TEST_SCRAM_PASSWORD_FILE"),
        ca_file.to_str().unwrap(),
    );
    extra.extend(secure.database_env(&env));
    extra.push(("CRM_SYNC__KAFKA__CREDENTIAL_CHECK_MS".into(), "500".into()));
    let mut provisioner = env.spawn_service("provisioner", "provisioner", &borrowed(&extra));
    eventually("readyz to name the failure", WAIT, || async {
        let (status, body) = readyz(&provisioner).await;
        (status == 503 && body.contains("kafka: TLS: the broker's certificate is not trusted"))
            .then_some(())
    })
    .await;

    // librdkafka loaded the CA when it made its clients: the service restarts to load the new
    // one, draining and exiting as on SIGTERM, and says why.
    std::fs::copy(secure.get("CRM_SYNC_TEST_CA"), &ca_file).unwrap();
    let status = eventually("the provisioner to stop for the new CA", WAIT, || {
        let status = provisioner.exited();
        async move { status }
    })
    .await;
    assert!(status.success(), "{status}: {}", provisioner.log_tail());
    let log = std::fs::read_to_string(&provisioner.log_file).unwrap();
    assert!(
        log.contains("Kafka credential files changed") && log.contains("kafka-ca.pem"),
        "{log}"
    );
    // What the orchestrator does next: start it again, with the same configuration.
    let restarted = env.spawn_service("provisioner", "provisioner-restarted", &borrowed(&extra));
    eventually("readyz to recover", WAIT, || async {
        (readyz(&restarted).await.0 == 200).then_some(())
    })
    .await;
}
