//! Where a schedule's next run starts, per object.
//!
//! Each object starts from its own newest change minus the overlap, so that changes the CRM
//! stamps late (clock skew, long transactions) are read again rather than missed. An object
//! whose pass saw nothing newer than the moment the pass began (a rarely edited Quote beside busy
//! Opportunities) moves on to that moment minus the overlap: with one start for all objects, or
//! with a quiet object left where it was, every run would read every change since connecting
//! again, and the CRM's API budget with it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use crm_sync_store::sync_jobs::Job;
use serde_json::{Map, Value};

use super::{ObjectProgress, chrono_duration};

/// The next run's `since` (the oldest of the objects' starts: where an object new to the
/// schedule starts) and its checkpoint: each object's start and change-tracking position, and
/// nothing of the finished pass.
pub(super) fn next_run(
    job: &Job,
    checkpoint: &Map<String, Value>,
    overlap: Duration,
) -> (DateTime<Utc>, Value) {
    let overlap = chrono_duration(overlap);
    let latest = Utc::now() - overlap;
    let mut carry = Map::new();
    let mut oldest: Option<DateTime<Utc>> = None;
    for object in &job.objects {
        let progress = checkpoint
            .get(object)
            .and_then(|v| serde_json::from_value::<ObjectProgress>(v.clone()).ok())
            .unwrap_or_default();
        let since = next_since(&progress, job.since, overlap, latest);
        oldest = oldest.min(Some(since)).or(Some(since));
        let kept = ObjectProgress {
            since: Some(since),
            delta: progress.delta,
            ..ObjectProgress::default()
        };
        if let Ok(kept) = serde_json::to_value(kept) {
            carry.insert(object.clone(), kept);
        }
    }
    let since = oldest.unwrap_or(job.since).max(job.since.min(latest));
    (since, Value::Object(carry))
}

/// One object's next start: after what its pass saw (its newest change, or the moment the pass
/// began when that is later), minus the overlap; never before where this pass started, never
/// after now minus the overlap.
fn next_since(
    progress: &ObjectProgress,
    job_since: DateTime<Utc>,
    overlap: chrono::Duration,
    latest: DateTime<Utc>,
) -> DateTime<Utc> {
    let from = progress.since.unwrap_or(job_since);
    // A pass the CRM refused read nothing after its error: the next one starts where it did.
    if progress.error.is_some() {
        return from.min(latest);
    }
    let seen = progress.newest.max(progress.started).unwrap_or(from);
    (seen - overlap).max(from).min(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn a_quiet_object_moves_on_to_its_pass_start_minus_the_overlap() {
        let progress = ObjectProgress {
            started: Some(at("2026-12-01T10:00:00Z")),
            done: true,
            ..ObjectProgress::default()
        };
        let next = next_since(
            &progress,
            at("2026-11-01T00:00:00Z"),
            chrono::Duration::minutes(5),
            at("2026-12-01T10:10:00Z"),
        );
        assert_eq!(next, at("2026-12-01T09:55:00Z"));
    }

    #[test]
    fn a_change_stamped_after_the_pass_began_is_where_the_next_run_starts_from() {
        let progress = ObjectProgress {
            started: Some(at("2026-12-01T10:00:00Z")),
            newest: Some(at("2026-12-01T10:03:00Z")),
            since: Some(at("2026-12-01T09:00:00Z")),
            ..ObjectProgress::default()
        };
        let overlap = chrono::Duration::minutes(5);
        let next = next_since(
            &progress,
            at("2026-11-01T00:00:00Z"),
            overlap,
            at("2026-12-01T10:10:00Z"),
        );
        assert_eq!(next, at("2026-12-01T09:58:00Z"));
        // A CRM clock ahead of ours never starts the next run later than now minus the overlap.
        let ahead = ObjectProgress {
            newest: Some(at("2026-12-01T11:00:00Z")),
            ..progress
        };
        let next = next_since(
            &ahead,
            at("2026-11-01T00:00:00Z"),
            overlap,
            at("2026-12-01T10:10:00Z"),
        );
        assert_eq!(next, at("2026-12-01T10:10:00Z"));
    }
}
