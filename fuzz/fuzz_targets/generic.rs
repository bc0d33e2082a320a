//! The generic JSON form of `CrmEvent`, and the `X-Crm-Sync-Signature` header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) =
        crm_sync_ingest::generic::to_events(uuid::Uuid::nil(), "acct", data, chrono::Utc::now())
    {
        assert!(!events.is_empty() && events.len() <= crm_sync_ingest::generic::MAX_EVENTS);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crm_sync_ingest::generic::signature::parse_header(text);
    }
});
