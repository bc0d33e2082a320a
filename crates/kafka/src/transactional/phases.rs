//! Where a transaction's time goes (`crm_sync_transaction_phase_seconds{phase}`): what an
//! operator reads to tell a loop busy with its own work from one waiting on Kafka.

use std::time::Instant;

use metrics::Histogram;

use crate::metric_definitions::TRANSACTION_PHASE;

/// One histogram per phase of a batch, looked up once per loop.
#[derive(Clone)]
pub(super) struct Phases {
    /// Consuming and handling the batch's messages, from its first to its close.
    pub(super) fill: Histogram,
    /// Waiting for a free producer and for the previous batch's outputs to be acknowledged.
    pub(super) room: Histogram,
    /// Handing the batch's outputs to the producer.
    pub(super) hand_over: Histogram,
    /// From the outputs handed over to every one of them acknowledged.
    pub(super) deliver: Histogram,
    /// The offsets and the commit, the wait for the previous batch's commit included.
    pub(super) commit: Histogram,
    /// Telling the handler its batch committed (the evaluator writes its record state).
    pub(super) settle: Histogram,
}

impl Phases {
    pub(super) fn new() -> Phases {
        let phase = |name: &'static str| metrics::histogram!(TRANSACTION_PHASE, "phase" => name);
        Phases {
            fill: phase("fill"),
            room: phase("room"),
            hand_over: phase("hand_over"),
            deliver: phase("deliver"),
            commit: phase("commit"),
            settle: phase("settle"),
        }
    }
}

/// Records the time since `started` in `phase`.
pub(super) fn since(phase: &Histogram, started: Instant) {
    phase.record(started.elapsed().as_secs_f64());
}
