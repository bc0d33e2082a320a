//! The input and output of one open transaction, and the metrics recorded when it commits.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;
use rdkafka::{Offset, TopicPartitionList};

use super::Written;
use crate::produce::OutgoingMessage;
use crate::txn_producer::TxnProducer;

/// A consumed message's W3C trace context as header pairs, shared by its outputs (a copy per
/// output cost three allocations).
pub(super) type TraceContext = Arc<[(String, String)]>;

/// Per partition, the first offset consumed in a batch and the next offset to commit.
pub(super) type Positions = BTreeMap<i32, (i64, i64)>;

/// Where a rewind of two consecutive batches (one committing, the next handled meanwhile) goes
/// back to: per partition, the earlier first offset.
pub(super) fn both(older: &Positions, newer: &Positions) -> Positions {
    let mut all = older.clone();
    for (partition, (first, next)) in newer {
        let entry = all.entry(*partition).or_insert((*first, *next));
        entry.0 = entry.0.min(*first);
        entry.1 = entry.1.max(*next);
    }
    all
}

/// The open transaction's input: per partition, the first offset consumed in it (where a
/// rewind goes back to: the last committed offset) and the next offset to commit.
#[derive(Default)]
pub(super) struct Batch {
    /// Outputs not handed to the producer yet, each with the trace context of the message it
    /// came from. They are produced together when the batch closes: librdkafka sends one produce
    /// request per partition, so outputs produced as each message was handled went out in
    /// several requests per partition and transaction, each of which the broker also verifies
    /// against the transaction; produced at once, they take about one per partition.
    pub(super) pending: Vec<(OutgoingMessage, TraceContext)>,
    /// Of the messages produced in the transaction. Awaited before committing: librdkafka's
    /// commit flushes them itself, but in 100 ms polling steps, which added ~100 ms per batch.
    pub(super) deliveries: Vec<(Arc<str>, DeliveryFuture)>,
    /// Where the delivered outputs landed, for [`super::TransactionalHandler::committed`].
    pub(super) written: Vec<Written>,
    pub(super) partitions: Positions,
    pub(super) messages: usize,
    pub(super) ok: u64,
    pub(super) dead: BTreeMap<&'static str, u64>,
    pub(super) produced: BTreeMap<Arc<str>, u64>,
}

impl Batch {
    /// Hands every pending output to the producer, in the order they were made.
    pub(super) async fn produce_pending(
        &mut self,
        producer: &TxnProducer,
    ) -> Result<(), KafkaError> {
        for (output, trace) in std::mem::take(&mut self.pending) {
            let delivery = producer.send(&output, &trace).await?;
            self.deliveries.push((output.topic, delivery));
        }
        Ok(())
    }

    /// Waits for Kafka to acknowledge everything produced so far; the first failure.
    pub(super) async fn delivered(&mut self) -> Result<(), KafkaError> {
        for (topic, delivery) in self.deliveries.drain(..) {
            match delivery.await {
                Ok(Ok(delivery)) => self.written.push(Written {
                    topic,
                    partition: delivery.partition,
                    offset: delivery.offset,
                }),
                Ok(Err((error, _))) => return Err(error),
                Err(_) => return Err(KafkaError::Canceled),
            }
        }
        Ok(())
    }

    pub(super) fn track(&mut self, partition: i32, offset: i64) {
        let entry = self.partitions.entry(partition).or_insert((offset, offset));
        entry.0 = entry.0.min(offset);
        entry.1 = entry.1.max(offset + 1);
        self.messages += 1;
    }

    pub(super) fn offsets(&self, topic: &str) -> Result<TopicPartitionList, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (partition, (_, next)) in &self.partitions {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        Ok(tpl)
    }
}

pub(super) fn record_commit(topic: &str, batch: &Batch) {
    metrics::counter!(crate::metric_definitions::TRANSACTIONS, "result" => "committed")
        .increment(1);
    metrics::histogram!(crate::metric_definitions::TRANSACTION_MESSAGES)
        .record(batch.messages as f64);
    metrics::counter!(crate::metric_definitions::MESSAGES_CONSUMED, "topic" => topic.to_owned(), "outcome" => "ok")
        .increment(batch.ok);
    for (reason, n) in &batch.dead {
        metrics::counter!(crate::metric_definitions::MESSAGES_CONSUMED, "topic" => topic.to_owned(), "outcome" => "dead_lettered")
            .increment(*n);
        metrics::counter!(crate::metric_definitions::DEAD_LETTERS, "topic" => topic.to_owned(), "reason" => *reason)
            .increment(*n);
    }
    for (out, n) in &batch.produced {
        metrics::counter!(crate::metric_definitions::MESSAGES_PRODUCED, "topic" => out.to_string())
            .increment(*n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_commits_the_next_offsets_and_rewinds_to_the_first() {
        let mut batch = Batch::default();
        for (partition, offset) in [(0, 10), (1, 3), (0, 11), (0, 12), (1, 4)] {
            batch.track(partition, offset);
        }
        assert_eq!(batch.messages, 5);
        assert_eq!(batch.partitions[&0], (10, 13));
        assert_eq!(batch.partitions[&1], (3, 5));
        let tpl = batch.offsets("t").unwrap();
        let offsets: Vec<(i32, Offset)> = tpl
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect();
        assert_eq!(
            offsets,
            vec![(0, Offset::Offset(13)), (1, Offset::Offset(5))]
        );
        let mut next = Batch::default();
        for (partition, offset) in [(0, 13), (2, 7)] {
            next.track(partition, offset);
        }
        let rewind = both(&batch.partitions, &next.partitions);
        assert_eq!(
            rewind.into_iter().collect::<Vec<_>>(),
            vec![(0, (10, 14)), (1, (3, 5)), (2, (7, 8))]
        );
    }
}
