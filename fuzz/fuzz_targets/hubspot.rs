//! HubSpot webhook batches, and the URI normalisation of signature v3.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = crm_sync_ingest::hubspot::parse(data)
        && let Ok(events) =
            crm_sync_ingest::hubspot::to_events(uuid::Uuid::nil(), &batch, chrono::Utc::now())
    {
        for e in &events {
            assert!(crm_sync_ingest::event::valid_record_id(&e.record_id));
            assert!(crm_sync_ingest::event::valid_object_type(&e.object_type));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crm_sync_ingest::hubspot::signature::normalize_uri(text);
    }
});
