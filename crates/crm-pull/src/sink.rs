//! Pulled records onto the events topic. Each is checked as ingest checks a webhook's events: a
//! record whose values could not be stored downstream, or too large for Kafka, is refused
//! alone. A webhook's sender is told with a 4xx; a pull has no sender, so the refused record is
//! dead-lettered in the page's own transaction (`<events topic>.dlq`, reason `invalid_value` or
//! `event_too_large`) and the rest of the page goes on. Published anyway, a record Kafka
//! refuses would fail its page for good, and with it the job or the hydration partition.

use std::sync::Arc;

use crm_sync_ingest::check::{self, Limits};
use crm_sync_kafka::atomic::AtomicPublisher;
use crm_sync_kafka::dlq::{DeadLetter, dead_letter_message};
use crm_sync_kafka::produce::OutgoingMessage;
use crm_sync_kafka::{Incoming, headers};
use crm_sync_proto::Message;
use crm_sync_proto::v1::CrmEvent;

use crate::jobs::Sink;

/// Publishes each page in one Kafka transaction, as ingest publishes a webhook's events, keyed
/// like them so a record's pulled and pushed events share a partition.
pub struct KafkaSink {
    pub publisher: AtomicPublisher,
    /// Shared by every record written there.
    pub topic: Arc<str>,
    /// ingest's limits (`ingest.max_field_bytes`, `ingest.max_event_bytes`).
    pub limits: Limits,
}

impl Sink for KafkaSink {
    async fn publish(&self, events: Vec<CrmEvent>) -> Result<usize, String> {
        let mut published = 0;
        let messages: Vec<OutgoingMessage> = events
            .iter()
            .map(|e| match check::one(e, &self.limits) {
                Ok(()) => {
                    published += 1;
                    self.message(e)
                }
                Err(refusal) => self.refused(e, &refusal),
            })
            .collect();
        self.publisher
            .publish_all(&messages)
            .await
            .map_err(|e| e.to_string())?;
        Ok(published)
    }
}

impl KafkaSink {
    fn message(&self, e: &CrmEvent) -> OutgoingMessage {
        OutgoingMessage {
            topic: self.topic.clone(),
            key: crm_sync_ingest::event::kafka_key(e).into(),
            payload: e.encode_to_vec(),
            event_id: e.event_id.clone(),
            headers: Vec::new(),
            // By key, like ingest's events.
            partition: None,
        }
    }

    /// The dead letter of a pulled record refused before it was published: its origin is the
    /// events topic, at partition and offset -1 (it never was there).
    fn refused(&self, e: &CrmEvent, refusal: &check::Refusal) -> OutgoingMessage {
        tracing::warn!(
            integration_id = %e.integration_id,
            object = %e.object_type,
            record_id = %e.record_id,
            reason = refusal.code(),
            detail = %refusal,
            "a pulled record was refused and dead-lettered"
        );
        metrics::counter!(crate::metric_definitions::REFUSED, "reason" => refusal.code())
            .increment(1);
        // Counted with every consumer's dead letters too, which the alerts watch.
        metrics::counter!(
            crm_sync_kafka::metric_definitions::DEAD_LETTERS,
            "topic" => self.topic.to_string(),
            "reason" => refusal.code()
        )
        .increment(1);
        let key = crm_sync_ingest::event::kafka_key(e);
        let payload = e.encode_to_vec();
        let origin = Incoming {
            topic: &self.topic,
            partition: -1,
            offset: -1,
            key: Some(key.as_bytes()),
            payload: Some(&payload),
            headers: vec![(headers::EVENT_ID.to_owned(), e.event_id.clone())],
        };
        let letter = DeadLetter {
            reason: refusal.code(),
            detail: format!("pulled from the CRM: {refusal}"),
        };
        dead_letter_message("ingest", &origin, &letter)
    }
}
