//! An event's fields read where its bytes hold them.
//!
//! Decoding a `CrmEvent` builds an owned string for every field's name and value and an
//! ordered map of them; the evaluator then compares each value with the record's and copies
//! the few that changed into the record's state. Over a 25-field event that was a tenth of the
//! evaluator's instructions. [`decode_event`] leaves the fields in the message's bytes, as
//! names and values borrowed from them, and decodes the rest of the event with prost as usual
//! (so a field added to `CrmEvent` needs nothing here).
//!
//! The fields come out sorted by name; of a name sent twice the last one counts, as protobuf's
//! map semantics have it.

use prost::Message;

use crate::v1::field_value::Kind;
use crate::v1::{CrmEvent, FieldValue};

/// `CrmEvent.fields`' field number.
const FIELDS: u32 = 7;

/// A field's value as the event's bytes hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueRef<'a> {
    /// No kind set (a `FieldValue` with nothing in it).
    Unset,
    Null(bool),
    Text(&'a str),
    Number(&'a str),
    Boolean(bool),
}

impl<'a> ValueRef<'a> {
    pub fn of(value: &'a FieldValue) -> Self {
        match &value.kind {
            None => ValueRef::Unset,
            Some(Kind::NullValue(b)) => ValueRef::Null(*b),
            Some(Kind::Text(t)) => ValueRef::Text(t),
            Some(Kind::Number(n)) => ValueRef::Number(n),
            Some(Kind::Boolean(b)) => ValueRef::Boolean(*b),
        }
    }

    pub fn to_value(self) -> FieldValue {
        let kind = match self {
            ValueRef::Unset => None,
            ValueRef::Null(b) => Some(Kind::NullValue(b)),
            ValueRef::Text(t) => Some(Kind::Text(t.to_owned())),
            ValueRef::Number(n) => Some(Kind::Number(n.to_owned())),
            ValueRef::Boolean(b) => Some(Kind::Boolean(b)),
        };
        FieldValue { kind }
    }

    /// True when `value` holds this same value.
    pub fn is(self, value: &FieldValue) -> bool {
        self == ValueRef::of(value)
    }
}

/// A field's name and value.
pub type FieldRef<'a> = (&'a str, ValueRef<'a>);

/// An event whose fields stayed in its bytes: `event.fields` is empty, `fields` holds them.
#[derive(Debug)]
pub struct EventView<'a> {
    pub event: CrmEvent,
    pub fields: Vec<FieldRef<'a>>,
}

/// What is wrong with an event's bytes.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("{0}")]
    Decode(#[from] prost::DecodeError),
    #[error("malformed protobuf: {0}")]
    Malformed(&'static str),
}

/// Decodes an event, leaving its fields in `bytes` (see the module's documentation).
pub fn decode_event(bytes: &[u8]) -> Result<EventView<'_>, ViewError> {
    let mut rest = Vec::with_capacity(256);
    let mut fields = Vec::with_capacity(32);
    let mut input = bytes;
    while !input.is_empty() {
        let start = input;
        let (number, wire) = key(&mut input)?;
        let payload = skip(number, wire, &mut input)?;
        match payload {
            Some(entry) if number == FIELDS => fields.push(field(entry)?),
            // Everything else, fields sent with another wire type included (prost refuses
            // those as it should), is decoded by prost.
            _ => rest.extend_from_slice(&start[..start.len() - input.len()]),
        }
    }
    let event = CrmEvent::decode(rest.as_slice())?;
    if !fields.is_sorted_by(|a, b| a.0 < b.0) {
        fields.sort_by(|a, b| a.0.cmp(b.0));
        // The last of equal names counts: each is swapped forward into the one kept.
        fields.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
    }
    Ok(EventView { event, fields })
}

/// One map entry: its key (1) and value (2), each the last one sent; a value sent in parts is
/// merged, as protobuf merges a message field sent twice.
fn field(mut entry: &[u8]) -> Result<FieldRef<'_>, ViewError> {
    let (mut name, mut value) = ("", ValueRef::Unset);
    while !entry.is_empty() {
        let (number, wire) = key(&mut entry)?;
        match (number, skip(number, wire, &mut entry)?) {
            (1, Some(bytes)) => name = text(bytes)?,
            (2, Some(bytes)) => value = merge_value(value, bytes)?,
            (1 | 2, None) => return Err(ViewError::Malformed("map entry with a wrong wire type")),
            _ => {}
        }
    }
    Ok((name, value))
}

