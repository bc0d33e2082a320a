//! How far the evaluator is behind on the events topic, so that pull jobs wait while it is: a
//! backfill published faster than the pipeline absorbs would queue live webhooks behind it.
//!
//! The lag is the sum over the topic's partitions of (high watermark − the evaluator group's
//! committed offset), read without joining the group. It slightly overstates (transaction
//! markers count), which only makes jobs more polite. When it cannot be read (the group unknown,
//! Kafka unreachable) jobs do not wait for it: the fixed pace still applies.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_sync_kafka::clients::{Role, base_config};
use crm_sync_runtime::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// A reading is reused this long by every job of the replica. A job publishes at most about
/// `pull.max_evaluator_lag` records per reading (it counts its own pages since), so this bounds a
/// backfill's speed (about 355 records/s at one second, measured). A reading costs a metadata
/// request, one for the group's offsets and one per partition for its watermarks.
const FRESH_FOR: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(5);

pub struct EvaluatorLag {
    consumer: BaseConsumer,
    topic: String,
    last: Mutex<Option<(Instant, Option<i64>)>>,
}

impl EvaluatorLag {
    pub fn new(kafka: &KafkaSettings, group: &str, topic: &str) -> anyhow::Result<EvaluatorLag> {
        let consumer: BaseConsumer = base_config(kafka, Role::Consumer)
            .set("group.id", group)
            .set("client.id", "ingest-pull-lag")
            .set("enable.auto.commit", "false")
            .create()?;
        Ok(EvaluatorLag {
            consumer,
            topic: topic.to_owned(),
            last: Mutex::new(None),
        })
    }

    /// The current lag and when its reading began (records published since are not in it),
    /// `None` when unknown.
    pub async fn current(self: &Arc<Self>) -> Option<(Instant, i64)> {
        if let Some((at, lag)) = *self.last.lock().unwrap_or_else(|p| p.into_inner())
            && at.elapsed() < FRESH_FOR
        {
            return lag.map(|lag| (at, lag));
        }
        let this = self.clone();
        let at = Instant::now();
        let lag = tokio::task::spawn_blocking(move || this.read())
            .await
            .ok()
            .flatten();
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, lag));
        lag.map(|lag| (at, lag))
    }

    fn read(&self) -> Option<i64> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), TIMEOUT)
            .ok()?;
        let topic = metadata.topics().first()?;
        let mut partitions = TopicPartitionList::new();
        for p in topic.partitions() {
            partitions.add_partition(&self.topic, p.id());
        }
        let committed = self.consumer.committed_offsets(partitions, TIMEOUT).ok()?;
        let mut lag = 0;
        let mut known = false;
        for element in committed.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, element.partition(), TIMEOUT)
                .ok()?;
            // A partition the group never committed is read from its start.
            let from = match element.offset() {
                Offset::Offset(offset) => {
                    known = true;
                    offset
                }
                _ => low,
            };
            lag += (high - from).max(0);
        }
        // No committed offset anywhere: not the evaluator's group, or it never ran.
        known.then_some(lag)
    }
}
