//! The batches in flight: the producers free for the next one, how a commit task's end is
//! settled (the handler told, or everything uncommitted aborted and rewound), and when the
//! next batch's transaction may begin.

use std::collections::VecDeque;

use rdkafka::ClientConfig;
use tokio::task::JoinError;

use super::TransactionalHandler;
use super::batch::{Positions, both, record_commit};
use super::commit::{Closed, InFlight};
use super::phases::{Phases, since};
use super::run::{TransactionalLoop, rewind};
use crate::txn_producer::{TxnError, TxnProducer, recreate};

/// The producers not in a transaction, the batches being committed (oldest first, each
/// committing after the one before it), and how the loop backs off after failures.
pub(super) struct Pipeline {
    /// Each with its slot: the index of its configuration.
    pub(super) idle: Vec<(TxnProducer, usize)>,
    pub(super) configs: Vec<ClientConfig>,
    pub(super) inflight: VecDeque<InFlight>,
    pub(super) backoff: crm_sync_retry::Backoff,
    pub(super) failures: u32,
    pub(super) phases: Phases,
}

impl Pipeline {
    /// Whether a batch closed now could begin its transaction at once: a producer is free and
    /// the outputs in flight are delivered.
    pub(super) fn has_room(&self) -> bool {
        let running = self.inflight.iter().filter(|c| !c.has_ended()).count();
        running < self.configs.len() && self.inflight.back().is_none_or(InFlight::is_delivered)
    }

    /// Waits until [`Pipeline::has_room`] might hold (the oldest commit ended, or the newest
    /// batch's outputs were delivered). Cancel-safe.
    pub(super) async fn room(&mut self) {
        if self.inflight.len() >= self.configs.len()
            && let Some(oldest) = self.inflight.front_mut()
        {
            oldest.wait().await;
        }
        if let Some(newest) = self.inflight.back() {
            newest.delivered().await;
        }
    }
}

/// How the batch in flight ended.
pub(super) enum Landed {
    /// Committed, or nothing was in flight.
    Committed,
    /// Aborted, together with every later batch and the one handled meanwhile; all rewound.
    Aborted,
    /// Shut down while replacing the producer.
    Shutdown,
}

/// The end of the oldest commit in flight; never, when there is none.
pub(super) async fn landing(inflight: &mut VecDeque<InFlight>) -> Result<Closed, JoinError> {
    match inflight.front_mut() {
        Some(inflight) => inflight.landed().await,
        None => std::future::pending().await,
    }
}

/// Waits for the oldest batch in flight, if any (see [`settle`]).
pub(super) async fn land_oldest<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    next: &Positions,
) -> anyhow::Result<Landed> {
    let Some(mut inflight) = p.inflight.pop_front() else {
        return Ok(Landed::Committed);
    };
    let closed = inflight.landed().await;
    settle(l, p, inflight, closed, next).await
}

/// Waits for every batch in flight.
pub(super) async fn land_all<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    next: &Positions,
) -> anyhow::Result<Landed> {
    while !p.inflight.is_empty() {
        match land_oldest(l, p, next).await? {
            Landed::Committed => {}
            other => return Ok(other),
        }
    }
    Ok(Landed::Committed)
}

/// Waits until the next batch's transaction may begin: a producer is free and the outputs of
/// the batches in flight were delivered. Aborted if one of them failed meanwhile.
pub(super) async fn make_room<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    next: &Positions,
) -> anyhow::Result<Landed> {
    while p.inflight.len() >= p.configs.len() {
        match land_oldest(l, p, next).await? {
            Landed::Committed => {}
            other => return Ok(other),
        }
    }
    let delivered = match p.inflight.back() {
        Some(newest) => newest.delivered().await,
        None => true,
    };
    if delivered {
        return Ok(Landed::Committed);
    }
    land_all(l, p, next).await
}

