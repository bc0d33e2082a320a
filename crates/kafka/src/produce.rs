//! Publishing with delivery confirmation: a send returns only after Kafka acknowledged it.

use std::sync::Arc;
use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::util::Timeout;
use tracing::{Instrument, field};

use crate::clients::ServiceProducer as FutureProducer;
use crate::headers;

#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    /// Shared: a service writes many records to the same few topics, and often several records
    /// under one key (the evaluator: an event's outcomes and its record's state).
    pub topic: Arc<str>,
    pub key: Arc<str>,
    pub payload: Vec<u8>,
    pub event_id: String,
    /// Extra headers besides the event id and trace context.
    pub headers: Vec<(String, String)>,
    /// A partition chosen by the writer (a changelog co-partitioned with its input); None: by key.
    pub partition: Option<i32>,
}

#[derive(Debug, thiserror::Error)]
#[error("Kafka did not acknowledge a message for topic {topic}: {source}")]
pub struct PublishError {
    pub topic: String,
    #[source]
    pub source: rdkafka::error::KafkaError,
}

impl PublishError {
    /// librdkafka's error code, or the error's kind when it carries none (`error.type`).
    pub fn kind(&self) -> String {
        match self.source.rdkafka_error_code() {
            Some(code) => format!("{code:?}"),
            None => "kafka_error".to_owned(),
        }
    }
}

/// A `send {topic}` span as the OpenTelemetry messaging conventions describe it. The partition
/// and offset are recorded once Kafka acknowledged the message.
pub fn producer_span(m: &OutgoingMessage) -> tracing::Span {
    tracing::info_span!(
        "send",
        otel.name = format!("send {}", m.topic),
        otel.kind = "producer",
        otel.status_code = field::Empty,
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = &*m.topic,
        messaging.kafka.message.key = &*m.key,
        messaging.message.id = m.event_id.as_str(),
        messaging.message.body.size = m.payload.len(),
        messaging.destination.partition.id = field::Empty,
        messaging.kafka.offset = field::Empty,
        error.type = field::Empty,
    )
}

/// A message's Kafka headers: its event id, its own extra headers, then the trace context,
/// copied into librdkafka's headers straight from where they are.
pub fn record_headers(m: &OutgoingMessage, trace: &[(String, String)]) -> OwnedHeaders {
    let first = std::iter::once((headers::EVENT_ID, m.event_id.as_str()));
    let rest = m
        .headers
        .iter()
        .chain(trace)
        .map(|(k, v)| (k.as_str(), v.as_str()));
    first.chain(rest).fold(
        OwnedHeaders::new_with_capacity(1 + m.headers.len() + trace.len()),
        |all, (key, value)| {
            all.insert(Header {
                key,
                value: Some(value.as_bytes()),
            })
        },
    )
}

#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(producer: FutureProducer) -> Self {
        Self { producer }
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Sends every message and waits until Kafka acknowledged all of them. On error some may
    /// have been written: callers retry the whole set, which consumers deduplicate by event id.
    ///
    /// Each message gets a producer span (OpenTelemetry messaging conventions) under the current
    /// span, and its `traceparent` names that span, so a consumer's span becomes its child.
    pub async fn publish_all(&self, messages: &[OutgoingMessage]) -> Result<(), PublishError> {
        try_join_all(messages.iter().map(|m| {
            let span = producer_span(m);
            let trace = headers::trace_context_of(&span);
            let instrumented = span.clone();
            async move {
                let result = self.send(m, &trace).await;
                match &result {
                    Ok(delivery) => {
                        span.record(
                            "messaging.destination.partition.id",
                            delivery.partition.to_string(),
                        );
                        span.record("messaging.kafka.offset", delivery.offset);
                    }
                    Err(error) => {
                        span.record("otel.status_code", "ERROR");
                        span.record("error.type", error.kind());
                    }
                }
                result
            }
            .instrument(instrumented)
        }))
        .await?;
        Ok(())
    }

    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(message)).await
    }

    async fn send(
        &self,
        m: &OutgoingMessage,
        trace: &[(String, String)],
    ) -> Result<Delivery, PublishError> {
        let mut record = FutureRecord::to(&m.topic)
            .key(m.key.as_bytes())
            .payload(&m.payload)
            .headers(record_headers(m, trace));
        record.partition = m.partition;
        // The queue-full wait is bounded; the delivery itself is bounded by delivery.timeout.ms.
        let result = self
            .producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await;
        match result {
            Ok(delivery) => {
                metrics::counter!(crate::metric_definitions::MESSAGES_PRODUCED, "topic" => m.topic.to_string())
                    .increment(1);
                Ok(delivery)
            }
            Err((source, _)) => {
                metrics::counter!(crate::metric_definitions::PRODUCE_ERRORS, "topic" => m.topic.to_string())
                    .increment(1);
                Err(PublishError {
                    topic: m.topic.to_string(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

    #[test]
    fn a_record_carries_its_event_id_then_its_own_headers_then_the_trace_context() {
        let m = OutgoingMessage {
            topic: "t".into(),
            key: "k".into(),
            payload: Vec::new(),
            event_id: "evt-1".into(),
            headers: vec![("crm-sync-reason".into(), "bad".into())],
            partition: None,
        };
        let trace = [("traceparent".to_owned(), "00-abc-def-01".to_owned())];
        let h = record_headers(&m, &trace);
        let pairs: Vec<(&str, &[u8])> = h
            .iter()
            .map(|h| (h.key, h.value.unwrap_or_default()))
            .collect();
        assert_eq!(
            pairs,
            [
                (headers::EVENT_ID, b"evt-1".as_slice()),
                ("crm-sync-reason", b"bad".as_slice()),
                ("traceparent", b"00-abc-def-01".as_slice()),
            ]
        );
    }
}
