//! Dead letters: a message that can never be processed goes to `<topic>.dlq` with its original
//! key, bytes and headers, plus headers saying why and where it came from.

use crate::headers;
use crate::message::Incoming;
use crate::produce::{OutgoingMessage, PublishError, Publisher};

/// The largest dead letter written: what a producer with librdkafka's default
/// `message.max.bytes` takes. A producer with compression and a larger limit can put a message
/// of several megabytes on a topic (the broker limits the compressed batch); its dead letter,
/// produced whole, would be refused, and the batch holding it retried for ever.
const MAX_LETTER_BYTES: usize = 1_000_000;
/// Room for the record's own framing around its key, headers and bytes.
const FRAMING_BYTES: usize = 1_024;
/// The most of the origin's own headers a dead letter keeps.
const MAX_ORIGIN_HEADER_BYTES: usize = 64 * 1024;
/// The longest detail a dead letter carries.
const MAX_DETAIL_BYTES: usize = 4 * 1024;

/// Why a message is dead, as a stable machine-readable code plus a human detail.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: &'static str,
    pub detail: String,
}

pub async fn publish_dead_letter(
    publisher: &Publisher,
    service: &str,
    origin: &Incoming<'_>,
    letter: &DeadLetter,
) -> Result<(), PublishError> {
    publisher
        .publish(&dead_letter_message(service, origin, letter))
        .await?;
    metrics::counter!(crate::metric_definitions::DEAD_LETTERS, "topic" => origin.topic.to_owned(), "reason" => letter.reason)
        .increment(1);
    Ok(())
}

/// The dead letter of `origin`, for writers that send it themselves (e.g. inside a Kafka
/// transaction, see `transactional`).
pub fn dead_letter_message(
    service: &str,
    origin: &Incoming<'_>,
    letter: &DeadLetter,
) -> OutgoingMessage {
    let topic = crm_sync_runtime::settings::TopicSettings::dlq_of(origin.topic);
    let event_id = headers::find(&origin.headers, headers::EVENT_ID)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}/{}/{}", origin.topic, origin.partition, origin.offset));
    // The origin's own headers, as far as they leave room for the message: a foreign producer
    // may send any number of any size.
    let mut kept = 0;
    let mut extra: Vec<(String, String)> = origin
        .headers
        .iter()
        .filter(|(k, _)| k != headers::EVENT_ID && k != headers::TRACEPARENT)
        .filter(|(k, v)| {
            kept += k.len() + v.len();
            kept <= MAX_ORIGIN_HEADER_BYTES
        })
        .cloned()
        .collect();
    extra.extend([
        (headers::DLQ_REASON.to_owned(), letter.reason.to_owned()),
        (
            headers::DLQ_DETAIL.to_owned(),
            cut(&letter.detail, MAX_DETAIL_BYTES).to_owned(),
        ),
        (
            headers::DLQ_ORIGIN_TOPIC.to_owned(),
            origin.topic.to_owned(),
        ),
        (
            headers::DLQ_ORIGIN_PARTITION.to_owned(),
            origin.partition.to_string(),
        ),
        (
            headers::DLQ_ORIGIN_OFFSET.to_owned(),
            origin.offset.to_string(),
        ),
        (headers::DLQ_SERVICE.to_owned(), service.to_owned()),
        (
            headers::DLQ_TIME.to_owned(),
            chrono::Utc::now().to_rfc3339(),
        ),
    ]);
    // Keys are UTF-8 in every crm-sync topic; a foreign one is kept as lossy text.
    let key: std::sync::Arc<str> = String::from_utf8_lossy(origin.key.unwrap_or_default()).into();
    let mut payload = origin.payload.unwrap_or_default();
    if payload.len() > room_for_payload(&key, &event_id, &extra) {
        extra.push((
            headers::DLQ_TRUNCATED_FROM.to_owned(),
            payload.len().to_string(),
        ));
        payload = &payload[..room_for_payload(&key, &event_id, &extra).min(payload.len())];
    }
    OutgoingMessage {
        topic: topic.into(),
        key,
        payload: payload.to_vec(),
        event_id,
        headers: extra,
        partition: None,
    }
}

/// The bytes of the original message a dead letter with this key and these headers can carry.
fn room_for_payload(key: &str, event_id: &str, extra: &[(String, String)]) -> usize {
    let headers: usize = extra.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
    let event_id_header = headers::EVENT_ID.len() + event_id.len() + 16;
    // The trace context the writer adds.
    let trace = 256;
    MAX_LETTER_BYTES.saturating_sub(FRAMING_BYTES + key.len() + headers + event_id_header + trace)
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin<'a>(payload: &'a [u8], headers: Vec<(String, String)>) -> Incoming<'a> {
        Incoming {
            topic: "crm.events.v1",
            partition: 3,
            offset: 42,
            key: Some(b"i/Opportunity/006".as_slice()),
            payload: Some(payload),
            headers,
        }
    }

    fn letter(detail: String) -> DeadLetter {
        DeadLetter {
            reason: "undecodable",
            detail,
        }
    }

    fn size(m: &OutgoingMessage) -> usize {
        m.key.len()
            + m.payload.len()
            + m.event_id.len()
            + m.headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }

    #[test]
    fn a_letter_keeps_the_message_whole_while_it_fits() {
        let bytes = vec![7_u8; 900_000];
        let m = dead_letter_message("svc", &origin(&bytes, Vec::new()), &letter("bad".into()));
        assert_eq!(m.payload, bytes);
        assert!(headers::find(&m.headers, headers::DLQ_TRUNCATED_FROM).is_none());
        assert_eq!(m.topic.as_ref(), "crm.events.v1.dlq");
    }

    #[test]
    fn a_message_too_large_to_write_again_is_cut_and_says_so() {
        let bytes = vec![7_u8; 3_000_000];
        let m = dead_letter_message("svc", &origin(&bytes, Vec::new()), &letter("bad".into()));
        assert!(size(&m) + 1_024 <= MAX_LETTER_BYTES, "{}", size(&m));
        assert!(m.payload.len() > 990_000);
        assert!(bytes.starts_with(&m.payload));
        assert_eq!(
            headers::find(&m.headers, headers::DLQ_TRUNCATED_FROM),
            Some("3000000")
        );
    }

    #[test]
    fn huge_headers_and_details_leave_room_for_the_letter() {
        let bytes = vec![7_u8; 2_000_000];
        let foreign: Vec<(String, String)> = (0..40)
            .map(|i| (format!("h{i}"), "v".repeat(100_000)))
            .collect();
        let detail = "é".repeat(1_000_000);
        let m = dead_letter_message("svc", &origin(&bytes, foreign), &letter(detail));
        assert!(size(&m) + 1_024 <= MAX_LETTER_BYTES, "{}", size(&m));
        let detail = headers::find(&m.headers, headers::DLQ_DETAIL).unwrap();
        assert!(detail.len() <= MAX_DETAIL_BYTES && detail.starts_with('é'));
        assert!(m.headers.iter().filter(|(k, _)| k.starts_with('h')).count() < 40);
        assert_eq!(
            headers::find(&m.headers, headers::DLQ_REASON),
            Some("undecodable")
        );
    }
}
