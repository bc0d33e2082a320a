use std::process::ExitCode;

use crm_sync_runtime::{Settings, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load(crm_sync_ingest::SERVICE) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("ingest: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init(crm_sync_ingest::SERVICE.name, &settings.telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("ingest: {e:#}");
            return ExitCode::from(2);
        }
    };
    match crm_sync_ingest::run(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ingest failed");
            ExitCode::FAILURE
        }
    }
}
