//! A record's stored state read where its bytes hold it, and written back.
//!
//! Decoding a `RecordState` built an owned name and value for every field the record ever
//! showed, and an ordered map of them, on every event, of which the merge then changes a few.
//! [`decode_state`] leaves the fields in the stored bytes; [`encode_state`] writes a state back
//! from fields borrowed wherever they are (the stored state, the event), without owning them.

use prost::Message;

use super::wire::{
    VARINT, key, put_len_header, put_text, skip, text_len, timestamp_len, varint, with_length,
    write_timestamp,
};
use super::{Texts, ValueRef, ViewError, map_entry, merge_value, sort_last_wins, split};
use crate::Timestamp;
use crate::v1::RecordState;

/// `RecordState.fields`' field number.
const FIELDS: u32 = 5;

/// A `KnownField` as the state's bytes hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KnownRef<'a> {
    pub value: Option<ValueRef<'a>>,
    pub set_at: Option<Timestamp>,
}

/// A known field's name and what is known of it.
pub type KnownFieldRef<'a> = (&'a str, KnownRef<'a>);

/// A record state whose fields stayed in its bytes: `state.fields` is empty, `fields` holds
/// them, sorted by name.
#[derive(Debug, Clone)]
pub struct StateView<'a> {
    pub state: RecordState,
    pub fields: Vec<KnownFieldRef<'a>>,
}

/// Decodes a record's state, leaving its fields in `bytes`.
pub fn decode_state(bytes: &[u8]) -> Result<StateView<'_>, ViewError> {
    let mut fields = Vec::with_capacity(32);
    let state = split(bytes, &[FIELDS], |_, entry| {
        // A stored field's time is a varint of non-ASCII bytes: the entry as a whole is not
        // UTF-8, so each string is checked on its own.
        fields.push(map_entry(
            entry,
            Texts::EACH,
            KnownRef::default(),
            merge_known,
        )?);
        Ok(())
    })?;
    sort_last_wins(&mut fields);
    Ok(StateView { state, fields })
}

/// A `KnownField` message merged into `known`, as prost merges a message sent in parts.
fn merge_known<'a>(
    mut known: KnownRef<'a>,
    mut bytes: &'a [u8],
) -> Result<KnownRef<'a>, ViewError> {
    while !bytes.is_empty() {
        let (number, wire) = key(&mut bytes)?;
        match (number, skip(number, wire, &mut bytes)?) {
            (1, Some(b)) => {
                let value = known.value.unwrap_or(ValueRef::Unset);
                known.value = Some(merge_value(value, b, Texts::EACH)?);
            }
            (2, Some(b)) => {
                known.set_at = Some(merge_timestamp(known.set_at.unwrap_or_default(), b)?);
            }
            (1 | 2, None) => {
                return Err(ViewError::Malformed("known field with a wrong wire type"));
            }
            _ => {}
        }
    }
    Ok(known)
}

fn merge_timestamp(mut at: Timestamp, mut bytes: &[u8]) -> Result<Timestamp, ViewError> {
    while !bytes.is_empty() {
        let (number, wire) = key(&mut bytes)?;
        // Both are varints of signed integers, truncated as prost truncates them.
        match (number, wire) {
            (1, VARINT) => at.seconds = varint(&mut bytes)? as i64,
            (2, VARINT) => at.nanos = varint(&mut bytes)? as i32,
            (1 | 2, _) => return Err(ViewError::Malformed("timestamp with a wrong wire type")),
            _ => {
                skip(number, wire, &mut bytes)?;
            }
        }
    }
    Ok(at)
}

/// At least the length [`encode_state`] writes, without computing each field's length exactly:
/// a name, a value and the bytes around them (tags, lengths, a time) take at most this.
pub fn state_len_bound(state: &RecordState, fields: &[KnownFieldRef<'_>]) -> usize {
    let entries: usize = fields
        .iter()
        .map(|(name, known)| name.len() + known.value.map_or(0, ValueRef::text_len) + 32)
        .sum();
    state.encoded_len() + entries
}

/// `state` with `fields` as its fields (`state.fields` itself is expected empty: whatever it
/// holds is written too). The fields come after the rest of the state rather than in field
/// number order, which every protobuf decoder reads the same.
pub fn encode_state(state: &RecordState, fields: &[KnownFieldRef<'_>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(state_len_bound(state, fields));
    state.encode_raw(&mut out);
    let mut time = TimeField::default();
    for (name, known) in fields {
        write_entry(&mut out, name, known, &mut time);
    }
    out
}

/// The time field a `KnownField` was last written with, as bytes: a record's fields carry the
/// times of the few events that set them, and writing a time is two varints of four and five
/// bytes, so consecutive fields with the same time copy the bytes instead.
#[derive(Default)]
struct TimeField {
    at: Option<Timestamp>,
    bytes: Vec<u8>,
}

impl TimeField {
    /// `KnownField.set_at` (field 2) holding `at`, tag and length included.
    fn of(&mut self, at: &Timestamp) -> &[u8] {
        if self.at.as_ref() != Some(at) {
            self.bytes.clear();
            put_len_header(&mut self.bytes, 2, timestamp_len(at));
            write_timestamp(&mut self.bytes, at);
            self.at = Some(*at);
        }
        &self.bytes
    }
}

/// A map entry, as prost writes it: an empty name or an empty `KnownField` is left out.
fn write_entry(out: &mut Vec<u8>, name: &str, known: &KnownRef<'_>, time: &mut TimeField) {
    let time = known.set_at.map(|at| time.of(&at));
    let value_len = known.value.map(ValueRef::encoded_len);
    let known_len = value_len.map_or(0, with_length) + time.map_or(0, <[u8]>::len);
    let empty = *known == KnownRef::default();
    let entry_len = text_len(name) + if empty { 0 } else { with_length(known_len) };
    put_len_header(out, FIELDS, entry_len);
    put_text(out, 1, name);
    if empty {
        return;
    }
    put_len_header(out, 2, known_len);
    if let (Some(value), Some(len)) = (known.value, value_len) {
        put_len_header(out, 1, len);
        value.encode_raw(out);
    }
    if let Some(time) = time {
        out.extend_from_slice(time);
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
