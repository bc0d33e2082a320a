//! Dead letters: a message that can never be processed goes to `<topic>.dlq` with its original
//! key, bytes and headers, plus headers saying why and where it came from.

use crate::headers;
use crate::message::Incoming;
use crate::produce::{OutgoingMessage, PublishError, Publisher};

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
    let mut extra: Vec<(String, String)> = origin
        .headers
        .iter()
        .filter(|(k, _)| k != headers::EVENT_ID && k != headers::TRACEPARENT)
        .cloned()
        .collect();
    extra.extend([
        (headers::DLQ_REASON.to_owned(), letter.reason.to_owned()),
        (headers::DLQ_DETAIL.to_owned(), letter.detail.clone()),
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
    OutgoingMessage {
        topic: topic.into(),
        // Keys are UTF-8 in every crm-sync topic; a foreign one is kept as lossy text.
        key: String::from_utf8_lossy(origin.key.unwrap_or_default()).into(),
        payload: origin.payload.map(<[u8]>::to_vec).unwrap_or_default(),
        event_id,
        headers: extra,
        partition: None,
    }
}
