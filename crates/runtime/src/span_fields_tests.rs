use std::io;
use std::sync::{Arc, Mutex};

use tracing_subscriber::layer::SubscriberExt;

use super::SpanJsonFields;

#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The `span` object of the one JSON line logged by `log` under the services' JSON format.
fn logged_span(log: impl FnOnce()) -> serde_json::Value {
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .fmt_fields(SpanJsonFields)
            .event_format(
                tracing_subscriber::fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .with_writer(move || writer.clone()),
    );
    tracing::subscriber::with_default(subscriber, log);
    let bytes = lines.0.lock().unwrap().clone();
    let text = String::from_utf8(bytes).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    line["span"].clone()
}

#[test]
fn a_spans_fields_reach_its_log_lines_as_json_values() {
    let span = logged_span(|| {
        let _entered = tracing::info_span!(
            "consume",
            otel.name = "process crm.events.v1",
            otel.kind = "consumer",
            messaging.kafka.offset = 42_i64,
            messaging.batch.message_count = 7_u64,
            retried = true,
            ratio = 0.5,
            not_a_number = f64::NAN,
            key = "a \"quoted\"\\key\nwith\tcontrol \u{1} and ünïcode",
            r#type = "raw",
            reason = ?Some("debug"),
        )
        .entered();
        tracing::warn!("inside");
    });
    assert_eq!(span["name"], "consume");
    assert_eq!(span["messaging.kafka.offset"], 42);
    assert_eq!(span["messaging.batch.message_count"], 7);
    assert_eq!(span["retried"], true);
    assert_eq!(span["ratio"], 0.5);
    assert_eq!(span["not_a_number"], serde_json::Value::Null);
    assert_eq!(
        span["key"],
        "a \"quoted\"\\key\nwith\tcontrol \u{1} and ünïcode"
    );
    assert_eq!(span["type"], "raw");
    assert_eq!(span["reason"], "Some(\"debug\")");
    assert!(
        span.get("otel.name").is_none() && span.get("otel.kind").is_none(),
        "the exporter's own fields stay out of logs: {span}"
    );
}

#[test]
fn fields_recorded_after_creation_join_the_object() {
    let span = logged_span(|| {
        let span = tracing::info_span!(
            "send",
            otel.status_code = tracing::field::Empty,
            partition = tracing::field::Empty,
            offset = tracing::field::Empty,
        );
        span.record("partition", "3");
        span.record("otel.status_code", "ERROR");
        span.record("offset", 9_i64);
        let _entered = span.entered();
        tracing::warn!("inside");
    });
    assert_eq!(span["partition"], "3");
    assert_eq!(span["offset"], 9);
    assert_eq!(span["name"], "send");
}

#[test]
fn a_span_formatted_while_the_buffer_is_in_use_keeps_every_field() {
    // As when a field's `Debug` creates a span while the global subscriber writes another's.
    let span = super::SCRATCH.with(|scratch| {
        let _in_use = scratch.borrow_mut();
        logged_span(|| {
            let _entered = tracing::info_span!("outer", first = "a", last = 7_i64).entered();
            tracing::warn!("inside");
        })
    });
    assert_eq!(span["first"], "a");
    assert_eq!(span["last"], 7);
}

#[test]
fn a_huge_field_comes_back_whole_and_the_next_span_is_unaffected() {
    let big = logged_span(|| {
        let _entered = tracing::info_span!("big", size = "y".repeat(5000)).entered();
        tracing::warn!("inside");
    });
    assert_eq!(big["size"].as_str().map(str::len), Some(5000));
    let after = logged_span(|| {
        let _entered = tracing::info_span!("after", n = 1_i64).entered();
        tracing::warn!("inside");
    });
    assert_eq!(after["n"], 1);
    assert!(after.get("size").is_none(), "{after}");
}

#[test]
fn the_word_at_a_time_check_finds_what_a_byte_at_a_time_check_finds() {
    let naive = |t: &str| t.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    let specials = [
        '"', '\\', '\n', '\u{0}', '\u{1f}', ' ', '!', '#', '[', ']', 'é', '€', '\u{7f}',
    ];
    for len in 0..20 {
        for at in 0..len.max(1) {
            for special in specials {
                let text: String = (0..len)
                    .map(|i| if i == at { special } else { 'a' })
                    .collect();
                assert_eq!(super::needs_escaping(&text), naive(&text), "{text:?}");
            }
        }
    }
    // Every byte value next to every other, in a word, through the UTF-8 strings they make.
    for b in 0u8..128 {
        let text = format!("0123456{}89abcdef", b as char);
        assert_eq!(super::needs_escaping(&text), naive(&text), "{b}");
    }
}
