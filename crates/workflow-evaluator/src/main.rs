#[tokio::main]
async fn main() -> std::process::ExitCode {
    crm_sync_runtime::service_main(
        crm_sync_workflow_evaluator::SERVICE,
        crm_sync_workflow_evaluator::run,
    )
    .await
}
