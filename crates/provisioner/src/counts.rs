//! What a transaction did, as metrics.

use std::collections::HashMap;

use crate::outcome::Change;

/// Metrics of a transaction, emitted only once it committed, so a retried batch is not counted
/// twice.
#[derive(Default)]
pub(crate) struct Counts {
    pub applied: u64,
    pub recorded: u64,
    pub updated: u64,
    pub retracted: u64,
    pub retractions: HashMap<&'static str, u64>,
    pub users_created: u64,
    pub users_linked: u64,
    pub unmapped: u64,
}

impl Counts {
    /// An activity written by the batch.
    pub(crate) fn activity(&mut self, change: Change) {
        match change {
            Change::Recorded => self.recorded += 1,
            Change::Updated => self.updated += 1,
            Change::Retracted => self.retracted += 1,
            _ => {}
        }
    }

    pub(crate) fn emit(&self, duplicates: usize) {
        let add = |name: &'static str, label: &'static str, value: &'static str, n: u64| {
            if n > 0 {
                metrics::counter!(name, label => value).increment(n);
            }
        };
        add(
            crate::metric_definitions::OUTCOMES,
            "result",
            "applied",
            self.applied,
        );
        add(
            crate::metric_definitions::OUTCOMES,
            "result",
            "duplicate",
            duplicates as u64,
        );
        add(
            crate::metric_definitions::ACTIVITIES,
            "result",
            "recorded",
            self.recorded,
        );
        add(
            crate::metric_definitions::ACTIVITIES,
            "result",
            "updated",
            self.updated,
        );
        add(
            crate::metric_definitions::ACTIVITIES,
            "result",
            "retracted",
            self.retracted,
        );
        for (result, n) in &self.retractions {
            add(crate::metric_definitions::RETRACTIONS, "result", result, *n);
        }
        add(
            crate::metric_definitions::USERS_PROVISIONED,
            "result",
            "created",
            self.users_created,
        );
        add(
            crate::metric_definitions::USERS_PROVISIONED,
            "result",
            "linked",
            self.users_linked,
        );
        if self.unmapped > 0 {
            metrics::counter!(crate::metric_definitions::UNMAPPED_ACTIVITIES)
                .increment(self.unmapped);
        }
    }
}
