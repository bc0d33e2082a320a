//! The test kit: every test gets its own database (migrated) and its own topics, and runs the
//! services as real processes against the local stack (`deploy/local/stack.sh up`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod events;
pub mod fake_crm;
pub mod proxy;
pub mod pull_jobs;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crm_sync_kafka::clients::{Role, base_config};
use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::process::{Child, Command};

pub fn brokers() -> String {
    std::env::var("CRM_SYNC_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// How the kit's own clients reach Kafka (through the same configuration path as the services).
pub fn kafka_settings() -> KafkaSettings {
    KafkaSettings::for_brokers(&brokers())
}

/// A database the test role can CREATE DATABASE from.
pub fn admin_database_url() -> String {
    std::env::var("CRM_SYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://crm_sync:crm_sync@127.0.0.1:5432/crm_sync".into())
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub events: String,
    pub matches: String,
    pub activities: String,
    pub users: String,
    pub records: String,
    pub hydrations: String,
}

impl Topics {
    pub fn all(&self) -> Vec<String> {
        vec![
            self.events.clone(),
            format!("{}.dlq", self.events),
            self.matches.clone(),
            format!("{}.dlq", self.matches),
            self.activities.clone(),
            self.users.clone(),
            self.records.clone(),
            self.hydrations.clone(),
        ]
    }
}

/// One test's isolated world.
pub struct TestEnv {
    pub id: String,
    pub database_url: String,
    pub pool: PgPool,
    pub topics: Topics,
    pub brokers: String,
    pub log_dir: PathBuf,
}

pub const PARTITIONS: i32 = 6;

impl TestEnv {
    pub async fn new(name: &str) -> TestEnv {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let id = format!("{secs}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&admin_database_url())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "connecting to {} (is `deploy/local/stack.sh up` running?): {e}",
                    admin_database_url()
                )
            });
        drop_stale_databases(&admin, secs).await;
        let db = format!("crm_sync_test_{id}");
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        let database_url = replace_db(&admin_database_url(), &db);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect(&database_url)
            .await
            .unwrap();
        crm_sync_store::migrate(&pool).await.unwrap();

        let prefix = format!("t{id}");
        let topics = Topics {
            events: format!("{prefix}.crm.events.v1"),
            matches: format!("{prefix}.crm.matches.v1"),
            activities: format!("{prefix}.salesscreen.activities.v1"),
            users: format!("{prefix}.salesscreen.users.v1"),
            records: format!("{prefix}.crm.records.v1"),
            hydrations: format!("{prefix}.crm.hydrations.v1"),
        };
        delete_stale_topics(secs).await;
        crm_sync_kafka::admin::ensure_topics(&kafka_settings(), &topics.all(), PARTITIONS)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "creating test topics (is Kafka up at {}?): {e:#}",
                    brokers()
                )
            });
        let all = topics.all();
        tokio::task::spawn_blocking(move || wait_for_topics(&all))
            .await
            .unwrap();

        let log_dir = target_dir().join("e2e-logs").join(format!("{name}-{id}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        TestEnv {
            id,
            database_url,
            pool,
            topics,
            brokers: brokers(),
            log_dir,
        }
    }

    /// Environment for a service process pointed at this test's database and topics.
    pub fn service_env(&self, http_port: u16) -> Vec<(String, String)> {
        vec![
            ("CRM_SYNC__KAFKA__BROKERS".into(), self.brokers.clone()),
            ("CRM_SYNC__DATABASE__URL".into(), self.database_url.clone()),
            (
                "CRM_SYNC__TOPICS__EVENTS".into(),
                self.topics.events.clone(),
            ),
            (
                "CRM_SYNC__TOPICS__MATCHES".into(),
                self.topics.matches.clone(),
            ),
            (
                "CRM_SYNC__TOPICS__ACTIVITIES".into(),
                self.topics.activities.clone(),
            ),
            ("CRM_SYNC__TOPICS__USERS".into(), self.topics.users.clone()),
            (
                "CRM_SYNC__TOPICS__RECORDS".into(),
                self.topics.records.clone(),
            ),
            (
                "CRM_SYNC__TOPICS__HYDRATIONS".into(),
                self.topics.hydrations.clone(),
            ),
            // One local record store per replica (a replica restarted on its port keeps it).
            (
                "CRM_SYNC__EVALUATOR__STATE_DIR".into(),
                self.log_dir
                    .join(format!("state-{http_port}"))
                    .display()
                    .to_string(),
            ),
            ("CRM_SYNC__HTTP__HOST".into(), "127.0.0.1".into()),
            ("CRM_SYNC__HTTP__PORT".into(), http_port.to_string()),
            ("CRM_SYNC__TELEMETRY__LOG_FORMAT".into(), "json".into()),
            (
                "CRM_SYNC__TELEMETRY__LOG_LEVEL".into(),
                "info,crm_sync=debug".into(),
            ),
            ("CRM_SYNC__SHUTDOWN__GRACE_PERIOD_SECS".into(), "10".into()),
            // The fake CRMs of the kit listen on 127.0.0.1 over plain http: the explicit test
            // setting of the outbound policy, and an allowlist entry for the address.
            (
                "CRM_SYNC__DIRECTORY__ALLOW_INSECURE_HTTP".into(),
                "true".into(),
            ),
            (
                "CRM_SYNC__DIRECTORY__ALLOWED_HOSTS".into(),
                "127.0.0.1".into(),
            ),
        ]
    }

    /// Starts a service binary (`ingest`, `workflow-evaluator`, `provisioner`) and waits until its
    /// `/readyz` answers 200. `label` distinguishes replicas in log file names.
    pub async fn start_service(
        &self,
        binary: &str,
        label: &str,
        extra_env: &[(&str, &str)],
    ) -> Service {
        self.start_service_on_port(binary, label, free_port(), extra_env)
            .await
    }

    /// Like [`TestEnv::start_service`] on a given port (a restarted replica keeps its address).
    pub async fn start_service_on_port(
        &self,
        binary: &str,
        label: &str,
        port: u16,
        extra_env: &[(&str, &str)],
    ) -> Service {
        let (env, ops_port) = self.process_env(binary, port, extra_env);
        Service::start(binary, label, &env, port, ops_port, &self.log_dir).await
    }

    /// Starts a service without waiting for it to be ready (for tests of why it is not).
    pub fn spawn_service(&self, binary: &str, label: &str, extra_env: &[(&str, &str)]) -> Service {
        let port = free_port();
        let (env, ops_port) = self.process_env(binary, port, extra_env);
        Service::spawn(binary, label, &env, port, ops_port, &self.log_dir)
    }

    /// A service process's environment, and the port of its ops endpoints.
    fn process_env(
        &self,
        binary: &str,
        port: u16,
        extra_env: &[(&str, &str)],
    ) -> (Vec<(String, String)>, u16) {
        let mut env = self.service_env(port);
        env.push((
            "CRM_SYNC__KAFKA__CONSUMER_GROUP".into(),
            format!("{}-{binary}", self.id),
        ));
        // ingest and admin-api serve the ops endpoints on a port of their own; the consumers
        // serve nothing else, on `http.port`.
        let ops_port = if SEPARATE_OPS_PORT.contains(&binary) {
            let ops_port = free_port();
            env.push(("CRM_SYNC__HTTP__OPS_PORT".into(), ops_port.to_string()));
            ops_port
        } else {
            port
        };
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        (env, ops_port)
    }
}