/// A `FieldValue` message merged into `value`: its last kind wins.
fn merge_value<'a>(
    mut value: ValueRef<'a>,
    mut bytes: &'a [u8],
) -> Result<ValueRef<'a>, ViewError> {
    while !bytes.is_empty() {
        let (number, wire) = key(&mut bytes)?;
        let start = bytes;
        let payload = skip(number, wire, &mut bytes)?;
        value = match (number, wire, payload) {
            (1, VARINT, _) => ValueRef::Null(varint(&mut &start[..])? != 0),
            (4, VARINT, _) => ValueRef::Boolean(varint(&mut &start[..])? != 0),
            (2, _, Some(b)) => ValueRef::Text(text(b)?),
            (3, _, Some(b)) => ValueRef::Number(text(b)?),
            (1..=4, _, _) => {
                return Err(ViewError::Malformed("field value with a wrong wire type"));
            }
            _ => value,
        };
    }
    Ok(value)
}

fn text(bytes: &[u8]) -> Result<&str, ViewError> {
    std::str::from_utf8(bytes).map_err(|_| ViewError::Malformed("a string that is not UTF-8"))
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;
/// How deep groups may nest, as deep as prost lets messages nest.
const GROUP_DEPTH: usize = 100;

fn key(input: &mut &[u8]) -> Result<(u32, u8), ViewError> {
    let key = varint(input)?;
    let number = u32::try_from(key >> 3).map_err(|_| ViewError::Malformed("field number"))?;
    if number == 0 {
        return Err(ViewError::Malformed("field number 0"));
    }
    Ok((number, (key & 7) as u8))
}

/// Moves past field `number`'s value of `wire` type; a length-delimited value's bytes.
fn skip<'a>(number: u32, wire: u8, input: &mut &'a [u8]) -> Result<Option<&'a [u8]>, ViewError> {
    match wire {
        START_GROUP => {
            skip_group(number, input)?;
            Ok(None)
        }
        _ => skip_value(wire, input),
    }
}

/// [`skip`] for everything but groups: kept apart so that the common path does not recurse
/// (and stays inlined).
fn skip_value<'a>(wire: u8, input: &mut &'a [u8]) -> Result<Option<&'a [u8]>, ViewError> {
    let width = match wire {
        VARINT => {
            varint(input)?;
            return Ok(None);
        }
        FIXED64 => 8,
        FIXED32 => 4,
        LEN => usize::try_from(varint(input)?).map_err(|_| ViewError::Malformed("length"))?,
        _ => return Err(ViewError::Malformed("an end of group without its start")),
    };
    if input.len() < width {
        return Err(ViewError::Malformed("truncated"));
    }
    let (value, rest) = input.split_at(width);
    *input = rest;
    Ok((wire == LEN).then_some(value))
}

/// Moves past a group (a proto2 encoding no writer of these messages uses, skipped as prost
/// skips it) up to its end, which must name the same field.
#[cold]
fn skip_group(number: u32, input: &mut &[u8]) -> Result<(), ViewError> {
    let mut open = vec![number];
    while let Some(&inner) = open.last() {
        let (number, wire) = key(input)?;
        match wire {
            START_GROUP if open.len() < GROUP_DEPTH => open.push(number),
            START_GROUP => return Err(ViewError::Malformed("groups nested too deep")),
            END_GROUP if number == inner => {
                open.pop();
            }
            END_GROUP => return Err(ViewError::Malformed("a group ended by another field")),
            _ => {
                skip_value(wire, input)?;
            }
        }
    }
    Ok(())
}

fn varint(input: &mut &[u8]) -> Result<u64, ViewError> {
    // Tags and lengths of a record's fields are almost always one byte.
    if let Some((&byte, rest)) = input.split_first()
        && byte < 0x80
    {
        *input = rest;
        return Ok(u64::from(byte));
    }
    let mut value = 0u64;
    for (i, byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(ViewError::Malformed("truncated or overlong varint"))
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
