//! Pipedrive: webhooks v2 ([`webhook`]), authenticated with HTTP Basic credentials configured
//! on the webhook.

pub mod webhook;

pub use webhook::{PipedriveError, Webhook, parse, to_event};
