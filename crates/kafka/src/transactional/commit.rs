//! The commit of a closed batch, in a task of its own: the deliveries of its outputs are awaited
//! and the transaction committed with the batch's offsets, while the loop already handles the
//! next batch. Handling is CPU work on the loop's thread; delivering and committing is mostly
//! waiting for the broker, so the two overlap. The outputs are handed to the producer on the
//! loop's thread, where they were made: freed on another thread, the allocator kept more memory
//! and spent more CPU.

use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use tokio::task::{JoinError, JoinHandle};

use super::batch::{Batch, Positions};
use crate::txn_producer::{TxnError, TxnProducer, classify};

/// A batch whose transaction is being committed.
pub(super) struct InFlight {
    task: JoinHandle<Closed>,
    /// The task's end, once [`InFlight::wait`] saw it.
    ended: Option<Result<Closed, JoinError>>,
    /// The batch's positions, kept here too: a rewind needs them even if the task is lost.
    pub(super) positions: Positions,
}

/// What the commit task hands back: the producer, for the next transaction, and the batch.
pub(super) struct Closed {
    pub(super) producer: TxnProducer,
    pub(super) batch: Batch,
    pub(super) result: Result<(), TxnError>,
}

impl InFlight {
    /// Starts committing `batch` in the producer's open transaction. `offsets` and `group` are
    /// the consumer's, taken when the batch closed; without them the transaction is aborted.
    pub(super) fn start(
        producer: TxnProducer,
        batch: Batch,
        produced: Result<(), KafkaError>,
        offsets: Result<TopicPartitionList, KafkaError>,
        group: Option<ConsumerGroupMetadata>,
    ) -> InFlight {
        let positions = batch.partitions.clone();
        InFlight {
            task: tokio::spawn(commit(producer, batch, produced, offsets, group)),
            ended: None,
            positions,
        }
    }

    /// The commit's end. Cancel-safe: dropping this future leaves the task running.
    pub(super) async fn landed(&mut self) -> Result<Closed, JoinError> {
        match self.ended.take() {
            Some(ended) => ended,
            None => (&mut self.task).await,
        }
    }

    /// Waits for the commit to end, keeping its result for [`InFlight::landed`]. Cancel-safe.
    pub(super) async fn wait(&mut self) {
        if self.ended.is_none() {
            self.ended = Some((&mut self.task).await);
        }
    }

    pub(super) fn has_ended(&self) -> bool {
        self.ended.is_some()
    }
}

async fn commit(
    producer: TxnProducer,
    mut batch: Batch,
    produced: Result<(), KafkaError>,
    offsets: Result<TopicPartitionList, KafkaError>,
    group: Option<ConsumerGroupMetadata>,
) -> Closed {
    let result = async {
        produced.map_err(producing_failed)?;
        batch.delivered().await.map_err(producing_failed)?;
        let offsets = offsets.map_err(|error| {
            tracing::warn!(%error, "building the offsets to commit");
            TxnError::Abortable
        })?;
        let group = group.ok_or_else(|| {
            tracing::warn!("the consumer has no group metadata to commit with");
            TxnError::Abortable
        })?;
        producer.commit(offsets, group).await
    }
    .await;
    Closed {
        producer,
        batch,
        result,
    }
}

fn producing_failed(error: KafkaError) -> TxnError {
    tracing::warn!(%error, "producing in the transaction failed");
    classify(&error)
}
