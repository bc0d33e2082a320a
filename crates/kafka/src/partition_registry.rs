//! Which partitions have a worker in the at-least-once consume loop: the rebalance callback
//! stops them through it, and the lag gauge counts the messages they hold.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::message::OwnedMessage;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::consume::lock;

/// Which partitions have a worker, so that a revoke can stop them. Shared between the consumer
/// context (rebalance callbacks) and the consume loop.
#[derive(Default, Clone)]
pub struct PartitionRegistry {
    inner: Arc<Mutex<HashMap<(String, i32), WorkerControl>>>,
}

#[derive(Clone)]
pub(crate) struct WorkerControl {
    pub(crate) stop: CancellationToken,
    pub(crate) idle: Arc<(Mutex<bool>, Condvar)>,
    /// The worker's buffer (weak: the loop's handle alone keeps it open), for counting.
    pub(crate) queue: mpsc::WeakSender<OwnedMessage>,
    /// Messages of the batch the worker is handling.
    pub(crate) handling: Arc<AtomicUsize>,
}

/// How long a revoke may wait for the message in hand to finish. Bounded well below the
/// session timeout so a stuck handler cannot get the whole consumer evicted.
const REVOKE_DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl PartitionRegistry {
    pub(crate) fn register(&self, topic: &str, partition: i32, control: WorkerControl) {
        lock(&self.inner).insert((topic.to_owned(), partition), control);
    }

    /// Messages of a partition handed to its worker and not done: buffered, or in the batch
    /// being handled. librdkafka counts them as consumed; a handler stuck retrying holds up to a
    /// buffer's worth.
    pub(crate) fn in_hand(&self, topic: &str, partition: i32) -> i64 {
        let map = lock(&self.inner);
        let Some(control) = map.get(&(topic.to_owned(), partition)) else {
            return 0;
        };
        let buffered = control
            .queue
            .upgrade()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity());
        let handling = control.handling.load(Ordering::Relaxed);
        i64::try_from(buffered + handling).unwrap_or(i64::MAX)
    }

    /// Stops the workers of revoked partitions: queued messages are dropped (their offsets are not
    /// stored, so the next owner replays them) and the message in hand is given a bounded time to
    /// finish, so that its effects and offset land before the partition changes hands.
    pub(crate) fn revoke(&self, partitions: &[(String, i32)]) {
        let controls: Vec<WorkerControl> = {
            let mut map = lock(&self.inner);
            partitions
                .iter()
                .filter_map(|key| map.remove(key))
                .collect()
        };
        // The transactional loop has no workers: nothing to drain.
        if controls.is_empty() {
            return;
        }
        tracing::info!(
            count = controls.len(),
            "partitions being revoked: draining their work"
        );
        for control in &controls {
            control.stop.cancel();
        }
        let wait = || {
            let deadline = Instant::now() + REVOKE_DRAIN_LIMIT;
            for control in &controls {
                let (idle, changed) = &*control.idle;
                let mut guard = lock(idle);
                while !*guard {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        tracing::warn!(
                            "a revoked partition's message did not finish in time; its next owner replays it"
                        );
                        return;
                    }
                    guard = match changed.wait_timeout(guard, left) {
                        Ok((g, _)) => g,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
            }
        };
        // The callback runs on a runtime thread inside `recv()`; hand that thread's work to
        // another one while waiting, so the worker we wait for can run.
        // On a single-threaded runtime nothing else could run while we wait: the in-flight
        // message is then left to finish on its own and its next owner replays it.
        if let Ok(tokio::runtime::RuntimeFlavor::MultiThread) =
            tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor())
        {
            tokio::task::block_in_place(wait);
        }
    }
}
