//! The `crm_sync.v1` protobuf contracts (see `proto/`), plus a reflection pool so that tools can
//! turn any topic's messages into JSON and back.

use std::sync::OnceLock;

pub use prost::Message;
pub use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

#[allow(clippy::all, clippy::unwrap_used, clippy::expect_used)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/crm_sync.v1.rs"));
}

pub use prost_types::Timestamp;

pub mod announce;
pub mod view;

const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/crm_sync_descriptor.bin"));

/// All crm_sync.v1 message descriptors, for JSON transcoding in tools.
pub fn descriptor_pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        // The set is produced by this crate's own build script; failing here is a build defect.
        #[allow(clippy::expect_used)]
        DescriptorPool::decode(DESCRIPTOR_SET).expect("descriptor set built by build.rs decodes")
    })
}

/// The fully qualified message name carried by a crm-sync topic, by the topic's base name.
/// Dead-letter topics carry the original bytes of their origin topic.
pub fn message_name_for_topic(topic: &str) -> Option<&'static str> {
    let base = topic.strip_suffix(".dlq").unwrap_or(topic);
    let base = base.rsplit_once('/').map_or(base, |(_, b)| b);
    if base.ends_with("crm.events.v1") {
        Some("crm_sync.v1.CrmEvent")
    } else if base.ends_with("crm.matches.v1") {
        Some("crm_sync.v1.WorkflowOutcome")
    } else if base.ends_with("salesscreen.activities.v1") {
        Some("crm_sync.v1.ActivityChanged")
    } else if base.ends_with("salesscreen.users.v1") {
        Some("crm_sync.v1.UserProvisioned")
    } else if base.ends_with("crm.records.v1") {
        Some("crm_sync.v1.RecordState")
    } else if base.ends_with("crm.hydrations.v1") {
        Some("crm_sync.v1.HydrationRequest")
    } else {
        None
    }
}

/// Converts between chrono-free seconds/nanos and `prost_types::Timestamp`.
pub fn timestamp_from_millis(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_message_is_in_the_pool() {
        for topic in [
            "crm.events.v1",
            "crm.matches.v1",
            "salesscreen.activities.v1",
            "salesscreen.users.v1",
            "crm.records.v1",
            "crm.hydrations.v1",
            "crm.events.v1.dlq",
            "test-1234.crm.events.v1",
        ] {
            let name = message_name_for_topic(topic).unwrap();
            assert!(
                descriptor_pool().get_message_by_name(name).is_some(),
                "{name}"
            );
        }
        assert_eq!(message_name_for_topic("other"), None);
    }

    #[test]
    fn timestamps_before_epoch_normalise() {
        let ts = timestamp_from_millis(-1);
        assert_eq!((ts.seconds, ts.nanos), (-1, 999_000_000));
    }
}
