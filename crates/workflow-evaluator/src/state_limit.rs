//! A record's state goes to the changelog as one Kafka message, so it must fit in one. A change
//! that would grow it past that cannot be kept: produced anyway, the producer refuses it, the
//! transaction aborts and is retried for ever, and every record of every tenant whose events
//! share the replica waits behind it. Such a change is dead-lettered instead, saying why, and
//! the record keeps its state without it.

use crm_sync_kafka::dlq::DeadLetter;

use crate::record::Merged;

/// The rest of the changelog message: its key, its headers and the record batch's own bytes.
const ENVELOPE_BYTES: usize = 8 * 1024;
/// The most that judging adds to a state per active workflow: a match's workflow id, value,
/// date and owner.
const MATCH_BYTES: usize = 512;

/// The largest state a record may keep, from the largest message the producers and the
/// changelog topic take.
#[derive(Debug, Clone, Copy)]
pub struct StateLimit {
    max_message_bytes: usize,
}

impl StateLimit {
    /// `max_message_bytes`: the smaller of the producers' `message.max.bytes` and the changelog
    /// topic's `max.message.bytes`.
    pub fn new(max_message_bytes: usize) -> StateLimit {
        StateLimit { max_message_bytes }
    }

    /// Refuses a merged state that, once judged by `workflows` active workflows, might not fit
    /// in the changelog message keyed `key`.
    pub fn check(
        &self,
        key: &str,
        merged: &Merged<'_>,
        workflows: usize,
    ) -> Result<(), DeadLetter> {
        let bytes = merged.encoded_len_bound();
        let room = self
            .max_message_bytes
            .saturating_sub(ENVELOPE_BYTES + key.len() + workflows * MATCH_BYTES);
        if bytes <= room {
            return Ok(());
        }
        Err(DeadLetter {
            reason: "record_too_large",
            detail: format!(
                "with this change record {key} would keep a state of up to {bytes} bytes, more \
                 than the {room} its changelog message has room for (a Kafka message may \
                 carry {} bytes here: message.max.bytes); the change is set aside and the \
                 record keeps its state without it",
                self.max_message_bytes
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::merge_event;
    use crm_sync_proto::v1::field_value::Kind;
    use crm_sync_proto::v1::{ChangeType, CrmEvent, FieldValue};

    fn event(fields: &[(&str, usize)]) -> CrmEvent {
        let mut e = CrmEvent {
            event_id: "e".into(),
            record_id: "006A".into(),
            fields: fields
                .iter()
                .map(|(name, len)| {
                    let value = FieldValue {
                        kind: Some(Kind::Text("x".repeat(*len))),
                    };
                    ((*name).to_owned(), value)
                })
                .collect(),
            ..Default::default()
        };
        e.set_change_type(ChangeType::Updated);
        e
    }

    #[test]
    fn a_state_fits_while_its_bound_leaves_room_for_the_envelope_and_the_matches() {
        let limit = StateLimit::new(100_000);
        let e = event(&[("Notes", 85_000)]);
        let merged = merge_event(None, &e);
        assert!(merged.encoded_len_bound() >= merged.encode().len());
        assert!(limit.check("k", &merged, 10).is_ok());
        // Twenty workflows' matches would not leave room for it.
        let refused = limit.check("k", &merged, 20).unwrap_err();
        assert_eq!(refused.reason, "record_too_large");
        assert!(refused.detail.contains("record k "), "{}", refused.detail);
        assert!(
            refused.detail.contains("may carry 100000 bytes"),
            "{}",
            refused.detail
        );
    }

    #[test]
    fn many_fields_each_small_add_up() {
        let names: Vec<String> = (0..2_000).map(|i| format!("Field_{i}__c")).collect();
        let fields: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 500)).collect();
        let e = event(&fields);
        let merged = merge_event(None, &e);
        assert!(merged.encoded_len_bound() >= merged.encode().len());
        assert!(StateLimit::new(1_000_000).check("k", &merged, 1).is_err());
        assert!(StateLimit::new(2_000_000).check("k", &merged, 1).is_ok());
    }
}
