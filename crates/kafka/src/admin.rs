//! Topic administration for tools and tests.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

/// Creates the topics that do not exist yet (single-replica: for the local stack and tests).
pub async fn ensure_topics(
    brokers: &str,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| anyhow::anyhow!("creating Kafka admin client for {brokers}: {e}"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(1));
            // The evaluator's record state is a changelog: only each key's latest value matters.
            if t.ends_with("crm.records.v1") {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|e| anyhow::anyhow!("creating topics on {brokers}: {e}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Checks that `changelog` exists with the partition count of `input`, whose partitions it
/// mirrors one to one. Waits up to a minute for the brokers to answer.
pub async fn check_co_partitioned(
    brokers: &str,
    input: &str,
    changelog: &str,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| anyhow::anyhow!("creating Kafka client for {brokers}: {e}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let count = |topic: &str| -> anyhow::Result<Option<usize>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| anyhow::anyhow!("reading metadata of {topic} from {brokers}: {e}"))?;
        Ok(metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0))
    };
    loop {
        match (count(input), count(changelog)) {
            (Ok(Some(a)), Ok(Some(b))) if a == b => return Ok(()),
            (Ok(Some(a)), Ok(Some(b))) => anyhow::bail!(
                "topic {changelog} has {b} partitions but {input} has {a}: they must be equal (the record state of each partition of {input} lives in the same partition of {changelog})"
            ),
            (Ok(_), Ok(None)) if std::time::Instant::now() > deadline => anyhow::bail!(
                "topic {changelog} does not exist: create it with cleanup.policy=compact and the partition count of {input}"
            ),
            (Err(error), _) | (_, Err(error)) if std::time::Instant::now() > deadline => {
                return Err(error);
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// True when the brokers answer a metadata request within `timeout`.
pub fn brokers_reachable(brokers: &str, timeout: Duration) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .fetch_metadata(None, timeout)
        .map(|_| ())
        .map_err(|e| format!("Kafka at {brokers}: {e}"))
}

/// A `/readyz` check: the brokers answer a metadata request (run off the async threads, since
/// the request blocks).
pub fn readiness_check(
    brokers: &str,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
+ Send
+ Sync
+ 'static {
    let brokers = brokers.to_owned();
    move || {
        let brokers = brokers.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || brokers_reachable(&brokers, Duration::from_secs(2)))
                .await
                .map_err(|e| format!("Kafka check did not complete: {e}"))?
        })
    }
}
