//! HubSpot: webhook batches ([`webhook`]) signed with `X-HubSpot-Signature-v3` ([`signature`]).

pub mod signature;
pub mod webhook;

pub use webhook::{Batch, HubSpotError, parse, to_events};
