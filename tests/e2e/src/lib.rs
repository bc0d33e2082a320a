//! The test kit: every test gets its own database (migrated) and its own topics, and runs the
//! services as real processes against the local stack (`deploy/local/stack.sh up`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod app;
pub mod events;
pub mod fake_crm;
pub mod proxy;
pub mod pull_jobs;
pub mod salesforce;
mod service;
mod tenant;

pub use service::{SEPARATE_OPS_PORT, Service};
pub use tenant::{Tenant, post_outbound_message, upsert_workflow};

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crm_sync_kafka::clients::{Role, base_config};
use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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

    /// Environment for a service process pointed at this test's database and topics, listening
    /// on ports the system picks (the process logs them, [`Service`] reads them from its log).
    pub fn service_env(&self) -> Vec<(String, String)> {
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
            ("CRM_SYNC__HTTP__HOST".into(), "127.0.0.1".into()),
            // Port 0: the system picks a free port at bind time, so no other test can take it
            // between the choice and the bind.
            ("CRM_SYNC__HTTP__PORT".into(), "0".into()),
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

    /// The local record store of the evaluator replica `replica`.
    pub fn state_dir(&self, replica: &str) -> PathBuf {
        self.log_dir.join(format!("state-{replica}"))
    }

    /// Starts a service binary (`ingest`, `workflow-evaluator`, `provisioner`) and waits until its
    /// `/readyz` answers 200. `label` distinguishes replicas in log file names.
    pub async fn start_service(
        &self,
        binary: &str,
        label: &str,
        extra_env: &[(&str, &str)],
    ) -> Service {
        self.start_replica(binary, label, label, 0, extra_env).await
    }

    /// Like [`TestEnv::start_service`] for the replica `replica`: a replica started again under
    /// the same name keeps its local record store and its transactional id (it fences what its
    /// predecessor left open), as a restarted pod does. `port` 0 lets the system pick one; a
    /// restarted replica that must keep its address passes its predecessor's.
    pub async fn start_replica(
        &self,
        binary: &str,
        label: &str,
        replica: &str,
        port: u16,
        extra_env: &[(&str, &str)],
    ) -> Service {
        let env = self.process_env(binary, replica, port, extra_env);
        Service::start(binary, label, &env, &self.log_dir).await
    }

    /// Starts a service without waiting for it to be ready (for tests of why it is not).
    pub fn spawn_service(&self, binary: &str, label: &str, extra_env: &[(&str, &str)]) -> Service {
        let env = self.process_env(binary, label, 0, extra_env);
        Service::spawn(binary, label, &env, &self.log_dir)
    }

    /// A service process's environment.
    fn process_env(
        &self,
        binary: &str,
        replica: &str,
        port: u16,
        extra_env: &[(&str, &str)],
    ) -> Vec<(String, String)> {
        let mut env = self.service_env();
        // One local record store per replica (a replica restarted under its name keeps it).
        env.push((
            "CRM_SYNC__EVALUATOR__STATE_DIR".into(),
            self.state_dir(replica).display().to_string(),
        ));
        if port != 0 {
            env.push(("CRM_SYNC__HTTP__PORT".into(), port.to_string()));
        }
        env.push((
            "CRM_SYNC__KAFKA__CONSUMER_GROUP".into(),
            format!("{}-{binary}", self.id),
        ));
        // Derived from the port by default, which is 0 here for every replica.
        env.push((
            "CRM_SYNC__KAFKA__TRANSACTIONAL_ID".into(),
            format!("{}-{binary}-{replica}", self.id),
        ));
        // ingest and admin-api serve the ops endpoints on a port of their own; the consumers
        // serve nothing else, on `http.port`.
        if SEPARATE_OPS_PORT.contains(&binary) {
            env.push(("CRM_SYNC__HTTP__OPS_PORT".into(), "0".into()));
        }
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env
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
        // With one broker, any dropped connection is "all brokers down" for a moment;
        // librdkafka reconnects by itself, so such errors only cost time within the deadline.
        let m = match result {
            Ok(m) => m,
            Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure,
            )) => continue,
            Err(e) => panic!("reading {topic}: {e}"),
        };
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
