//! Live data first: a pull job publishes at most `pull.records_per_second` records per second,
//! in transactions of one page each, on the topic the webhooks use, and waits while the
//! evaluator is more than `pull.max_evaluator_lag` records behind on that topic (see
//! [`crate::lag`]): a fixed pace alone queues live events behind a backfill whenever the
//! pipeline absorbs less than that pace. Webhook requests therefore
//! never queue behind more than one page of pulled records at the transactional publisher, and a
//! 100,000-record backfill takes a bounded share of the evaluator's throughput instead of
//! flooding its partitions. (A second, lower-priority input topic would need the evaluator to
//! consume and restore two co-partitioned topics together; the pace gives the same protection
//! with one.)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crm_sync_proto::v1::CrmEvent;
use tokio_util::sync::CancellationToken;

use crate::jobs::Sink;
use crate::lag::EvaluatorLag;

/// How often a job waiting for the evaluator looks at its lag again.
const LAG_POLL: Duration = Duration::from_millis(250);
/// How long a published page is remembered: longer than a lag reading is reused.
const REMEMBER_PAGES: Duration = Duration::from_secs(5);

pub struct Paced<S> {
    inner: S,
    per_second: u32,
    max_wait: Duration,
    labels: Vec<(&'static str, String)>,
    /// The evaluator's lag and the most it may be before publishing waits.
    lag: Option<(Arc<EvaluatorLag>, i64)>,
    /// When the job's publishing began and how many records it published since.
    sent: Mutex<(Instant, u64)>,
    /// The pages of the last few seconds (when published, records): a lag reading older than
    /// a page does not count it yet, and is reused for a second, so without them a job
    /// publishing 2,000 records/s would overshoot the evaluator's allowed lag by as much.
    recent: Mutex<VecDeque<(Instant, u64)>>,
    /// Cuts the waits short: at shutdown the page in hand is published at once, so that the job
    /// can checkpoint and hand its lease back within the grace period.
    stop: CancellationToken,
}

impl<S: Sink> Paced<S> {
    /// `per_second` 0 = no limit; no single wait lasts longer than `max_wait` (the job renews
    /// its lease between pages).
    pub fn new(
        inner: S,
        per_second: u32,
        max_wait: Duration,
        labels: &[(&'static str, String)],
    ) -> Paced<S> {
        Paced {
            inner,
            per_second,
            max_wait,
            labels: labels.to_vec(),
            lag: None,
            sent: Mutex::new((Instant::now(), 0)),
            recent: Mutex::new(VecDeque::new()),
            stop: CancellationToken::new(),
        }
    }

    /// Also waits (within the same `max_wait` per page) while the evaluator's lag exceeds `max`.
    pub fn with_lag(mut self, lag: Option<Arc<EvaluatorLag>>, max: i64) -> Paced<S> {
        self.lag = lag.filter(|_| max > 0).map(|lag| (lag, max));
        self
    }

    /// No wait outlasts `stop`.
    pub fn stopped_by(mut self, stop: CancellationToken) -> Paced<S> {
        self.stop = stop;
        self
    }

    async fn sleep(&self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.stop.cancelled() => {}
        }
    }

    async fn wait_for_the_evaluator(&self, deadline: Instant) {
        let Some((lag, max)) = &self.lag else {
            return;
        };
        while Instant::now() < deadline
            && !self.stop.is_cancelled()
            && self.behind(lag).await.is_some_and(|l| l > *max)
        {
            self.sleep(LAG_POLL.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    /// The evaluator's lag: the last reading plus what this job published after it began.
    async fn behind(&self, lag: &Arc<EvaluatorLag>) -> Option<i64> {
        let reading = lag.current().await?;
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        Some(behind(reading, &recent))
    }

    fn remember(&self, count: u64) {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        while recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > REMEMBER_PAGES)
        {
            recent.pop_front();
        }
        recent.push_back((now, count));
    }

    /// How long to wait before publishing more, at `now`.
    fn wait(&self, now: Instant) -> Duration {
        if self.per_second == 0 {
            return Duration::ZERO;
        }
        let (start, sent) = *self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let due = start + Duration::from_secs_f64(sent as f64 / f64::from(self.per_second));
        due.saturating_duration_since(now).min(self.max_wait)
    }
}

/// A lag reading begun at `read_at`, plus the pages published since, which it cannot count.
fn behind((read_at, lag): (Instant, i64), recent: &VecDeque<(Instant, u64)>) -> i64 {
    let unseen: u64 = recent
        .iter()
        .filter(|(at, _)| *at >= read_at)
        .map(|(_, n)| n)
        .sum();
    lag.saturating_add(i64::try_from(unseen).unwrap_or(i64::MAX))
}

impl<S: Sink> Sink for Paced<S> {
    async fn publish(&self, events: Vec<CrmEvent>) -> Result<usize, String> {
        let started = Instant::now();
        let wait = self.wait(started);
        if !wait.is_zero() {
            self.sleep(wait).await;
        }
        self.wait_for_the_evaluator(started + self.max_wait).await;
        let published = self.inner.publish(events).await?;
        let count = published as u64;
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).1 += count;
        self.remember(count);
        metrics::counter!(crate::metric_definitions::PUBLISHED, &self.labels).increment(count);
        Ok(published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    impl Sink for Nowhere {
        async fn publish(&self, events: Vec<CrmEvent>) -> Result<usize, String> {
            Ok(events.len())
        }
    }

    #[tokio::test]
    async fn publishing_keeps_to_the_rate() {
        let paced = Paced::new(Nowhere, 100, Duration::from_secs(10), &[]);
        let started = Instant::now();
        for _ in 0..4 {
            paced.publish(vec![CrmEvent::default(); 10]).await.unwrap();
        }
        // 30 records were published before the last page: it waited until 0.3 s.
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(290), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn pages_published_after_a_lag_reading_count_as_lag() {
        let read_at = Instant::now();
        let before = read_at.checked_sub(Duration::from_millis(500)).unwrap();
        let recent = VecDeque::from([
            (before, 200),
            (read_at + Duration::from_millis(100), 300),
            (read_at + Duration::from_millis(600), 400),
        ]);
        // The reading of 100 already holds the page before it; the two after it are on top.
        assert_eq!(behind((read_at, 100), &recent), 800);
        assert_eq!(behind((read_at, 100), &VecDeque::new()), 100);
    }

    #[test]
    fn no_limit_and_the_longest_wait() {
        let unlimited = Paced::new(Nowhere, 0, Duration::from_secs(10), &[]);
        *unlimited.sent.lock().unwrap() = (Instant::now(), 1_000_000);
        assert_eq!(unlimited.wait(Instant::now()), Duration::ZERO);
        let slow = Paced::new(Nowhere, 1, Duration::from_secs(2), &[]);
        *slow.sent.lock().unwrap() = (Instant::now(), 1_000);
        assert_eq!(slow.wait(Instant::now()), Duration::from_secs(2));
    }
}
