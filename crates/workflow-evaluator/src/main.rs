use crm_sync_workflow_evaluator::{SERVICE, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match crm_sync_runtime::Settings::load(SERVICE) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("{}: {error}", SERVICE.name);
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = match crm_sync_runtime::telemetry::init(SERVICE.name, &settings.telemetry) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("{}: {error:#}", SERVICE.name);
            return std::process::ExitCode::from(2);
        }
    };
    match run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "exiting");
            std::process::ExitCode::FAILURE
        }
    }
}
