//! Salesforce Outbound Messages: the SOAP parser and the mapping to `CrmEvent`s.

pub mod mapping;
pub mod outbound;

pub use mapping::{event_id, to_events};
pub use outbound::{OutboundError, OutboundMessage, parse};
