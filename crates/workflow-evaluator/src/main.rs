// Decoding, merging and the record store allocate many small buffers on several threads:
// mimalloc spends less CPU on them than glibc's malloc (a 5-million-record restore: 17 % less
// user CPU, the same peak RSS; BENCHMARKS.md).
// Built without transparent huge pages (the `no_thp` feature): a huge page is resident whole
// once any byte of it is touched, and mimalloc's purges of freed pages then return little.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    crm_sync_runtime::service_main(
        crm_sync_workflow_evaluator::SERVICE,
        crm_sync_workflow_evaluator::run,
    )
    .await
}
