//! What every crm-sync service shares at start-up and shutdown.

pub mod api_error;
pub mod http_telemetry;
pub mod metric_definitions;
pub mod ops;
pub mod pull_settings;
pub mod refusal;
pub mod section_settings;
pub mod security;
pub mod server;
pub mod service;
pub mod settings;
mod settings_error;
pub mod shutdown;
mod span_fields;
pub mod supervise;
pub mod telemetry;

pub use settings::{ServiceDefaults, Settings};

use std::future::Future;
use std::process::ExitCode;

/// The `main` of every service: load configuration and telemetry (exit 2 on a configuration
/// error, naming the key), run the service, exit 1 if it fails.
pub async fn service_main<F, Fut>(service: ServiceDefaults, run: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = match Settings::load(service) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: {error}", service.name);
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init(service.name, &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{}: {error:#}", service.name);
            return ExitCode::from(2);
        }
    };
    match run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        // Checks that need a service's own libraries (e.g. librdkafka properties) run in `run`.
        Err(error) if error.chain().any(|e| e.is::<settings::SettingsError>()) => {
            tracing::error!(error = format!("{error:#}"), "{} failed", service.name);
            eprintln!("{}: {error:#}", service.name);
            ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{} failed", service.name);
            ExitCode::FAILURE
        }
    }
}
