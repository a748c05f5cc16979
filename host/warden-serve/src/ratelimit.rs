//! What one caller can make the service do: a token bucket per person (a delegate, or a script
//! holding their token, cannot flood the service or, through it, Exchange), a token bucket per
//! client address in front of authentication (floods of bad tokens, sign-in starts and
//! callbacks stop before any token is checked or any call goes to the identity provider), and a
//! cap on the live streams (SSE) one person holds open, each with a lifetime. Over a rate: 429
//! with `Retry-After`.
//!
//! An address with no token left is refused before anything of the request is done; a request
//! that did not authenticate takes its token once it is answered ([`RateLimiter::check`], the
//! per-person bucket, is reached only after authentication and tells the address gate around
//! the request so). Signed-in callers therefore never use up their address's budget, and hold
//! nothing while they wait (a live stream lasts minutes). Requests let in together may overdraw
//! the bucket: each is charged, and the address waits until the refill pays the debt back, so
//! a concurrent flood gets one wave through, not one per refill. Behind a reverse proxy every
//! caller has the proxy's address: the address limit then bounds all unauthenticated traffic
//! together, and a flood through it holds signed-in people back too.

use crate::state::json_error;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests per key: a burst, refilled at a steady rate.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests one key may make at once.
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

/// Every limit of [`RateLimiter`].
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Requests per signed-in person (object id).
    pub person: RateLimit,
    /// Requests per client address (IPv4 address, IPv6 /64) that did not authenticate.
    pub address: RateLimit,
    /// Live streams (`/runs/{id}/events`) one person may hold open at once.
    pub streams_per_person: usize,
    /// How long one live stream lasts; the browser's `EventSource` then reconnects (with
    /// `Last-Event-ID`, so nothing is sent twice).
    pub stream_lifetime: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            person: RateLimit::default(),
            // A sign-in is three or four unauthenticated requests (the page, `/signin`,
            // `/auth/callback`); room for a few people behind one address at once.
            address: RateLimit {
                burst: 60,
                per_second: 5.0,
            },
            streams_per_person: 8,
            stream_lifetime: Duration::from_secs(300),
        }
    }
}

/// Token buckets by key.
#[derive(Debug)]
struct Buckets {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Most keys tracked before idle buckets (full ones) are dropped.
const MAX_TRACKED: usize = 100_000;

impl Buckets {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn burst(&self) -> f64 {
        f64::from(self.limit.burst.max(1))
    }

    fn rate(&self) -> f64 {
        self.limit.per_second.max(0.001)
    }

    /// `key`'s bucket refilled to now; `f` sees and may change its tokens.
    fn with_bucket<T>(&self, key: &str, f: impl FnOnce(&mut f64) -> T) -> T {
        let now = Instant::now();
        let (burst, rate) = (self.burst(), self.rate());
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        f(tokens)
    }

    /// How long until `tokens` reach one.
    fn wait(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64((1.0 - tokens) / self.rate())
    }

    /// Takes one token of `key`'s bucket, or says how long until one is there.
    fn take(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |tokens| {
            if *tokens >= 1.0 {
                *tokens -= 1.0;
                Ok(())
            } else {
                Err(self.wait(*tokens))
            }
        })
    }

    /// Whether `key` has a token, without taking it.
    fn has_token(&self, key: &str) -> Result<(), Duration> {
        self.with_bucket(key, |tokens| {
            if *tokens >= 1.0 {
                Ok(())
            } else {
                Err(self.wait(*tokens))
            }
        })
    }

    /// Takes one token of `key`'s bucket even when it has none: requests let in together pay
    /// for every one of them, the bucket in debt until the refill pays it back.
    fn charge(&self, key: &str) {
        self.with_bucket(key, |tokens| *tokens -= 1.0);
    }
}

tokio::task_local! {
    /// Set by [`RateLimiter::check`] inside [`RateLimiter::gate_address`]: the request
    /// authenticated.
    static AUTHENTICATED: Arc<AtomicBool>;
}

/// The service's limits (see the module's documentation).
#[derive(Debug)]
pub struct RateLimiter {
    person: Buckets,
    address: Buckets,
    streams: Arc<Mutex<HashMap<String, usize>>>,
    streams_per_person: usize,
    stream_lifetime: Duration,
}