/// The services whose `/healthz`, `/readyz` and `/metrics` are not on their API port.
pub const SEPARATE_OPS_PORT: [&str; 2] = ["ingest", "admin-api"];

/// A running service process, killed when dropped.
pub struct Service {
    pub name: String,
    pub port: u16,
    /// Where its `/healthz`, `/readyz` and `/metrics` are (`port` for the consumers).
    pub ops_port: u16,
    pub log_file: PathBuf,
    child: Child,
}

impl Service {
    pub async fn start(
        binary: &str,
        label: &str,
        env: &[(String, String)],
        port: u16,
        ops_port: u16,
        log_dir: &Path,
    ) -> Service {
        let mut service = Service::spawn(binary, label, env, port, ops_port, log_dir);
        service.wait_ready(Duration::from_secs(60)).await;
        service
    }

    pub fn spawn(
        binary: &str,
        label: &str,
        env: &[(String, String)],
        port: u16,
        ops_port: u16,
        log_dir: &Path,
    ) -> Service {
        let path = binary_path(binary);
        let log_file = log_dir.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_file).unwrap();
        let mut command = Command::new(&path);
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env_remove("CRM_SYNC_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "starting {} (run `cargo build --workspace --bins` first): {e}",
                path.display()
            )
        });
        Service {
            name: label.to_owned(),
            port,
            ops_port,
            log_file,
            child,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A URL of the ops endpoints (`/healthz`, `/readyz`, `/metrics`).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if let Ok(r) = client.get(self.ops_url("/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("service did not exit within 30 s of SIGTERM")
            .unwrap()
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A plain producer for writing test input straight onto a topic.
pub fn producer(_env: &TestEnv) -> rdkafka::producer::FutureProducer {
    base_config(&kafka_settings(), Role::Producer)
        .set("linger.ms", "5")
        .create()
        .unwrap()
}

/// Writes events to `topic` as ingest does (key, event id header), acknowledged.
pub async fn send_events(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    events: &[crm_sync_proto::v1::CrmEvent],
) {
    use crm_sync_proto::Message as _;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::FutureRecord;
    for chunk in events.chunks(1000) {
        let encoded: Vec<(String, Vec<u8>, String)> = chunk
            .iter()
            .map(|e| {
                (
                    format!("{}/{}/{}", e.integration_id, e.object_type, e.record_id),
                    e.encode_to_vec(),
                    e.event_id.clone(),
                )
            })
            .collect();
        futures::future::try_join_all(encoded.iter().map(|(key, payload, id)| {
            producer.send(
                FutureRecord::to(topic).key(key).payload(payload).headers(
                    OwnedHeaders::new().insert(Header {
                        key: "crm-sync-event-id",
                        value: Some(id.as_str()),
                    }),
                ),
                Duration::from_secs(30),
            )
        }))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
}

/// Polls `check` until it returns Some or the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A consumed record, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub partition: i32,
    pub offset: i64,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A topic just created can be briefly unknown to the broker's metadata; tests start only once
/// every partition of every topic has a leader.
fn wait_for_topics(topics: &[String]) {
    let consumer: BaseConsumer = base_config(&kafka_settings(), Role::Admin)
        .create()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for topic in topics {
        loop {
            let ready = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| {
                    let t = m.topics().first()?;
                    (t.error().is_none()
                        && t.partitions().len() == PARTITIONS as usize
                        && t.partitions()
                            .iter()
                            .all(|p| p.leader() >= 0 && p.error().is_none()))
                    .then_some(())
                })
                .is_some();
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "topic {topic} did not become available within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// How many records of the topic a `read_committed` consumer sees: transaction markers and
/// aborted transactions' records occupy offsets too, so watermarks alone would overcount.
pub fn topic_message_count(topic: &str) -> i64 {
    read_topic_blocking(topic).len() as i64
}

/// Watermarks, retried: right after topic creation or under load a metadata lookup can fail
/// transiently (leader not yet known).
fn watermarks(consumer: &BaseConsumer, topic: &str, partition: i32) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)) {
            Ok(w) => return w,
            Err(e) if Instant::now() > deadline => {
                panic!("watermarks of {topic}[{partition}]: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Every record currently in the topic (read_committed), read from the beginning.
pub async fn read_topic(topic: &str) -> Vec<Record> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&topic))
        .await
        .unwrap()
}

fn read_topic_blocking(topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = base_config(&kafka_settings(), Role::Consumer)
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut ends = Vec::new();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..PARTITIONS {
        let (low, high) = watermarks(&consumer, topic, p);
        if high > low {
            assignment
                .add_partition_offset(topic, p, rdkafka::Offset::Offset(low))
                .unwrap();
            ends.push((p, high));
        }
    }
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&assignment).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut done: std::collections::HashSet<i32> = std::collections::HashSet::new();
    while done.len() < ends.len() && Instant::now() < deadline {
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            // With read_committed, transaction markers occupy offsets: check positions.
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    if let rdkafka::Offset::Offset(o) = e.offset()
                        && ends.iter().any(|(p, h)| *p == e.partition() && o >= *h)
                    {
                        done.insert(e.partition());
                    }
                }
            }
            continue;
        };
        let m = result.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|h| {
                        Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            partition: m.partition(),
            offset: m.offset(),
        });
        if ends
            .iter()
            .any(|(p, h)| *p == m.partition() && m.offset() + 1 >= *h)
        {
            done.insert(m.partition());
        }
    }
    records
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `target/<profile>/`, where cargo puts the service binaries: the running test binary sits in
/// its `deps/` folder, a kit binary such as `chaos` in the folder itself.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap().to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

