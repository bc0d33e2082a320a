//! Topic look-ups for the tools. The local broker does not auto-create topics, so a tool checks
//! first and says so plainly instead of timing out on a send or idling on an empty assignment.

use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::client::Client;

/// How long a topic may stay unknown: metadata of a just-created topic reaches the broker's
/// answers a moment after the creation call returns.
const PROPAGATION: Duration = Duration::from_secs(10);

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
            let why = crm_sync_kafka::connection::explain(&e);
            anyhow::anyhow!("asking Kafka at {brokers} about topic {topic}: {why} (--brokers)")
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
