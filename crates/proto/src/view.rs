//! Messages read where their bytes hold them.
//!
//! Decoding a `CrmEvent` builds an owned string for every field's name and value and an
//! ordered map of them; the evaluator then compares each value with the record's and copies
//! the few that changed into the record's state. Over a 25-field event that was a tenth of the
//! evaluator's instructions. [`decode_event`] leaves the fields in the message's bytes, as
//! names and values borrowed from them, and decodes the rest of the event with prost as usual
//! (so a field added to `CrmEvent` needs nothing here). A record's stored state is read the
//! same way ([`decode_state`]), and written back from such borrowed fields ([`encode_state`]);
//! an outcome is written from borrowed parts too ([`OutcomeRef`]).
//!
//! The fields come out sorted by name; of a name sent twice the last one counts, as protobuf's
//! map semantics have it.

use prost::Message;

use crate::v1::field_value::Kind;
use crate::v1::{CrmEvent, FieldValue};

mod outcome;
mod state;
mod wire;

pub use outcome::{CrmUserRef, OutcomeRef};
pub use state::{KnownFieldRef, KnownRef, StateView, decode_state, encode_state, state_len_bound};
use wire::{
    LEN, VARINT, key, put_len_header, put_text, put_varint, skip, text, text_len, varint,
    with_length,
};

/// `CrmEvent.fields`' field number.
const FIELDS: u32 = 7;
/// `CrmEvent.previous_fields`' field number.
const PREVIOUS_FIELDS: u32 = 8;

/// A field's value as a message's bytes hold it.
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

    /// The length of the text a value holds (none for the others).
    pub fn text_len(self) -> usize {
        match self {
            ValueRef::Text(t) | ValueRef::Number(t) => t.len(),
            _ => 0,
        }
    }

    /// The length of the `FieldValue` message holding this value, as prost encodes it.
    pub fn encoded_len(self) -> usize {
        match self {
            ValueRef::Unset => 0,
            ValueRef::Null(_) | ValueRef::Boolean(_) => 2,
            ValueRef::Text(t) | ValueRef::Number(t) => {
                1 + prost::encoding::encoded_len_varint(t.len() as u64) + t.len()
            }
        }
    }

    /// Writes the `FieldValue` message holding this value, byte for byte as prost does.
    pub fn encode_raw(self, out: &mut Vec<u8>) {
        let (number, wire) = match self {
            ValueRef::Unset => return,
            ValueRef::Null(_) => (1, VARINT),
            ValueRef::Text(_) => (2, LEN),
            ValueRef::Number(_) => (3, LEN),
            ValueRef::Boolean(_) => (4, VARINT),
        };
        out.push((number << 3) | wire);
        match self {
            ValueRef::Null(b) | ValueRef::Boolean(b) => out.push(u8::from(b)),
            ValueRef::Text(t) | ValueRef::Number(t) => {
                put_varint(t.len() as u64, out);
                out.extend_from_slice(t.as_bytes());
            }
            ValueRef::Unset => {}
        }
    }
}

/// A field's name and value.
pub type FieldRef<'a> = (&'a str, ValueRef<'a>);

/// One entry of a `map<string, FieldValue>` field numbered `number` (under 16: a one-byte
/// tag), byte for byte as prost writes it: an empty name or an unset value is left out.
pub fn put_field_entry(out: &mut Vec<u8>, number: u32, name: &str, value: ValueRef<'_>) {
    debug_assert!(number < 16, "field {number} takes more than a byte of tag");
    let value_len = value.encoded_len();
    let value_field = if value == ValueRef::Unset {
        0
    } else {
        with_length(value_len)
    };
    put_len_header(out, number, text_len(name) + value_field);
    put_text(out, 1, name);
    if value != ValueRef::Unset {
        put_len_header(out, 2, value_len);
        value.encode_raw(out);
    }
}

/// An event whose fields stayed in its bytes: `event.fields` and `event.previous_fields` are
/// empty, `fields` and `previous` hold them, each in name order.
#[derive(Debug)]
pub struct EventView<'a> {
    pub event: CrmEvent,
    pub fields: Vec<FieldRef<'a>>,
    pub previous: Vec<FieldRef<'a>>,
}

impl<'a> EventView<'a> {
    /// The previous value the event sent for `name`.
    pub fn previous(&self, name: &str) -> Option<ValueRef<'a>> {
        previous_value(&self.previous, name)
    }
}

/// The value `previous` (an [`EventView`]'s, in name order) holds for `name`.
pub fn previous_value<'a>(previous: &[FieldRef<'a>], name: &str) -> Option<ValueRef<'a>> {
    let at = previous.binary_search_by(|(n, _)| (*n).cmp(name)).ok()?;
    Some(previous[at].1)
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
    let mut fields = Vec::with_capacity(32);
    let mut previous = Vec::new();
    let event = split(bytes, &[FIELDS, PREVIOUS_FIELDS], |number, entry| {
        let entries = if number == FIELDS {
            &mut fields
        } else {
            &mut previous
        };
        let texts = Texts::of(entry);
        let merge = |value, bytes| merge_value(value, bytes, texts);
        entries.push(map_entry(entry, texts, ValueRef::Unset, merge)?);
        Ok(())
    })?;
    sort_last_wins(&mut fields);
    sort_last_wins(&mut previous);
    Ok(EventView {
        event,
        fields,
        previous,
    })
}

