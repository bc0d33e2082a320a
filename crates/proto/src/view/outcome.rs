//! A `WorkflowOutcome` written from borrowed parts.
//!
//! The evaluator writes four outcomes per event on average, each repeating the event's ids and
//! the workflow's: building a `WorkflowOutcome` to encode it copied eight to eleven strings per
//! outcome only to drop them once encoded. [`OutcomeRef::encode`] writes the same bytes as
//! prost from where the strings already are.

use super::wire::{
    VARINT, put_len_header, put_text, put_varint, text_len, timestamp_len, with_length,
    write_timestamp,
};
use crate::Timestamp;
use crate::v1::{CrmKind, OutcomeKind};

/// A `CrmUser`, borrowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrmUserRef<'a> {
    pub crm_user_id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
}

/// A `WorkflowOutcome`, its strings borrowed; the fields mean what the message's do.
#[derive(Debug, Clone, Copy)]
pub struct OutcomeRef<'a> {
    pub outcome_id: &'a str,
    pub event_id: &'a str,
    pub company_id: &'a str,
    pub integration_id: &'a str,
    pub workflow_id: &'a str,
    pub kind: OutcomeKind,
    pub object_type: &'a str,
    pub record_id: &'a str,
    pub owner: Option<CrmUserRef<'a>>,
    pub activity_type: &'a str,
    pub value: &'a str,
    pub activity_date: Option<Timestamp>,
    pub occurred_at: Option<Timestamp>,
    pub crm: CrmKind,
}

/// An enum or other varint field's whole size (one-byte tag), nothing when zero.
fn number_len(value: i32) -> usize {
    if value == 0 {
        0
    } else {
        1 + prost::encoding::encoded_len_varint(i64::from(value) as u64)
    }
}

fn put_number(out: &mut Vec<u8>, number: u32, value: i32) {
    if value != 0 {
        out.push((number << 3) as u8 | VARINT);
        // Negative enum values are ten-byte varints of their two's complement, as in prost.
        put_varint(i64::from(value) as u64, out);
    }
}

impl CrmUserRef<'_> {
    fn payload_len(&self) -> usize {
        text_len(self.crm_user_id) + text_len(self.name) + text_len(self.email)
    }

    fn write(&self, out: &mut Vec<u8>, number: u32) {
        put_len_header(out, number, self.payload_len());
        put_text(out, 1, self.crm_user_id);
        put_text(out, 2, self.name);
        put_text(out, 3, self.email);
    }
}

impl OutcomeRef<'_> {
    /// The outcome's bytes, exactly as prost encodes the equivalent `WorkflowOutcome`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        put_text(&mut out, 1, self.outcome_id);
        put_text(&mut out, 2, self.event_id);
        put_text(&mut out, 3, self.company_id);
        put_text(&mut out, 4, self.integration_id);
        put_text(&mut out, 5, self.workflow_id);
        put_number(&mut out, 6, self.kind as i32);
        put_text(&mut out, 7, self.object_type);
        put_text(&mut out, 8, self.record_id);
        if let Some(owner) = &self.owner {
            owner.write(&mut out, 9);
        }
        put_text(&mut out, 10, self.activity_type);
        put_text(&mut out, 11, self.value);
        for (number, at) in [(12, &self.activity_date), (13, &self.occurred_at)] {
            if let Some(at) = at {
                put_len_header(&mut out, number, timestamp_len(at));
                write_timestamp(&mut out, at);
            }
        }
        put_number(&mut out, 14, self.crm as i32);
        out
    }

    fn encoded_len(&self) -> usize {
        let texts = [
            self.outcome_id,
            self.event_id,
            self.company_id,
            self.integration_id,
            self.workflow_id,
            self.object_type,
            self.record_id,
            self.activity_type,
            self.value,
        ];
        let times = [self.activity_date, self.occurred_at];
        texts.iter().map(|t| text_len(t)).sum::<usize>()
            + number_len(self.kind as i32)
            + number_len(self.crm as i32)
            + self.owner.map_or(0, |o| with_length(o.payload_len()))
            + times
                .iter()
                .flatten()
                .map(|at| with_length(timestamp_len(at)))
                .sum::<usize>()
    }
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
