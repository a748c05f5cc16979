//! The one retry policy of every warden client (the token provider, both Exchange
//! transports): how many attempts, how long to wait before the next one, and when to stop,
//! in the manner of the Azure SDK's `RetryPolicy` (exponential back-off, a cap per wait, a cap on
//! the whole, jitter so many clients do not retry in lockstep).
//!
//! It only answers "wait how long, or stop?": *whether* a failure may be retried at all is the
//! caller's rule (a token request that Entra refused as misconfigured, an Exchange write whose
//! outcome is unknown), so the write-safety rule lives once, in `warden-exchange`'s pipeline.

use rand::RngExt;
use std::time::Duration;

/// How much of each back-off is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Anywhere in `[0, ceiling]` (AWS's "full jitter"): the token endpoint, shared by many.
    Full,
    /// Anywhere in `[ceiling / 2, ceiling]`: a back-off that still backs off (Exchange).
    Half,
}

/// Retry settings: attempts, exponential back-off, caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included).
    pub max_attempts: u32,
    /// The first back-off; it doubles each attempt.
    pub base_delay: Duration,
    /// The largest single back-off.
    pub max_delay: Duration,
    /// Give up when the next wait would pass this much time since the first attempt.
    pub max_total: Duration,
    /// How each back-off is randomised.
    pub jitter: Jitter,
}

/// The token endpoint's policy: 4 attempts from 500 ms, at most 30 s a wait and a minute in all.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_total: Duration::from_secs(60),
            jitter: Jitter::Full,
        }
    }
}

impl RetryPolicy {
    /// Exchange's policy: `max_attempts` in all (the module makes 6), back-off from
    /// `base_delay` doubling to `max_delay`, half-jittered, no cap on the whole (a caller's
    /// deadline is the cap there).
    pub fn exchange(max_attempts: u32, base_delay: Duration, max_delay: Duration) -> Self {
        Self {
            max_attempts,
            base_delay,
            max_delay,
            max_total: Duration::MAX,
            jitter: Jitter::Half,
        }
    }

    /// The largest back-off after failed attempt `attempt` (1-based): `base_delay × 2^(attempt-1)`,
    /// capped at `max_delay`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_delay)
    }

    /// The back-off after failed attempt `attempt` (1-based), jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        let low = match self.jitter {
            Jitter::Full => 0.0,
            Jitter::Half => 0.5,
        };
        self.ceiling(attempt)
            .mul_f64(rand::rng().random_range(low..=1.0))
    }

    /// Whether attempt `attempt` was the last one allowed.
    pub fn is_last(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts
    }

    /// The wait before the attempt after `attempt`, `elapsed` after the first began: the
    /// back-off, never shorter than the server's `retry_after`; `None` when the policy is spent
    /// (no attempts left, or the wait would pass `max_total`).
    pub fn next_wait(
        &self,
        attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        let wait = self.delay(attempt).max(retry_after.unwrap_or_default());
        if self.is_last(attempt) || elapsed.saturating_add(wait) > self.max_total {
            return None;
        }
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_its_cap() {
        let policy = RetryPolicy::exchange(6, Duration::from_secs(2), Duration::from_secs(60));
        let ceilings: Vec<_> = (1..=7).map(|a| policy.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 60, 60]);
        // A huge attempt number neither overflows nor passes the cap.
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn half_jitter_stays_between_half_and_the_ceiling() {
        let policy = RetryPolicy::exchange(6, Duration::from_secs(2), Duration::from_secs(60));
        for attempt in 1..=6 {
            for _ in 0..200 {
                let wait = policy.delay(attempt);
                let ceiling = policy.ceiling(attempt);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{attempt}: {wait:?}"
                );
            }
        }
    }

    #[test]
    fn full_jitter_may_go_down_to_nothing_but_not_past_the_ceiling() {
        let policy = RetryPolicy::default();
        let waits: Vec<_> = (0..500).map(|_| policy.delay(1)).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(500)));
        assert!(
            waits.iter().any(|w| *w < Duration::from_millis(250)),
            "full jitter reaches below half the ceiling"
        );
    }

    #[test]
    fn the_server_s_retry_after_is_a_floor() {
        let policy = RetryPolicy::default();
        let wait = policy
            .next_wait(1, Duration::ZERO, Some(Duration::from_secs(7)))
            .unwrap();
        assert_eq!(wait, Duration::from_secs(7));
    }

    #[test]
    fn the_policy_is_spent_after_its_last_attempt_or_its_total() {
        let policy = RetryPolicy::default();
        assert!(policy.next_wait(3, Duration::ZERO, None).is_some());
        assert!(
            policy.next_wait(4, Duration::ZERO, None).is_none(),
            "4 attempts in all"
        );
        assert!(
            policy
                .next_wait(1, Duration::from_secs(59), Some(Duration::from_secs(2)))
                .is_none(),
            "the wait would pass the minute in all"
        );
        let exchange = RetryPolicy::exchange(2, Duration::from_millis(1), Duration::from_millis(1));
        assert!(
            exchange
                .next_wait(1, Duration::from_secs(86_400), None)
                .is_some()
        );
        assert!(exchange.is_last(2));
    }
}
