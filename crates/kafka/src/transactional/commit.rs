//! The commit of a closed batch, in a task of its own: the deliveries of its outputs are awaited
//! and the transaction committed with the batch's offsets, while the loop already handles the
//! next batch. Handling is CPU work on the loop's thread; delivering and committing is mostly
//! waiting for the broker, so the two overlap. The outputs are handed to the producer on the
//! loop's thread, where they were made: freed on another thread, the allocator kept more memory
//! and spent more CPU.
//!
//! With several producers, the next batch's transaction begins on another producer as soon as
//! this batch's outputs are delivered, while this one's offsets and commit are still on their
//! way. The order stays that of the input: the next batch's outputs are handed over only after
//! this batch's were written (so in every partition they come after them), and its commit waits
//! for this one's, which it never overtakes: if this one fails, the next one aborts too.

use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use super::batch::{Batch, Positions};
use super::phases::{Phases, since};
use crate::txn_producer::{TxnError, TxnProducer, classify};

/// How far a batch's commit got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    Delivering,
    /// Every output was written; the offsets and the commit are under way.
    Delivered,
    Committed,
    Failed,
}

/// A batch whose transaction is being committed.
pub(super) struct InFlight {
    task: JoinHandle<Closed>,
    /// The task's end, once [`InFlight::wait`] saw it.
    ended: Option<Result<Closed, JoinError>>,
    stage: watch::Receiver<Stage>,
    /// The batch's positions, kept here too: a rewind needs them even if the task is lost.
    pub(super) positions: Positions,
    /// Which of the loop's producers commits it.
    pub(super) slot: usize,
}

/// What the commit task hands back: the producer, for the next transaction, and the batch.
pub(super) struct Closed {
    pub(super) producer: TxnProducer,
    pub(super) batch: Batch,
    pub(super) result: Result<(), TxnError>,
}

impl InFlight {
    /// Starts committing `batch` in the producer's open transaction, after `previous` (the
    /// stage of the batch before it, if still in flight) committed. `offsets` and `group` are
    /// the consumer's, taken when the batch closed; without them the transaction is aborted.
    pub(super) fn start(
        (producer, slot): (TxnProducer, usize),
        batch: Batch,
        produced: Result<(), KafkaError>,
        (offsets, group): (
            Result<TopicPartitionList, KafkaError>,
            Option<ConsumerGroupMetadata>,
        ),
        previous: Option<watch::Receiver<Stage>>,
        phases: Phases,
    ) -> InFlight {
        let positions = batch.partitions.clone();
        let (stage, watched) = watch::channel(Stage::Delivering);
        let steps = Steps {
            produced,
            offsets,
            group,
            previous,
            stage,
            phases,
        };
        InFlight {
            task: tokio::spawn(commit(producer, batch, steps)),
            ended: None,
            stage: watched,
            positions,
            slot,
        }
    }

    /// Its stage, for the batch after it to wait on.
    pub(super) fn stage(&self) -> watch::Receiver<Stage> {
        self.stage.clone()
    }

    /// Whether every output was delivered (or the commit ended).
    pub(super) fn is_delivered(&self) -> bool {
        *self.stage.borrow() != Stage::Delivering
    }

    /// Waits until every output was delivered: false if the commit failed instead. Cancel-safe.
    pub(super) async fn delivered(&self) -> bool {
        let mut stage = self.stage.clone();
        match stage.wait_for(|s| *s != Stage::Delivering).await {
            Ok(reached) => *reached != Stage::Failed,
            // The task ended without saying: it is lost, which its landing reports.
            Err(_) => false,
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

/// What a commit task is given besides its producer and batch.
struct Steps {
    produced: Result<(), KafkaError>,
    offsets: Result<TopicPartitionList, KafkaError>,
    group: Option<ConsumerGroupMetadata>,
    previous: Option<watch::Receiver<Stage>>,
    stage: watch::Sender<Stage>,
    phases: Phases,
}

async fn commit(producer: TxnProducer, mut batch: Batch, steps: Steps) -> Closed {
    let Steps {
        produced,
        offsets,
        group,
        previous,
        stage,
        phases,
    } = steps;
    let result = async {
        produced.map_err(producing_failed)?;
        let delivering = std::time::Instant::now();
        batch.delivered().await.map_err(producing_failed)?;
        since(&phases.deliver, delivering);
        stage.send_replace(Stage::Delivered);
        let committing = std::time::Instant::now();
        let offsets = offsets.map_err(|error| {
            tracing::warn!(%error, "building the offsets to commit");
            TxnError::Abortable
        })?;
        let group = group.ok_or_else(|| {
            tracing::warn!("the consumer has no group metadata to commit with");
            TxnError::Abortable
        })?;
        if let Some(previous) = previous {
            after(previous).await?;
        }
        producer.commit(offsets, group).await?;
        since(&phases.commit, committing);
        Ok(())
    }
    .await;
    stage.send_replace(match result {
        Ok(()) => Stage::Committed,
        Err(_) => Stage::Failed,
    });
    Closed {
        producer,
        batch,
        result,
    }
}

/// Waits for the previous batch's commit: committing after it failed would skip its input.
async fn after(mut previous: watch::Receiver<Stage>) -> Result<(), TxnError> {
    match previous
        .wait_for(|s| matches!(s, Stage::Committed | Stage::Failed))
        .await
    {
        Ok(stage) if *stage == Stage::Committed => Ok(()),
        _ => Err(TxnError::Abortable),
    }
}

fn producing_failed(error: KafkaError) -> TxnError {
    tracing::warn!(%error, "producing in the transaction failed");
    classify(&error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_waits_for_the_previous_one_and_never_follows_a_failed_one() {
        // Committed, even if its task already ended: go ahead.
        let (stage, previous) = watch::channel(Stage::Delivering);
        stage.send_replace(Stage::Committed);
        drop(stage);
        assert_eq!(after(previous).await, Ok(()));
        // Failed, or lost before it committed: abort.
        let (stage, previous) = watch::channel(Stage::Delivered);
        stage.send_replace(Stage::Failed);
        assert_eq!(after(previous).await, Err(TxnError::Abortable));
        let (stage, previous) = watch::channel(Stage::Delivered);
        drop(stage);
        assert_eq!(after(previous).await, Err(TxnError::Abortable));
        // Still committing: wait for it.
        let (stage, previous) = watch::channel(Stage::Delivering);
        let waiting = tokio::spawn(after(previous));
        stage.send_replace(Stage::Delivered);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "delivered is not committed");
        stage.send_replace(Stage::Committed);
        assert_eq!(waiting.await.unwrap(), Ok(()));
    }
}
