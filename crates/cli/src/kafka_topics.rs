//! Topic look-ups for the tools. The local broker does not auto-create topics, so a tool checks
//! first and says so plainly instead of timing out on a send or idling on an empty assignment.

use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// How long a topic may stay unknown: metadata of a just-created topic reaches the broker's
/// answers a moment after the creation call returns.
const PROPAGATION: Duration = Duration::from_secs(10);

/// What went wrong, once: rdkafka's metadata error carries its code as its source too, so
/// printed with its chain it said "Broker transport failure" twice and nothing more.
fn why(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown) => {
            "no broker answers there (is Kafka running? the address is --brokers or kafka.brokers)"
                .to_owned()
        }
        Some(code) => code.to_string(),
        None => error.to_string(),
    }
}

/// The partition ids of `topic`, or an error saying it does not exist. Blocks the calling
/// thread (inside the runtime through `block_in_place`).
pub fn partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    brokers: &str,
) -> anyhow::Result<Vec<i32>> {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let metadata = tokio::task::block_in_place(|| {
            client.fetch_metadata(Some(topic), Duration::from_secs(10))
        })
        .map_err(|e| {
            anyhow::anyhow!("asking Kafka at {brokers} about topic {topic}: {}", why(&e))
        })?;
        let ids: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if !ids.is_empty() {
            return Ok(ids);
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "topic {topic} does not exist on {brokers} (topics are not created automatically; \
                 `deploy/local/stack.sh up` creates the default ones)"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_broker_is_told_once_in_words() {
        let told = why(&KafkaError::MetadataFetch(
            RDKafkaErrorCode::BrokerTransportFailure,
        ));
        assert!(told.starts_with("no broker answers there"), "{told}");
        let told = why(&KafkaError::MetadataFetch(
            RDKafkaErrorCode::SaslAuthenticationFailed,
        ));
        assert_eq!(told.matches("SASL").count(), 1, "{told}");
    }
}