/// After the oldest commit task ended: on success tells the handler; on failure aborts its
/// transaction, the later ones (which commit only after it) and the batch handled meanwhile
/// (`next`: its transaction has not begun), and rewinds them all.
pub(super) async fn settle<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    inflight: InFlight,
    closed: Result<Closed, JoinError>,
    next: &Positions,
) -> anyhow::Result<Landed> {
    let failure = match closed {
        Ok(Closed {
            producer,
            batch,
            result: Ok(()),
        }) => {
            let started = std::time::Instant::now();
            record_commit(l.topic, &batch);
            l.handler.committed(&batch.written);
            since(&p.phases.settle, started);
            p.idle.push((producer, inflight.slot));
            p.failures = 0;
            p.backoff.reset();
            l.health.set_stuck(false);
            return Ok(Landed::Committed);
        }
        other => broken(other, inflight.slot),
    };
    let mut positions = inflight.positions;
    let mut failures = vec![failure];
    while let Some(mut later) = p.inflight.pop_front() {
        positions = both(&positions, &later.positions);
        failures.push(broken(later.landed().await, later.slot));
    }
    let positions = both(&positions, next);
    aborted(l, &positions, failures.len());
    for (producer, failure, slot) in failures {
        let Some(producer) = reset(l, p, producer, failure, slot).await else {
            return Ok(Landed::Shutdown);
        };
        p.idle.push((producer, slot));
    }
    rewind(l, &positions).await?;
    if !failed(l, p, false).await {
        return Ok(Landed::Shutdown);
    }
    Ok(Landed::Aborted)
}

/// A commit task that did not commit: its producer (None if the task was lost), how it failed,
/// and its slot. A later batch's task never commits after an earlier one failed.
fn broken(
    closed: Result<Closed, JoinError>,
    slot: usize,
) -> (Option<TxnProducer>, TxnError, usize) {
    match closed {
        Ok(Closed {
            producer, result, ..
        }) => (
            Some(producer),
            result.err().unwrap_or(TxnError::Abortable),
            slot,
        ),
        Err(error) => {
            tracing::error!(%error, "the commit task ended abnormally; replacing the producer");
            (None, TxnError::Fatal, slot)
        }
    }
}

/// A producer whose transaction did not commit, ready for a new one: aborted, or recreated if
/// it cannot be; None if shut down meanwhile.
async fn reset<H>(
    l: &TransactionalLoop<'_, H>,
    p: &Pipeline,
    producer: Option<TxnProducer>,
    failure: TxnError,
    slot: usize,
) -> Option<TxnProducer> {
    match (producer, failure) {
        (Some(producer), TxnError::Retriable | TxnError::Abortable) => match producer.abort().await
        {
            Ok(()) => Some(producer),
            Err(_) => recreate(producer, &l.shutdown).await,
        },
        (Some(producer), TxnError::Fatal) => recreate(producer, &l.shutdown).await,
        (None, _) => {
            let config = p.configs.get(slot).unwrap_or(&l.producer_config).clone();
            TxnProducer::start(config, &l.shutdown).await
        }
    }
}

/// Tells the handler that the batches at `positions` will be handled again, and counts the
/// `transactions` given up (an open batch whose transaction had not begun counts as one).
pub(super) fn aborted<H: TransactionalHandler>(
    l: &TransactionalLoop<'_, H>,
    positions: &Positions,
    transactions: usize,
) {
    metrics::counter!(crate::metric_definitions::TRANSACTIONS, "result" => "aborted")
        .increment(transactions as u64);
    l.handler
        .aborted(&positions.keys().copied().collect::<Vec<_>>());
}

/// Counts a failure and waits before the retry: at once for the handler's transient failure,
/// from the second in a row for Kafka's. False if shut down meanwhile.
pub(super) async fn failed<H>(
    l: &TransactionalLoop<'_, H>,
    p: &mut Pipeline,
    transient: bool,
) -> bool {
    p.failures += 1;
    if p.failures >= 3 {
        l.health.set_stuck(true);
    }
    if p.failures > 1 || transient {
        return p.backoff.wait(&l.shutdown).await;
    }
    true
}
