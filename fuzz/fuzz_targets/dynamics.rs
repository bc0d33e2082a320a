//! Dataverse `RemoteExecutionContext`s.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(context) = crm_sync_ingest::dynamics::parse(data) {
        let _ =
            crm_sync_ingest::dynamics::to_events(uuid::Uuid::nil(), &context, chrono::Utc::now());
    }
});
