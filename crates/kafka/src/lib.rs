//! Kafka plumbing shared by every crm-sync service, so that offsets, dead letters, retries and
//! trace headers behave the same everywhere.

pub mod admin;
pub mod atomic;
pub mod clients;
pub mod connection;
pub mod consume;
pub mod dlq;
pub mod headers;
pub mod lag;
pub mod outbox_relay;
pub mod produce;
pub mod rotation;
mod security;
pub mod service;
pub mod transactional;

pub use atomic::{AtomicPublishError, AtomicPublisher};
pub use consume::{
    BatchItem, ConsumeLoop, ConsumerHealth, Failure, Incoming, MessageHandler, run_consumer,
};
pub use produce::{OutgoingMessage, Publisher};
