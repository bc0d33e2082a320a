//! Readiness of the transactional loop, for the ops endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness of the loop: false until transactions are initialized, and while stuck.
#[derive(Clone, Default)]
pub struct TransactionalHealth {
    pub(super) ready: Arc<AtomicBool>,
    pub(super) stuck: Arc<AtomicBool>,
}

impl TransactionalHealth {
    pub fn check(&self) -> Result<(), String> {
        if !self.ready.load(Ordering::Relaxed) {
            Err("Kafka transactions not initialized yet".to_owned())
        } else if self.stuck.load(Ordering::Relaxed) {
            Err("retrying a failing transaction".to_owned())
        } else {
            Ok(())
        }
    }
}
