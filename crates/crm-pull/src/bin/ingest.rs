// Many small, short-lived allocations per notification, from several threads: mimalloc keeps
// them cheap (glibc's malloc was 40 % of ingest's CPU under load).
// Built without transparent huge pages (the `no_thp` feature): a huge page is resident whole
// once any byte of it is touched, and mimalloc's purges of freed pages then return little.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// ingest: the webhook API, and beside it the pull jobs (backfills, reconciliation).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    crm_sync_runtime::service_main(crm_sync_ingest::SERVICE, |settings| {
        crm_sync_ingest::run_with(settings, crm_sync_crm_pull::worker::start)
    })
    .await
}
