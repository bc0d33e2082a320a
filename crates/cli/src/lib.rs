//! The `crm-sync` command-line tool: declarative tenants, test events in and out of Kafka, and
//! the end-to-end demo. `main.rs` holds the argument parsing; everything else is here so that
//! it can be unit-tested.

pub mod commands;
pub mod context;
pub mod kafka_topics;
pub mod table;
pub mod tenants_file;
pub mod transcode;
