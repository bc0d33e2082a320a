//! Pulled records onto the events topic. Each is checked as ingest checks a webhook's events: a
//! record whose values could not be stored downstream, or too large for Kafka, is refused
//! alone. A webhook's sender is told with a 4xx; a pull has no sender, so the refused record is
//! dead-lettered in the page's own transaction (`<events topic>.dlq`, reason `invalid_value` or
//! `event_too_large`) and the rest of the page goes on. Published anyway, a record Kafka
//! refuses would fail its page for good, and with it the job or the hydration partition.
//!
//! Once the page is committed each refusal is also recorded in its integration's record trail,
//! as consumers record theirs, so that the admin page shows why the record never counted. Its
//! place there is where the dead letter was written (the `.dlq` topic, partition, offset): the
//! refused record itself never was in a topic, and a page pulled again is recorded again.

use std::sync::Arc;

use crm_sync_ingest::check::{self, Limits};
use crm_sync_kafka::atomic::AtomicPublisher;
use crm_sync_kafka::dlq::{DeadLetter, dead_letter_message};
use crm_sync_kafka::produce::OutgoingMessage;
use crm_sync_kafka::{Incoming, headers};
use crm_sync_proto::Message;
use crm_sync_proto::v1::CrmEvent;
use crm_sync_store::trail::{NewDeadLetter, record_dead_letters};
use sqlx::PgPool;

use crate::jobs::Sink;

/// The process pulls run in, as dead letters and the trail name it.
const SERVICE: &str = "ingest";

/// Publishes each page in one Kafka transaction, as ingest publishes a webhook's events, keyed
/// like them so a record's pulled and pushed events share a partition.
pub struct KafkaSink {
    pub publisher: AtomicPublisher,
    /// Shared by every record written there.
    pub topic: Arc<str>,
    /// ingest's limits (`ingest.max_field_bytes`, `ingest.max_event_bytes`).
    pub limits: Limits,
    /// Where refusals are recorded in the record trail.
    pub pool: PgPool,
}

impl Sink for KafkaSink {
    async fn publish(&self, events: Vec<CrmEvent>) -> Result<usize, String> {
        // Each refusal's trail entry, by its dead letter's place in the page.
        let mut refusals: Vec<(usize, NewDeadLetter)> = Vec::new();
        let mut refused = 0;
        let messages: Vec<OutgoingMessage> = events
            .iter()
            .enumerate()
            .map(|(i, e)| match check::one(e, &self.limits) {
                Ok(()) => self.message(e),
                Err(refusal) => {
                    refused += 1;
                    let (letter, entry) = self.refused(e, &refusal);
                    refusals.extend(entry.map(|entry| (i, entry)));
                    letter
                }
            })
            .collect();
        let written = self
            .publisher
            .publish_all(&messages)
            .await
            .map_err(|e| e.to_string())?;
        let published = events.len() - refused;
        let entries: Vec<NewDeadLetter> = refusals
            .into_iter()
            .map(|(i, mut entry)| {
                if let Some(place) = written.get(i) {
                    entry.partition = place.partition;
                    entry.offset = place.offset;
                }
                entry
            })
            .collect();
        // As with consumers' dead letters, a trail that cannot be written is logged and the
        // page goes on: the `.dlq` topic holds the letters either way.
        if let Err(error) = record_dead_letters(&self.pool, &entries).await {
            tracing::warn!(%error, refused = entries.len(), "recording pulled records' refusals in the record trail failed");
        }
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

    /// The dead letter of a pulled record refused before it was published (its origin is the
    /// events topic, at partition and offset -1: it never was there), and its trail entry,
    /// placed once the letter is written (none when the record names no integration id, which
    /// no admin could be shown).
    fn refused(
        &self,
        e: &CrmEvent,
        refusal: &check::Refusal,
    ) -> (OutgoingMessage, Option<NewDeadLetter>) {
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
        let message = dead_letter_message(SERVICE, &origin, &letter);
        let entry = e
            .integration_id
            .parse()
            .ok()
            .map(|integration_id| NewDeadLetter {
                integration_id,
                object_type: e.object_type.clone(),
                record_id: e.record_id.clone(),
                event_id: Some(e.event_id.clone()),
                service: SERVICE.to_owned(),
                topic: message.topic.to_string(),
                partition: -1,
                offset: -1,
                reason: letter.reason.to_owned(),
                detail: letter.detail.clone(),
            });
        (message, entry)
    }
}
