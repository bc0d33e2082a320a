//! Salesforce Outbound Messages (SOAP): any bytes either parse into notifications that map to
//! events, or are refused with an error; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = crm_sync_ingest::salesforce::parse(data) {
        assert!(!message.notifications.is_empty() && message.notifications.len() <= 100);
        let now = chrono::Utc::now();
        if let Ok(events) = crm_sync_ingest::salesforce::to_events(uuid::Uuid::nil(), &message, now)
        {
            assert_eq!(events.len(), message.notifications.len());
        }
    }
});