pub fn binary_path(name: &str) -> PathBuf {
    profile_dir().join(name)
}

fn target_dir() -> PathBuf {
    profile_dir().parent().unwrap().to_path_buf()
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

/// Topics of tests that ended long ago (`t<unix secs>_<id>.…`, older than 30 minutes): one
/// broker slows down badly with thousands of leftover partitions.
async fn delete_stale_topics(now_secs: u64) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let Ok(admin) =
        base_config(&kafka_settings(), Role::Admin).create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(20)) else {
        return;
    };
    let stale: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|name| {
            name.strip_prefix('t')
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<u64>().ok())
                .is_some_and(|created| created + 1800 < now_secs)
        })
        .collect();
    for chunk in stale.chunks(200) {
        let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let _ = admin
            .delete_topics(
                &names,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(60))),
            )
            .await;
    }
}

/// Test databases older than two hours are leftovers of earlier runs.
async fn drop_stale_databases(admin: &PgPool, now_secs: u64) {
    let names: Vec<(String,)> =
        sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'crm_sync_test_%'")
            .fetch_all(admin)
            .await
            .unwrap_or_default();
    for (name,) in names {
        let created: Option<u64> = name
            .strip_prefix("crm_sync_test_")
            .and_then(|rest| rest.split('_').next())
            .and_then(|s| s.parse().ok());
        if created.is_some_and(|c| c + 7200 < now_secs) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(admin)
                .await;
        }
    }
}

