//! Publishing with delivery confirmation: a send returns only after Kafka acknowledged it.

use std::time::Duration;

use futures::future::try_join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

use crate::headers;

#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub event_id: String,
    /// Extra headers besides the event id and trace context.
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
#[error("Kafka did not acknowledge a message for topic {topic}: {source}")]
pub struct PublishError {
    pub topic: String,
    #[source]
    pub source: rdkafka::error::KafkaError,
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
    pub async fn publish_all(&self, messages: &[OutgoingMessage]) -> Result<(), PublishError> {
        let trace = headers::current_trace_context();
        try_join_all(messages.iter().map(|m| self.send(m, &trace))).await?;
        Ok(())
    }

    pub async fn publish(&self, message: &OutgoingMessage) -> Result<(), PublishError> {
        self.publish_all(std::slice::from_ref(message)).await
    }

    async fn send(
        &self,
        m: &OutgoingMessage,
        trace: &[(String, String)],
    ) -> Result<(), PublishError> {
        let mut pairs = Vec::with_capacity(2 + m.headers.len() + trace.len());
        pairs.push((headers::EVENT_ID.to_owned(), m.event_id.clone()));
        pairs.extend(m.headers.iter().cloned());
        pairs.extend(trace.iter().cloned());
        let record = FutureRecord::to(&m.topic)
            .key(&m.key)
            .payload(&m.payload)
            .headers(headers::to_owned_headers(&pairs));
        // The queue-full wait is bounded; the delivery itself is bounded by delivery.timeout.ms.
        let result = self
            .producer
            .send(record, Timeout::After(Duration::from_secs(10)))
            .await;
        match result {
            Ok(_) => {
                metrics::counter!("crm_sync_messages_produced_total", "topic" => m.topic.clone())
                    .increment(1);
                Ok(())
            }
            Err((source, _)) => {
                metrics::counter!("crm_sync_produce_errors_total", "topic" => m.topic.clone())
                    .increment(1);
                Err(PublishError {
                    topic: m.topic.clone(),
                    source,
                })
            }
        }
    }
}
