//! Salesforce Change Data Capture events (CometD or Pub/Sub JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = crm_sync_ingest::salesforce::cdc::parse(data) {
        let mapped = crm_sync_ingest::salesforce::cdc::to_events(
            uuid::Uuid::nil(),
            &events,
            chrono::Utc::now(),
        );
        for e in &mapped {
            assert!(crm_sync_ingest::event::valid_record_id(&e.record_id));
            assert!(crm_sync_ingest::event::valid_object_type(&e.object_type));
        }
    }
});
