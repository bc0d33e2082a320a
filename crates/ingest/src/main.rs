#[tokio::main]
async fn main() -> std::process::ExitCode {
    crm_sync_runtime::service_main(crm_sync_ingest::SERVICE, crm_sync_ingest::run).await
}
