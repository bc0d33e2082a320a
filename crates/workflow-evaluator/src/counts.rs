//! The evaluator's counters, kept per uncommitted transaction and published only once it
//! committed, so that a batch that is aborted and replayed is counted once.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;

#[derive(Default)]
struct Tally {
    /// `crm_sync_evaluator_events_total{outcome}`: matched (some workflow matched or changed),
    /// no_match (none did), unchanged (the event told nothing new: a replay, an older value).
    events: BTreeMap<&'static str, u64>,
    /// `crm_sync_evaluator_outcomes_total{kind}`.
    outcomes: BTreeMap<&'static str, u64>,
    /// `crm_sync_evaluator_no_match_total{reason}`.
    no_match: BTreeMap<&'static str, u64>,
    hydrations: u64,
    /// Missed webhooks reconciliations made up for, per integration.
    fixed: BTreeMap<Uuid, i64>,
}

#[derive(Default)]
pub struct Counts {
    open: crate::staging::Generations<Tally>,
    /// Committed counts of missed webhooks fixed, until they are written.
    pub fixed: Arc<crate::fixed::Pending>,
}

impl Counts {
    fn with(&self, f: impl FnOnce(&mut Tally)) {
        self.open.with_open(f);
    }

    pub fn event(&self, outcome: &'static str) {
        self.with(|t| *t.events.entry(outcome).or_default() += 1);
    }

    pub fn outcome(&self, kind: &'static str) {
        self.with(|t| *t.outcomes.entry(kind).or_default() += 1);
    }

    pub fn no_match(&self, reason: &'static str) {
        self.with(|t| *t.no_match.entry(reason).or_default() += 1);
    }

    pub fn hydration(&self) {
        self.with(|t| t.hydrations += 1);
    }

    pub fn missed_webhook_fixed(&self, integration_id: Uuid) {
        self.with(|t| *t.fixed.entry(integration_id).or_default() += 1);
    }

    /// The open transaction was closed; its commit is in flight.
    pub fn seal(&self) {
        self.open.seal();
    }

    /// The sealed transaction committed: its counts are published.
    pub fn committed(&self) {
        let tally = self.open.take_committed();
        for (outcome, n) in tally.events {
            metrics::counter!(crate::metric_definitions::EVENTS, "outcome" => outcome).increment(n);
        }
        for (kind, n) in tally.outcomes {
            metrics::counter!(crate::metric_definitions::OUTCOMES, "kind" => kind).increment(n);
        }
        for (reason, n) in tally.no_match {
            metrics::counter!(crate::metric_definitions::NO_MATCH, "reason" => reason).increment(n);
        }
        self.fixed.add(tally.fixed);
        if tally.hydrations > 0 {
            metrics::counter!(crate::metric_definitions::HYDRATION_REQUESTS)
                .increment(tally.hydrations);
        }
    }

    pub fn aborted(&self) {
        self.open.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    fn events_total(rendered: &str, outcome: &str) -> u64 {
        rendered
            .lines()
            .find(|l| {
                l.starts_with(crate::metric_definitions::EVENTS)
                    && l.contains(&format!("outcome=\"{outcome}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    #[test]
    fn an_aborted_batch_counts_nothing_and_its_replay_counts_once() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let counts = Counts::default();
            counts.event("matched");
            counts.event("matched");
            counts.seal();
            assert_eq!(
                events_total(&handle.render(), "matched"),
                0,
                "not before commit"
            );
            counts.aborted();
            // The same two events, replayed in the next transaction, which commits.
            counts.event("matched");
            counts.seal();
            // The next transaction's event is not published with the sealed one's.
            counts.event("matched");
            counts.committed();
            assert_eq!(events_total(&handle.render(), "matched"), 1);
            counts.seal();
            counts.committed();
            assert_eq!(events_total(&handle.render(), "matched"), 2);
        });
    }
}