impl RateLimiter {
    /// The limits `limits`.
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            person: Buckets::new(limits.person),
            address: Buckets::new(limits.address),
            streams: Arc::default(),
            streams_per_person: limits.streams_per_person.max(1),
            stream_lifetime: limits.stream_lifetime,
        }
    }

    /// Takes one token of signed-in person `who`'s bucket, or says how long until one is
    /// there. Call it once the caller authenticated: the request then no longer counts
    /// against its address.
    pub fn check(&self, who: &str) -> Result<(), Duration> {
        let _ = AUTHENTICATED.try_with(|flag| flag.store(true, Ordering::Release));
        self.person.take(who)
    }

    /// Runs `request` if `address` has a token left (429 otherwise, before anything of the
    /// request is done), and takes the token once it is answered unless the request
    /// authenticated. `api`: the refusal is JSON.
    pub async fn gate_address(
        &self,
        address: IpAddr,
        api: bool,
        request: impl Future<Output = Response>,
    ) -> Response {
        let key = address_key(address);
        if let Err(wait) = self.address.has_token(&key) {
            tracing::debug!(%address, "unauthenticated requests over the address's rate");
            return too_many(
                wait,
                api,
                "too many requests from this address without a valid sign-in; wait and try again",
            );
        }
        let authenticated = Arc::new(AtomicBool::new(false));
        let response = AUTHENTICATED.scope(authenticated.clone(), request).await;
        if !authenticated.load(Ordering::Acquire) {
            self.address.charge(&key);
        }
        response
    }

    /// A place for one more live stream of `who`, held until the slot is dropped; `None` when
    /// they hold the most already.
    pub fn open_stream(&self, who: &str) -> Option<StreamSlot> {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        let open = streams.entry(who.to_owned()).or_insert(0);
        if *open >= self.streams_per_person {
            return None;
        }
        *open += 1;
        Some(StreamSlot {
            streams: self.streams.clone(),
            who: who.to_owned(),
        })
    }

    /// Live streams one person may hold open.
    pub fn streams_per_person(&self) -> usize {
        self.streams_per_person
    }

    /// How long one live stream lasts.
    pub fn stream_lifetime(&self) -> Duration {
        self.stream_lifetime
    }
}

/// One open live stream of a person; closing it (dropping this) frees the place.
#[derive(Debug)]
pub struct StreamSlot {
    streams: Arc<Mutex<HashMap<String, usize>>>,
    who: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = streams.get_mut(&self.who) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.who);
            }
        }
    }
}

/// The bucket of an address: an IPv4 address, or an IPv6 address's /64 (one host usually holds
/// a whole /64, so counting its addresses apart would count nothing).
fn address_key(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// A 429 with `Retry-After` (whole seconds, at least 1): JSON `{"error"}` for the API, text for
/// the page.
pub fn too_many(wait: Duration, api: bool, message: &str) -> Response {
    let mut response = if api {
        json_error(StatusCode::TOO_MANY_REQUESTS, message)
    } else {
        (StatusCode::TOO_MANY_REQUESTS, message.to_owned()).into_response()
    };
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(person: RateLimit, address: RateLimit) -> RateLimiter {
        RateLimiter::new(RequestLimits {
            person,
            address,
            ..RequestLimits::default()
        })
    }

    #[test]
    fn a_burst_then_refusals_each_person_apart() {
        let limiter = limiter(
            RateLimit {
                burst: 3,
                per_second: 0.5,
            },
            RateLimit::default(),
        );
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::from_secs(1) && wait <= Duration::from_secs(2));
        assert!(limiter.check("b").is_ok());
    }

    #[test]
    fn requests_let_in_together_each_pay() {
        let buckets = Buckets::new(RateLimit {
            burst: 2,
            per_second: 1.0,
        });
        // Five let in at once (each saw a token), each charged when answered.
        for _ in 0..5 {
            buckets.charge("a");
        }
        let wait = buckets.has_token("a").unwrap_err();
        assert!(wait > Duration::from_secs(3), "in debt: {wait:?}");
    }

    #[tokio::test]
    async fn only_unauthenticated_requests_use_up_an_address() {
        let limiter = limiter(
            RateLimit::default(),
            RateLimit {
                burst: 2,
                per_second: 0.001,
            },
        );
        let here: IpAddr = "192.0.2.1".parse().unwrap();
        let ok = || async { StatusCode::OK.into_response() };
        // Authenticated requests cost their address nothing: any number of them.
        for _ in 0..10 {
            let response = limiter
                .gate_address(here, true, async {
                    limiter.check("person").unwrap();
                    StatusCode::OK.into_response()
                })
                .await;
            assert_eq!(response.status(), StatusCode::OK);
        }
        // Two that never authenticate, then the third is refused before it runs.
        for _ in 0..2 {
            assert_eq!(
                limiter.gate_address(here, true, ok()).await.status(),
                StatusCode::OK
            );
        }
        let ran = AtomicBool::new(false);
        let refused = limiter
            .gate_address(here, true, async {
                ran.store(true, Ordering::Relaxed);
                StatusCode::OK.into_response()
            })
            .await;
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(!ran.load(Ordering::Relaxed), "refused before it ran");
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        // Another address, and the same /64 of IPv6, counted as one.
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            limiter.gate_address(other, true, ok()).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            address_key("2001:db8:1:2:aaaa::1".parse().unwrap()),
            address_key("2001:db8:1:2:bbbb::2".parse().unwrap())
        );
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            address_key(here)
        );
    }

    #[test]
    fn streams_are_capped_per_person_and_freed_on_close() {
        let limiter = RateLimiter::new(RequestLimits {
            streams_per_person: 2,
            ..RequestLimits::default()
        });
        let first = limiter.open_stream("a").unwrap();
        let _second = limiter.open_stream("a").unwrap();
        assert!(limiter.open_stream("a").is_none());
        assert!(limiter.open_stream("b").is_some());
        drop(first);
        assert!(limiter.open_stream("a").is_some());
    }
}
