#[tokio::main]
async fn main() -> std::process::ExitCode {
    crm_sync_runtime::service_main(crm_sync_provisioner::SERVICE, crm_sync_provisioner::run).await
}
