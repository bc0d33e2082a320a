//! Kafka plumbing shared by every crm-sync service, so that offsets, dead letters, retries and
//! trace headers behave the same everywhere.

pub mod admin;
pub mod atomic;
pub mod clients;
pub mod connection;
pub mod consume;
pub mod consumer;
pub mod dlq;
pub mod headers;
pub mod health;
pub mod lag;
pub mod message;
pub mod metric_definitions;
mod partition_registry;
pub mod produce;
pub mod rotation;
mod security;
pub mod service;
pub mod transactional;
pub mod txn_producer;

pub use atomic::{AtomicPublishError, AtomicPublisher};
pub use consume::{BatchItem, ConsumeLoop, Failure, Incoming, MessageHandler, run_consumer};
pub use health::LoopHealth;
pub use produce::{OutgoingMessage, Publisher};

/// How every Kafka loop paces its retries (a handler's transient failure, a dead letter or a
/// transaction that did not go through, a producer that cannot start): from 100 ms, doubling,
/// up to 10 s.
pub(crate) fn retry_backoff() -> crm_sync_retry::Backoff {
    crm_sync_retry::Backoff::new(
        std::time::Duration::from_millis(100),
        std::time::Duration::from_secs(10),
    )
}