/// Reads one sample from a service's `/metrics`: the sum of every series of `name` whose labels
/// contain all of `labels` (e.g. `outcome="no_match"`). 0 when absent.
pub async fn metric(service: &Service, name: &str, labels: &[&str]) -> f64 {
    let Ok(response) = reqwest::get(service.ops_url("/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let series_name = series.split('{').next()?;
            if series_name != name || !labels.iter().all(|lab| series.contains(lab)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum()
}

pub mod salesforce {
    //! Salesforce Outbound Messages as Salesforce sends them.

    pub struct Notification<'a> {
        pub id: &'a str,
        pub object: &'a str,
        pub fields: Vec<(&'a str, &'a str)>,
    }

    /// A won opportunity owned by `owner`.
    pub fn won_opportunity<'a>(
        notification_id: &'a str,
        record_id: &'a str,
        owner: &'a str,
        amount: &'a str,
    ) -> Notification<'a> {
        opportunity(notification_id, record_id, owner, amount, "Closed Won")
    }

    pub fn opportunity<'a>(
        notification_id: &'a str,
        record_id: &'a str,
        owner: &'a str,
        amount: &'a str,
        stage: &'a str,
    ) -> Notification<'a> {
        Notification {
            id: notification_id,
            object: "Opportunity",
            fields: vec![
                ("Id", record_id),
                ("Amount", amount),
                ("CloseDate", "2026-11-20"),
                ("CreatedDate", "2026-11-01T09:00:00.000Z"),
                ("LastModifiedDate", "2026-11-20T15:04:05.000Z"),
                ("Name", "Acme - 200 licenses"),
                ("OwnerId", owner),
                ("StageName", stage),
            ],
        }
    }

    pub fn outbound_message(organization_id: &str, notifications: &[Notification<'_>]) -> String {
        let mut xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Body>
  <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
   <OrganizationId>{organization_id}</OrganizationId>
   <ActionId>04k5g000000XYZAAA2</ActionId>
   <SessionId xsi:nil="true"/>
   <EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/{organization_id}</EnterpriseUrl>
   <PartnerUrl>https://example.my.salesforce.com/services/Soap/u/59.0/{organization_id}</PartnerUrl>
"#
        );
        for n in notifications {
            xml.push_str(&format!(
                "   <Notification>\n    <Id>{}</Id>\n    <sObject xsi:type=\"sf:{}\" xmlns:sf=\"urn:sobject.enterprise.soap.sforce.com\">\n",
                n.id, n.object
            ));
            for (k, v) in &n.fields {
                xml.push_str(&format!("     <sf:{k}>{v}</sf:{k}>\n"));
            }
            xml.push_str("    </sObject>\n   </Notification>\n");
        }
        xml.push_str("  </notifications>\n </soapenv:Body>\n</soapenv:Envelope>\n");
        xml
    }
}

