//! Microsoft Dynamics 365 / Dataverse webhooks: the `RemoteExecutionContext` ([`context`]) and
//! its mapping to `CrmEvent`s ([`mapping`]). Authenticated by the key the webhook was
//! registered with (an HTTP header, or a query parameter such as `code`).

pub mod context;
pub mod mapping;

pub use context::{Context, ContextError, parse};
pub use mapping::{MappingError, to_events};
