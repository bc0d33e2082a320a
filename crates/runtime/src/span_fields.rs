//! Span fields as one JSON object, written straight into the span's string.
//!
//! The log layer formats a span's fields when the span is created, whether or not a line is
//! ever logged inside it. tracing-subscriber's `JsonFields` builds a map of JSON values per span
//! and serializes it again: for a consumer's span per message that cost more than the rest of
//! its tracing together. The JSON line format reads these fields back when a line is logged
//! inside the span, so they stay one JSON object. `otel.*` fields only steer the trace
//! exporter (the span's name, kind and status) and are left out of logs.

use std::cell::RefCell;
use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::span::Record;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// Formats span fields as a JSON object for the JSON log format.
#[derive(Debug, Default, Clone, Copy)]
pub struct SpanJsonFields;

const MAX_KEPT_SCRATCH: usize = 4096;

thread_local! {
    /// Where a new span's fields are written before they are copied to the span's string.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Writes a JSON object of `fields` to `out`.
fn write_object<R: RecordFields>(out: &mut Writer<'_>, fields: R) -> fmt::Result {
    out.write_char('{')?;
    let mut object = ObjectWriter::new(out, true);
    fields.record(&mut object);
    object.result?;
    out.write_char('}')
}

impl<'w> FormatFields<'w> for SpanJsonFields {
    /// The span's string starts empty: written into directly it grew (and was copied) half a
    /// dozen times per span. Written in a reused buffer first, it is allocated once.
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                scratch.clear();
                write_object(&mut Writer::new(&mut *scratch), fields)?;
                let written = writer.write_str(&scratch);
                // One span with a huge field does not keep its size for the thread's life.
                if scratch.capacity() > MAX_KEPT_SCRATCH {
                    *scratch = String::new();
                }
                written
            }
            // A field's `Debug` that creates a span while its own fields are being written.
            Err(_) => write_object(&mut writer, fields),
        })
    }

    /// Fields recorded after the span was created join its object.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &Record<'_>,
    ) -> fmt::Result {
        if !current.fields.ends_with('}') {
            current.fields.clear();
            return self.format_fields(current.as_writer(), fields);
        }
        current.fields.pop();
        let first = current.fields == "{";
        let mut writer = current.as_writer();
        let mut object = ObjectWriter::new(&mut writer, first);
        fields.record(&mut object);
        let result = object.result;
        current.fields.push('}');
        result
    }
}

/// Writes `"name":value` pairs, comma-separated, keeping the first error.
struct ObjectWriter<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl<'a, 'w> ObjectWriter<'a, 'w> {
    fn new(out: &'a mut Writer<'w>, first: bool) -> Self {
        ObjectWriter {
            out,
            first,
            result: Ok(()),
        }
    }

    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'w>) -> fmt::Result) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let separator = if self.first { "\"" } else { ",\"" };
        self.first = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| escape(self.out, name))
            .and_then(|()| self.out.write_str("\":"))
            .and_then(|()| value(self.out));
    }
}

impl Visit for ObjectWriter<'_, '_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinities; serde_json writes them as null too.
        if value.is_finite() {
            self.entry(field, |out| write!(out, "{value}"));
        } else {
            self.entry(field, |out| out.write_str("null"));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| quoted(out, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.entry(field, |out| {
            out.write_char('[')?;
            for (i, byte) in value.iter().enumerate() {
                let separator = if i == 0 { "" } else { "," };
                write!(out, "{separator}{byte}")?;
            }
            out.write_char(']')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaping(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

fn quoted(out: &mut impl Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    escape(out, text)?;
    out.write_char('"')
}

/// Writes `text` as the inside of a JSON string.
fn escape(out: &mut impl Write, text: &str) -> fmt::Result {
    // Most values (ids, topics, numbers) need no escaping: one pass to find out, one write.
    if !needs_escaping(text) {
        return out.write_str(text);
    }
    let mut clean_from = 0;
    for (i, byte) in text.bytes().enumerate() {
        let escaped = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.write_str(&text[clean_from..i])?;
        if escaped.is_empty() {
            write!(out, "\\u{byte:04x}")?;
        } else {
            out.write_str(escaped)?;
        }
        clean_from = i + 1;
    }
    out.write_str(&text[clean_from..])
}

/// Whether `text` has a quote, a backslash or a control character, looked for eight bytes at a
/// time: a byte at a time, this check was over a third of formatting a consumer's span fields.
fn needs_escaping(text: &str) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGHS: u64 = ONES * 0x80;
    // Whether a byte of `x` is under `n` (n ≤ 128): exact as to whether there is one.
    let has_less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGHS != 0;
    let has_byte = |x: u64, b: u8| has_less(x ^ (ONES * u64::from(b)), 1);
    let mut chunks = text.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        if has_less(x, 0x20) || has_byte(x, b'"') || has_byte(x, b'\\') {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Escapes what a `Debug` implementation writes, piece by piece.
struct Escaping<'a, W>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        escape(self.0, text)
    }
}

#[cfg(test)]
#[path = "span_fields_tests.rs"]
mod tests;