/// Walks a message's bytes: each length-delimited field of `numbers` goes to `entry`, and
/// prost decodes everything else, fields sent with another wire type included (it refuses
/// those as it should).
pub(crate) fn split<'a, M: Message + Default>(
    bytes: &'a [u8],
    numbers: &[u32],
    mut entry: impl FnMut(u32, &'a [u8]) -> Result<(), ViewError>,
) -> Result<M, ViewError> {
    let mut rest = Vec::with_capacity(256);
    let mut input = bytes;
    while !input.is_empty() {
        let start = input;
        let (n, wire) = key(&mut input)?;
        match skip(n, wire, &mut input)? {
            Some(payload) if numbers.contains(&n) => entry(n, payload)?,
            _ => rest.extend_from_slice(&start[..start.len() - input.len()]),
        }
    }
    Ok(M::decode(rest.as_slice())?)
}

/// Map entries sorted by name; of a name sent twice the last one counts, as protobuf's map
/// semantics have it.
pub(crate) fn sort_last_wins<T>(entries: &mut Vec<(&str, T)>) {
    if entries.is_sorted_by(|a, b| a.0 < b.0) {
        return;
    }
    // A stable sort keeps equal names in the order sent; each later one is then swapped
    // forward into the one kept.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
}

/// Where the strings in a message's bytes are read as text. An event's map entry is its name
/// and value between a few bytes of tags and lengths, which are ASCII whenever the strings are
/// shorter than 128 bytes: the entry is then checked as UTF-8 once and its strings are slices of
/// it (two char boundaries checked), where checking each string on its own cost a hundred
/// instructions a string. Whatever is not such a slice is checked on its own, as before.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Texts<'a> {
    region: &'a [u8],
    whole: Option<&'a str>,
}

impl<'a> Texts<'a> {
    /// Every string checked on its own.
    pub(crate) const EACH: Texts<'static> = Texts {
        region: &[],
        whole: None,
    };

    pub(crate) fn of(region: &'a [u8]) -> Texts<'a> {
        Texts {
            region,
            whole: std::str::from_utf8(region).ok(),
        }
    }

    /// `bytes` (a part of the region, or not) as text.
    pub(crate) fn text(self, bytes: &'a [u8]) -> Result<&'a str, ViewError> {
        let start = bytes
            .as_ptr()
            .addr()
            .wrapping_sub(self.region.as_ptr().addr());
        let sliced = self.whole.and_then(|whole| {
            let end = start.checked_add(bytes.len())?;
            // The same memory as `bytes`: `whole` is `region` itself.
            whole.get(start..end)
        });
        match sliced {
            Some(text) => Ok(text),
            None => text(bytes),
        }
    }
}

/// One map entry: its key (1) and value (2), each the last one sent; a value sent in parts is
/// merged (by `merge` from `init`), as protobuf merges a message field sent twice.
pub(crate) fn map_entry<'a, T>(
    mut entry: &'a [u8],
    texts: Texts<'a>,
    init: T,
    merge: impl Fn(T, &'a [u8]) -> Result<T, ViewError>,
) -> Result<(&'a str, T), ViewError> {
    let (mut name, mut value) = ("", init);
    while !entry.is_empty() {
        let (number, wire) = key(&mut entry)?;
        match (number, skip(number, wire, &mut entry)?) {
            (1, Some(bytes)) => name = texts.text(bytes)?,
            (2, Some(bytes)) => value = merge(value, bytes)?,
            (1 | 2, None) => return Err(ViewError::Malformed("map entry with a wrong wire type")),
            _ => {}
        }
    }
    Ok((name, value))
}

/// A `FieldValue` message merged into `value`: its last kind wins.
#[inline]
pub(crate) fn merge_value<'a>(
    mut value: ValueRef<'a>,
    mut bytes: &'a [u8],
    texts: Texts<'a>,
) -> Result<ValueRef<'a>, ViewError> {
    while !bytes.is_empty() {
        let (number, wire) = key(&mut bytes)?;
        value = match (number, wire) {
            (1, VARINT) => ValueRef::Null(varint(&mut bytes)? != 0),
            (4, VARINT) => ValueRef::Boolean(varint(&mut bytes)? != 0),
            (2 | 3, LEN) => {
                let Some(b) = skip(number, wire, &mut bytes)? else {
                    return Err(ViewError::Malformed("field value with a wrong wire type"));
                };
                if number == 2 {
                    ValueRef::Text(texts.text(b)?)
                } else {
                    ValueRef::Number(texts.text(b)?)
                }
            }
            (1..=4, _) => {
                return Err(ViewError::Malformed("field value with a wrong wire type"));
            }
            _ => {
                skip(number, wire, &mut bytes)?;
                value
            }
        };
    }
    Ok(value)
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
