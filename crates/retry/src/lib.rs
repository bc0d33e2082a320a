//! The one retry pacing of crm-sync: capped exponential backoff with jitter.
//!
//! Every loop that retries something that may work later (a broker or database that is away,
//! a CRM API answering 5xx, a lost `LISTEN` connection) waits with a [`Backoff`]: the delay
//! starts at `initial`, grows by `factor` after each wait up to `max`, and goes back to
//! `initial` once the retried thing works again ([`Backoff::reset`]). Each wait is drawn from
//! the upper part of the current delay, so that replicas or clients failing together do not
//! retry in lockstep, and never exceeds `max`.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Capped exponential backoff with jitter; see the crate documentation.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    current: Duration,
}

impl Backoff {
    /// Starts at `initial`, doubles after each wait up to `max`; each wait is drawn from the
    /// upper half of the current delay.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.min(max);
        Backoff {
            initial,
            max,
            factor: 2.0,
            jitter: 0.5,
            current: initial,
        }
    }

    /// How much the delay grows after each wait (at least 1: it never shrinks).
    pub fn factor(mut self, factor: f64) -> Backoff {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            2.0
        };
        self
    }

    /// Which share of the current delay a wait may fall short of it by: 0 waits exactly the
    /// delay, 0.5 anywhere in its upper half (the default), 1 anywhere from zero to it.
    pub fn jitter(mut self, jitter: f64) -> Backoff {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.5
        };
        self
    }

    /// The delay the next wait is drawn from (before jitter), for logs.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The next wait, then grows the delay.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.grown(delay);
        let short_by = self.jitter * rand::rng().random::<f64>();
        delay.mul_f64(1.0 - short_by)
    }

    /// The delay after `failures` consecutive failures, without jitter: for retries scheduled
    /// from a stored attempt count rather than waited for in a loop.
    pub fn delay_after(&self, failures: u32) -> Duration {
        let mut delay = self.initial;
        for _ in 0..failures {
            if delay >= self.max {
                break;
            }
            delay = self.grown(delay);
        }
        delay
    }

    fn grown(&self, delay: Duration) -> Duration {
        Duration::try_from_secs_f64(delay.as_secs_f64() * self.factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The retried thing worked: the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Sleeps the next wait; false if `cancel` fired first (the caller should stop retrying).
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }

    /// Sleeps the next wait, for retries that are bounded by an attempt count, not by shutdown.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delay_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS).jitter(0.0);
        let waits: Vec<Duration> = (0..6).map(|_| backoff.next_delay()).collect();
        assert_eq!(
            waits,
            [100 * MS, 200 * MS, 400 * MS, 800 * MS, 1000 * MS, 1000 * MS]
        );
    }

    #[test]
    fn a_custom_factor_sets_the_growth() {
        let mut backoff = Backoff::new(100 * MS, 10_000 * MS).factor(3.0).jitter(0.0);
        let waits: Vec<Duration> = (0..3).map(|_| backoff.next_delay()).collect();
        assert_eq!(waits, [100 * MS, 300 * MS, 900 * MS]);
        let mut never_shrinks = Backoff::new(100 * MS, 1000 * MS).factor(0.5).jitter(0.0);
        never_shrinks.next_delay();
        assert_eq!(never_shrinks.next_delay(), 100 * MS);
    }

    #[test]
    fn reset_starts_over_from_the_initial_delay() {
        let mut backoff = Backoff::new(100 * MS, 1000 * MS).jitter(0.0);
        for _ in 0..5 {
            backoff.next_delay();
        }
        assert_eq!(backoff.current(), 1000 * MS);
        backoff.reset();
        assert_eq!(backoff.current(), 100 * MS);
        assert_eq!(backoff.next_delay(), 100 * MS);
    }

    #[test]
    fn jitter_stays_within_its_share_below_the_delay() {
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let mut backoff = Backoff::new(1000 * MS, 1000 * MS);
            let wait = backoff.next_delay();
            assert!(wait >= 500 * MS && wait <= 1000 * MS, "{wait:?}");
            seen_low |= wait < 600 * MS;
            seen_high |= wait > 900 * MS;
        }
        assert!(seen_low && seen_high, "waits spread over the upper half");
        for _ in 0..2000 {
            let wait = Backoff::new(1000 * MS, 1000 * MS).jitter(0.25).next_delay();
            assert!(wait >= 750 * MS && wait <= 1000 * MS, "{wait:?}");
        }
    }

    #[test]
    fn the_delay_after_a_count_of_failures_matches_the_waits() {
        let backoff = Backoff::new(30_000 * MS, 3_600_000 * MS);
        assert_eq!(backoff.delay_after(0), 30_000 * MS);
        assert_eq!(backoff.delay_after(3), 240_000 * MS);
        assert_eq!(backoff.delay_after(7), 3_600_000 * MS);
        assert_eq!(backoff.delay_after(u32::MAX), 3_600_000 * MS);
        let huge = Backoff::new(Duration::from_secs(1), Duration::MAX);
        assert_eq!(huge.delay_after(u32::MAX), Duration::MAX, "no overflow");
    }

    #[test]
    fn the_initial_delay_never_exceeds_the_cap() {
        let mut backoff = Backoff::new(5000 * MS, 1000 * MS).jitter(0.0);
        assert_eq!(backoff.next_delay(), 1000 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_sleeps_the_delay_and_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let mut backoff = Backoff::new(100 * MS, 1000 * MS).jitter(0.0);
        let started = tokio::time::Instant::now();
        assert!(backoff.wait(&cancel).await);
        assert_eq!(started.elapsed(), 100 * MS);

        let waiting = tokio::spawn({
            let cancel = cancel.clone();
            async move { backoff.wait(&cancel).await }
        });
        tokio::time::sleep(50 * MS).await;
        cancel.cancel();
        assert!(!waiting.await.unwrap(), "a cancelled wait says stop");
        assert!(started.elapsed() < 300 * MS);
    }
}
