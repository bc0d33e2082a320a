//! What the measuring examples share.
#![allow(clippy::unwrap_used)]
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::producer::{FutureProducer, Producer};

/// Commits the open transaction, its deliveries awaited. With `settle`, only once librdkafka
/// released the delivered messages, as the services do (its flush before the commit otherwise
/// polls for 100 ms).
pub async fn commit<C: ClientContext + 'static>(producer: &FutureProducer<C>, settle: bool) {
    while settle && producer.in_flight_count() > 0 {
        tokio::task::yield_now().await;
    }
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.commit_transaction(Duration::from_secs(30)))
        .await
        .unwrap()
        .unwrap();
}
