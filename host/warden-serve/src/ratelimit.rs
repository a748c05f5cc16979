//! A token bucket per person: a delegate (or a script holding their token) cannot flood the
//! service or, through it, Exchange. Answered 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per person: a burst, refilled at a steady rate.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests one person may make at once.
    pub burst: u32,
    /// Requests per second refilled.
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 60,
            per_second: 10.0,
        }
    }
}

/// The buckets, keyed by person (object id).
#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Most people tracked before idle buckets (full ones) are dropped.
const MAX_TRACKED: usize = 100_000;

impl RateLimiter {
    /// Buckets of `limit`.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `who`'s bucket, or says how long until one is there.
    pub fn check(&self, who: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(self.limit.burst.max(1));
        let rate = self.limit.per_second.max(0.001);
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(who.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_each_person_apart() {
        let limiter = RateLimiter::new(RateLimit {
            burst: 3,
            per_second: 0.5,
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(2));
        assert!(limiter.check("b").is_ok());
    }
}
