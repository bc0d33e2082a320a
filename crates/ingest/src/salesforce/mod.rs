//! Salesforce: Outbound Messages (SOAP, pushed by Salesforce itself) and Change Data Capture
//! events (JSON, relayed by a Streaming/Pub/Sub API subscriber).
//!
//! - [`outbound`]: the Outbound Message parser; [`mapping`]: notifications to `CrmEvent`s;
//! - [`cdc`]: Change Data Capture events, parsed and mapped.

pub mod cdc;
pub mod mapping;
pub mod outbound;

pub use mapping::{event_id, to_events};
pub use outbound::{OutboundError, OutboundMessage, parse};
