//! Why a configuration was refused, naming the key where one is to blame.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration file {path} (from CRM_SYNC_CONFIG) does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Invalid(config::ConfigError),
    #[error("invalid configuration: key `{key}`: {reason}")]
    Key { key: &'static str, reason: String },
    /// A key named at run time (e.g. a librdkafka property under `kafka.librdkafka_options`).
    #[error("invalid configuration: key `{key}`: {reason}")]
    Named { key: String, reason: String },
}

/// Not `#[from]`: as the source too, the message (every key expected) printed twice in a chain.
impl From<config::ConfigError> for SettingsError {
    fn from(error: config::ConfigError) -> Self {
        SettingsError::Invalid(error)
    }
}

/// A refused setting, naming its key.
pub(crate) fn key(key: &'static str, reason: &str) -> Result<(), SettingsError> {
    Err(SettingsError::Key {
        key,
        reason: reason.to_owned(),
    })
}
