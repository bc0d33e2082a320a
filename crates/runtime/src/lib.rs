//! What every crm-sync service shares at start-up and shutdown.

pub mod ops;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use settings::{ServiceDefaults, Settings};