/// A company with one Salesforce integration and a "Won opportunities" workflow.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub company_id: uuid::Uuid,
    pub integration_id: uuid::Uuid,
    pub workflow_id: uuid::Uuid,
    pub organization_id: String,
    pub token: String,
}

impl Tenant {
    pub async fn create(
        pool: &PgPool,
        slug: &str,
        auto_sync_users: bool,
        workflow_active: bool,
    ) -> Tenant {
        use crm_sync_store::tenants;
        let company_id = tenants::upsert_company(pool, None, slug, &format!("{slug} Inc"))
            .await
            .unwrap();
        let organization_id =
            format!("00D{}", &uuid::Uuid::new_v4().simple().to_string()[..15]).to_uppercase();
        let token = crm_sync_store::secrets::new_token();
        let integration_id = tenants::upsert_integration(
            pool,
            &tenants::IntegrationInput {
                id: None,
                company_id,
                name: "salesforce".into(),
                crm: "salesforce".into(),
                crm_account_id: organization_id.clone(),
                auto_sync_users,
                webhook_token: Some(token.clone()),
            },
        )
        .await
        .unwrap();
        let spec: crm_sync_workflow::WorkflowSpec = serde_json::from_value(serde_json::json!({
            "name": "Won opportunities",
            "object_type": "Opportunity",
            "triggers": ["created", "updated"],
            "conditions": {"all": [{"field": "StageName", "op": "eq", "value": "Closed Won"}]},
            "user_field": "OwnerId",
            "value_field": "Amount",
            "date_field": "CloseDate",
            "activity_type": "deal_won"
        }))
        .unwrap();
        let workflow_id = tenants::upsert_workflow(
            pool,
            None,
            company_id,
            integration_id,
            &spec,
            workflow_active,
        )
        .await
        .unwrap();
        Tenant {
            company_id,
            integration_id,
            workflow_id,
            organization_id,
            token,
        }
    }

    pub fn outbound_message_path(&self) -> String {
        format!(
            "/v1/integrations/{}/salesforce/outbound-messages?token={}",
            self.integration_id, self.token
        )
    }
}

/// Posts a Salesforce Outbound Message to ingest; returns status and body.
pub async fn post_outbound_message(
    ingest: &Service,
    tenant: &Tenant,
    xml: String,
) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(ingest.url(&tenant.outbound_message_path()))
        .header("content-type", "text/xml; charset=utf-8")
        .header("SOAPAction", "\"\"")
        .body(xml)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}
