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
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
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
