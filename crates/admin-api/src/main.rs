#[tokio::main]
async fn main() -> std::process::ExitCode {
    crm_sync_runtime::service_main(crm_sync_admin_api::SERVICE, crm_sync_admin_api::run).await
}
