//! Pipedrive webhooks v2.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hook) = crm_sync_ingest::pipedrive::parse(data) {
        let e = crm_sync_ingest::pipedrive::to_event(uuid::Uuid::nil(), &hook, chrono::Utc::now());
        assert!(crm_sync_ingest::event::valid_record_id(&e.record_id));
    }
});
