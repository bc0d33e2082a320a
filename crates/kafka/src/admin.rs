//! Topic administration for tools and tests, and the `/readyz` check of the brokers.

use anyhow::Context as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use crate::clients::{Role, base_config};
use crate::connection::{self, ReportingContext};

/// Creates the topics that do not exist yet (single-replica: for the local stack and tests).
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[String],
    partitions: i32,
) -> anyhow::Result<()> {
    let brokers = &settings.brokers;
    let admin: AdminClient<ReportingContext> = base_config(settings, Role::Admin)
        .create_with_context(ReportingContext)
        .with_context(|| format!("creating Kafka admin client for {brokers}"))?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(1));
            // The evaluator's record state is a changelog: only each key's latest value matters.
            if t.contains("crm.records.v1") {
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
        .with_context(|| format!("creating topics on {brokers}"))?;
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
    settings: &KafkaSettings,
    input: &str,
    changelog: &str,
) -> anyhow::Result<()> {
    let brokers = &settings.brokers;
    let consumer: MetadataClient = base_config(settings, Role::Admin)
        .create_with_context(ReportingContext)
        .with_context(|| format!("creating Kafka client for {brokers}"))?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let count = |topic: &str| -> anyhow::Result<Option<usize>> {
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .with_context(|| format!("reading metadata of {topic} from {brokers}"))?;
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

/// What the changelog's retention means for the record state kept in it.
#[derive(Debug, PartialEq)]
enum Retention {
    /// Compacted, or kept for ever: every record's latest state stays.
    Kept,
    /// Compacted, but also deleted after `retention.ms`: the state of a record unchanged for
    /// that long goes (a choice some operators make; said at start).
    CompactedThenDeleted(String),
    /// Deleted after `retention.ms`, never compacted: the state of every record goes in time.
    Expires(String),
}

fn retention(policy: &str, retention_ms: &str) -> Retention {
    let has = |p: &str| policy.split(',').any(|x| x.trim() == p);
    if retention_ms.trim() == "-1" || !has("delete") {
        Retention::Kept
    } else if has("compact") {
        Retention::CompactedThenDeleted(retention_ms.to_owned())
    } else {
        Retention::Expires(retention_ms.to_owned())
    }
}

/// Refuses a changelog whose records expire by time (`cleanup.policy=delete`): a restore would
/// miss the state of every record unchanged for longer, judge its next event as the record's
/// first, and ask its CRM for it again. When the brokers do not say (no `DescribeConfigs`
/// permission), warns and goes on. Returns the largest message the topic takes
/// (`max.message.bytes`), when the brokers said.
pub async fn check_changelog(
    settings: &KafkaSettings,
    changelog: &str,
) -> anyhow::Result<Option<usize>> {
    let admin: AdminClient<ReportingContext> = base_config(settings, Role::Admin)
        .create_with_context(ReportingContext)
        .with_context(|| format!("creating Kafka admin client for {}", settings.brokers))?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
    let described = match admin
        .describe_configs(&[ResourceSpecifier::Topic(changelog)], &options)
        .await
    {
        Ok(results) => match results.into_iter().next() {
            Some(Ok(config)) => Ok(config),
            Some(Err(code)) => Err(code.to_string()),
            None => Err("no answer".to_owned()),
        },
        Err(error) => Err(error.to_string()),
    };
    let config = match described {
        Ok(config) => config,
        Err(error) => {
            tracing::warn!(topic = changelog, %error, "could not read the record state changelog's configuration; make sure it is compacted (cleanup.policy=compact)");
            return Ok(None);
        }
    };
    let value = |name: &str| {
        config
            .get(name)
            .and_then(|e| e.value.clone())
            .unwrap_or_default()
    };
    let max_message_bytes = value("max.message.bytes").trim().parse().ok();
    match retention(&value("cleanup.policy"), &value("retention.ms")) {
        Retention::Kept => Ok(max_message_bytes),
        Retention::CompactedThenDeleted(ms) => {
            tracing::warn!(topic = changelog, retention_ms = %ms, "the record state changelog is compacted but also deleted after retention.ms: the state of a record unchanged for that long is lost, and its next event is judged as its first");
            Ok(max_message_bytes)
        }
        Retention::Expires(ms) => anyhow::bail!(
            "topic {changelog} has cleanup.policy=delete (retention.ms={ms}): the record state of every record unchanged for that long would be lost from it. Set cleanup.policy=compact on it (kafka-configs.sh --alter --entity-type topics --entity-name {changelog} --add-config cleanup.policy=compact)"
        ),
    }
}

type MetadataClient = BaseConsumer<ReportingContext>;

fn metadata_client(settings: &KafkaSettings) -> Result<MetadataClient, String> {
    base_config(settings, Role::Admin)
        .create_with_context(ReportingContext)
        .map_err(|e| format!("kafka: cannot create a client: {e}"))
}

fn answer(client: &MetadataClient, brokers: &str, timeout: Duration) -> Result<(), String> {
    // Serves the client's error callbacks (nothing is subscribed, so no message is consumed).
    let _ = client.poll(Duration::ZERO);
    match client.fetch_metadata(None, timeout) {
        Ok(_) => {
            connection::clear_failure();
            Ok(())
        }
        // A classified failure (wrong password, untrusted certificate, missing ACL) says more
        // than the request's timeout.
        Err(e) => Err(match connection::recent_failure() {
            Some(reason) => format!("kafka: {reason}"),
            None => format!("Kafka at {brokers}: {}", connection::explain(&e)),
        }),
    }
}

/// True when the brokers answer a metadata request within `timeout`.
pub fn brokers_reachable(settings: &KafkaSettings, timeout: Duration) -> Result<(), String> {
    answer(&metadata_client(settings)?, &settings.brokers, timeout)
}

/// A `/readyz` check: the brokers answer a metadata request (run off the async threads, since
/// the request blocks). One client is kept between probes: it keeps (re)connecting, so its
/// failures are classified and a fixed credential shows up as soon as a reconnect succeeds.
pub fn readiness_check(
    settings: &KafkaSettings,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
+ Send
+ Sync
+ 'static {
    let settings = settings.clone();
    let client: Arc<Mutex<Option<MetadataClient>>> = Arc::default();
    move || {
        let settings = settings.clone();
        let client = client.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut slot = client
                    .lock()
                    .map_err(|_| "kafka: readiness client poisoned".to_owned())?;
                if slot.is_none() {
                    *slot = Some(metadata_client(&settings)?);
                }
                match slot.as_ref() {
                    Some(c) => answer(c, &settings.brokers, Duration::from_secs(2)),
                    None => Err("kafka: no readiness client".to_owned()),
                }
            })
            .await
            .map_err(|e| format!("Kafka check did not complete: {e}"))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changelog_that_expires_by_time_is_told_apart_from_a_compacted_one() {
        assert_eq!(retention("compact", "604800000"), Retention::Kept);
        assert_eq!(retention("delete", "-1"), Retention::Kept);
        assert_eq!(
            retention("delete", "604800000"),
            Retention::Expires("604800000".into())
        );
        assert_eq!(
            retention("compact,delete", "604800000"),
            Retention::CompactedThenDeleted("604800000".into())
        );
        assert_eq!(
            retention("delete, compact", "86400000"),
            Retention::CompactedThenDeleted("86400000".into())
        );
    }
}
