//! Readiness of a consume loop, for `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness of a consume loop: false until the loop can work, and while it is stuck retrying.
#[derive(Clone)]
pub struct LoopHealth {
    started: Arc<AtomicBool>,
    stuck: Arc<AtomicBool>,
    /// What `/readyz` says until the loop has started.
    starting: &'static str,
}

impl LoopHealth {
    /// Of a loop that can work as soon as it runs (the at-least-once loop).
    pub fn ready() -> LoopHealth {
        LoopHealth {
            started: Arc::new(AtomicBool::new(true)),
            stuck: Arc::default(),
            starting: "",
        }
    }

    /// Of a loop that first has to set something up (the transactional loop, its producer's
    /// transactions): not ready until it says so.
    pub fn starting(what: &'static str) -> LoopHealth {
        LoopHealth {
            started: Arc::default(),
            stuck: Arc::default(),
            starting: what,
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if !self.started.load(Ordering::Relaxed) {
            Err(self.starting.to_owned())
        } else if self.stuck.load(Ordering::Relaxed) {
            Err("retrying a transient failure".to_owned())
        } else {
            Ok(())
        }
    }

    pub(crate) fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_stuck(&self, stuck: bool) {
        self.stuck.store(stuck, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_is_ready_once_started_and_while_not_stuck() {
        let health = LoopHealth::starting("Kafka transactions not initialized yet");
        assert_eq!(
            health.check(),
            Err("Kafka transactions not initialized yet".to_owned())
        );
        health.set_started();
        assert_eq!(health.check(), Ok(()));
        health.set_stuck(true);
        assert!(health.check().is_err());
        health.set_stuck(false);
        assert_eq!(LoopHealth::ready().check(), Ok(()));
    }
}
