//! The protobuf wire format, as far as reading messages in place and writing them back needs it.

use prost::encoding::encoded_len_varint;

use super::ViewError;
use crate::Timestamp;

pub(super) const VARINT: u8 = 0;
const FIXED64: u8 = 1;
pub(super) const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;
/// How deep groups may nest, as deep as prost lets messages nest.
const GROUP_DEPTH: usize = 100;

pub(super) fn key(input: &mut &[u8]) -> Result<(u32, u8), ViewError> {
    let key = varint(input)?;
    let number = u32::try_from(key >> 3).map_err(|_| ViewError::Malformed("field number"))?;
    if number == 0 {
        return Err(ViewError::Malformed("field number 0"));
    }
    Ok((number, (key & 7) as u8))
}

/// Moves past field `number`'s value of `wire` type; a length-delimited value's bytes.
pub(super) fn skip<'a>(
    number: u32,
    wire: u8,
    input: &mut &'a [u8],
) -> Result<Option<&'a [u8]>, ViewError> {
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
#[inline]
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

pub(super) fn varint(input: &mut &[u8]) -> Result<u64, ViewError> {
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

pub(super) fn text(bytes: &[u8]) -> Result<&str, ViewError> {
    std::str::from_utf8(bytes).map_err(|_| ViewError::Malformed("a string that is not UTF-8"))
}

/// Writes a varint; tags, lengths and most numbers here take one byte, which skips prost's
/// loop (a third of writing a record's state). Inlined: writing a state calls it 150 times, and
/// the call cost more than the byte.
#[inline]
pub(super) fn put_varint(value: u64, out: &mut Vec<u8>) {
    if value < 0x80 {
        out.push(value as u8);
    } else {
        prost::encoding::encode_varint(value, out);
    }
}

/// A length-delimited field's whole size (its one-byte tag included) for a payload of `len`.
pub(super) fn with_length(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// A `Timestamp` message's length, as prost encodes it: each field only when it is not zero.
pub(super) fn timestamp_len(at: &Timestamp) -> usize {
    let field = |v: i64| {
        if v == 0 {
            0
        } else {
            1 + encoded_len_varint(v as u64)
        }
    };
    field(at.seconds) + field(i64::from(at.nanos))
}

/// A `Timestamp` message, byte for byte as prost writes it (negative values as ten-byte
/// varints of their two's complement).
pub(super) fn write_timestamp(out: &mut Vec<u8>, at: &Timestamp) {
    for (number, v) in [(1u8, at.seconds), (2, i64::from(at.nanos))] {
        if v != 0 {
            out.push((number << 3) | VARINT);
            put_varint(v as u64, out);
        }
    }
}

/// A string field's whole size, nothing when it is empty (proto3 leaves defaults out).
pub(super) fn text_len(text: &str) -> usize {
    if text.is_empty() {
        0
    } else {
        with_length(text.len())
    }
}

/// A string field, left out when empty (proto3 leaves defaults out).
#[inline]
pub(super) fn put_text(out: &mut Vec<u8>, number: u32, text: &str) {
    if !text.is_empty() {
        put_len_header(out, number, text.len());
        out.extend_from_slice(text.as_bytes());
    }
}

/// A length-delimited field's tag and length; its payload follows.
/// (Every field number written here takes one byte of tag.) Always inlined: left to itself the
/// compiler kept it out of line, at 35 instructions a call and 125 calls per state written.
#[inline(always)]
pub(super) fn put_len_header(out: &mut Vec<u8>, number: u32, len: usize) {
    out.push((number << 3) as u8 | LEN);
    put_varint(len as u64, out);
}
