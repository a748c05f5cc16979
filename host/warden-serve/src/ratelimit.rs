//! What one caller can make the service do: a token bucket per person (a delegate, or a script
//! holding their token, cannot flood the service or, through it, Exchange), a token bucket per
//! client address in front of authentication (floods of bad tokens, sign-in starts and
//! callbacks stop before any token is checked or any call goes to the identity provider), and a
//! cap on the live streams (SSE) one person holds open, each with a lifetime. Over a rate: 429
//! with `Retry-After`.
//!
//! Every request takes a token of its address before anything of it is done (none left: 429),
//! and gets it back the moment it authenticates ([`RateLimiter::check`], the per-person bucket,
//! is reached only after authentication and refunds the address gate around the request).
//! Signed-in callers therefore never use up their address's budget, and hold nothing while
//! they wait (a live stream lasts minutes); a request cut before it authenticated (the client
//! hung up) stays charged, and requests let in together each took their own token. The map of
//! buckets is bounded: past [`MAX_TRACKED`] keys, full buckets are dropped, then the least
//! recently used half (a dropped key starts again with a full burst).
//!
//! Behind a reverse proxy every caller has the proxy's address. Name the proxy
//! ([`RequestLimits::trusted_proxies`], `--trusted-proxy`) and a request from it is counted
//! under the client `X-Forwarded-For` gives: the right-most entry that is not itself a trusted
//! proxy (the left-most entries are whatever the client wrote, so they are never believed).
//! `X-Forwarded-For` from any other peer is ignored.

use crate::state::json_error;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
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
#[derive(Debug, Clone)]
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
    /// Reverse proxies whose `X-Forwarded-For` names the client (none by default).
    pub trusted_proxies: Vec<IpAddr>,
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
            trusted_proxies: Vec::new(),
        }
    }
}

/// Token buckets by key.
#[derive(Debug)]
struct Buckets {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    max_tracked: usize,
}

/// Most keys tracked per limit before idle buckets (full ones), then the least recently used,
/// are dropped.
pub const MAX_TRACKED: usize = 100_000;

impl Buckets {
    fn new(limit: RateLimit) -> Self {
        Self::tracking(limit, MAX_TRACKED)
    }

    fn tracking(limit: RateLimit, max_tracked: usize) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
            max_tracked: max_tracked.max(2),
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
        if buckets.len() >= self.max_tracked {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        if buckets.len() >= self.max_tracked {
            // Still full of buckets in use (many addresses at once): the older half goes.
            let mut used: Vec<Instant> = buckets.values().map(|(_, at)| *at).collect();
            let cut = used.len() - self.max_tracked / 2;
            let (_, cutoff, _) = used.select_nth_unstable(cut);
            let cutoff = *cutoff;
            buckets.retain(|_, (_, at)| *at > cutoff);
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

    /// Gives back a token [`Buckets::take`] took (never past the burst).
    fn refund(&self, key: &str) {
        let burst = self.burst();
        self.with_bucket(key, |tokens| *tokens = (*tokens + 1.0).min(burst));
    }
}

/// The address token a request inside [`RateLimiter::gate_address`] took.
#[derive(Debug)]
struct AddressToken {
    key: String,
    /// Given back already (the request authenticated).
    refunded: AtomicBool,
}

tokio::task_local! {
    /// Refunded by [`RateLimiter::check`] inside [`RateLimiter::gate_address`]: the request
    /// authenticated.
    static ADDRESS_TOKEN: Arc<AddressToken>;
}

/// The service's limits (see the module's documentation).
#[derive(Debug)]
pub struct RateLimiter {
    person: Buckets,
    address: Buckets,
    streams: Arc<Mutex<HashMap<String, usize>>>,
    streams_per_person: usize,
    stream_lifetime: Duration,
    trusted_proxies: Vec<IpAddr>,
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
            trusted_proxies: limits
                .trusted_proxies
                .iter()
                .map(IpAddr::to_canonical)
                .collect(),
        }
    }

    /// The client a request from `peer` is counted under: `peer` itself, or, when `peer` is a
    /// trusted proxy, the right-most `X-Forwarded-For` entry that is not a trusted proxy (every
    /// header line read as one list, from the right: what lies left of that entry is the
    /// client's own writing and is never read). An entry that is not an address (`IP` or
    /// `IP:port`) before that one counts the request as the proxy's.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.contains(&ip.to_canonical());
        if !trusted(&peer) {
            return peer;
        }
        for line in headers.get_all("x-forwarded-for").iter().rev() {
            for hop in line.as_bytes().rsplit(|&b| b == b',') {
                // An empty entry (`a, , b`, a trailing comma) names nobody: skip it.
                if hop.trim_ascii().is_empty() {
                    continue;
                }
                let Some(ip) = forwarded_address(hop) else {
                    return peer;
                };
                if !trusted(&ip) {
                    return ip;
                }
            }
        }
        peer
    }

    /// Takes one token of signed-in person `who`'s bucket, or says how long until one is
    /// there. Call it once the caller authenticated: the request then no longer counts
    /// against its address.
    pub fn check(&self, who: &str) -> Result<(), Duration> {
        let _ = ADDRESS_TOKEN.try_with(|token| {
            if !token.refunded.swap(true, Ordering::AcqRel) {
                self.address.refund(&token.key);
            }
        });
        self.person.take(who)
    }

    /// Runs `request` if `address` has a token left, taking it (429 otherwise, before
    /// anything of the request is done); the token comes back when the request authenticates.
    /// `api`: the refusal is JSON.
    pub async fn gate_address(
        &self,
        address: IpAddr,
        api: bool,
        request: impl Future<Output = Response>,
    ) -> Response {
        let key = address_key(address);
        if let Err(wait) = self.address.take(&key) {
            tracing::debug!(%address, "unauthenticated requests over the address's rate");
            return too_many(
                wait,
                api,
                "too many requests from this address without a valid sign-in; wait and try again",
            );
        }
        let token = Arc::new(AddressToken {
            key,
            refunded: AtomicBool::new(false),
        });
        ADDRESS_TOKEN.scope(token, request).await
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

/// One `X-Forwarded-For` entry: an address, or an address and port as some proxies write it
/// (`203.0.113.9:51234`, `[2001:db8::1]:443`); an IPv6 zone (`fe80::1%eth0`) is dropped, as it
/// names the proxy's interface, not the client.
fn forwarded_address(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    let unzoned;
    let hop = match hop.find('%') {
        Some(at) => {
            let end = hop[at..].find(']').map_or(hop.len(), |n| at + n);
            unzoned = format!("{}{}", &hop[..at], &hop[end..]);
            unzoned.as_str()
        }
        None => hop,
    };
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// The bucket of an address: an IPv4 address, or an IPv6 address's /64 (one host usually holds
/// a whole /64, so counting its addresses apart would count nothing).
fn address_key(address: IpAddr) -> String {
    match address.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
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

    #[tokio::test]
    async fn requests_in_flight_hold_their_token_and_a_cut_one_is_charged() {
        let limiter = limiter(
            RateLimit::default(),
            RateLimit {
                burst: 2,
                per_second: 0.001,
            },
        );
        let here: IpAddr = "192.0.2.9".parse().unwrap();
        // Two requests in flight together, neither answered yet: a third is refused.
        let (hold, release) = tokio::sync::oneshot::channel::<()>();
        let slow = |wait: tokio::sync::oneshot::Receiver<()>| async move {
            let _ = wait.await;
            StatusCode::OK.into_response()
        };
        let (_hold2, release2) = tokio::sync::oneshot::channel::<()>();
        let first = limiter.gate_address(here, true, slow(release));
        let second = limiter.gate_address(here, true, slow(release2));
        let (mut first, mut second) = (Box::pin(first), Box::pin(second));
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut second).is_pending());
        let third = limiter
            .gate_address(here, true, async { StatusCode::OK.into_response() })
            .await;
        assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
        // One is cut (the client hung up) before it authenticated: still charged.
        drop(second);
        drop(hold);
        assert_eq!(first.await.status(), StatusCode::OK);
        let fourth = limiter
            .gate_address(here, true, async { StatusCode::OK.into_response() })
            .await;
        assert_eq!(fourth.status(), StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn the_map_of_buckets_stays_bounded() {
        let buckets = Buckets::tracking(
            RateLimit {
                burst: 5,
                per_second: 0.001,
            },
            100,
        );
        // Buckets in use (not full), from more keys than the cap: never more than the cap.
        for n in 0..1000 {
            buckets.take(&format!("key {n}")).unwrap();
            let tracked = buckets.buckets.lock().unwrap().len();
            assert!(tracked <= 100, "{tracked} buckets");
        }
        // The most recent key kept its count.
        buckets.take("key 999").unwrap();
        let tokens = buckets.buckets.lock().unwrap()["key 999"].0;
        assert!(tokens < 3.5, "{tokens}");
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

    fn behind(proxies: &[&str]) -> RateLimiter {
        RateLimiter::new(RequestLimits {
            trusted_proxies: proxies.iter().map(|p| p.parse().unwrap()).collect(),
            ..RequestLimits::default()
        })
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let limiter = behind(&["10.0.0.1"]);
        let spoofed = forwarded(&["203.0.113.9"]);
        assert_eq!(
            limiter.client_address(ip("198.51.100.7"), &spoofed),
            ip("198.51.100.7")
        );
        assert_eq!(
            behind(&[]).client_address(ip("10.0.0.1"), &spoofed),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn a_trusted_proxy_counts_the_right_most_untrusted_hop() {
        let limiter = behind(&["10.0.0.1", "10.0.0.2"]);
        // What the client wrote itself (left) is never believed over what the proxies added.
        let headers = forwarded(&["1.1.1.1, 203.0.113.9", "10.0.0.2"]);
        assert_eq!(
            limiter.client_address(ip("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        // An IPv4-mapped peer is the proxy too.
        assert_eq!(
            limiter.client_address(ip("::ffff:10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn what_the_client_wrote_left_of_the_proxys_entry_is_never_read() {
        let limiter = behind(&["10.0.0.1"]);
        for lines in [
            &["not-an-ip, 203.0.113.9"][..],
            &["unknown", "203.0.113.9"],
            &["1.1.1.1, 2.2.2.2", "203.0.113.9:51234"],
        ] {
            assert_eq!(
                limiter.client_address(ip("10.0.0.1"), &forwarded(lines)),
                ip("203.0.113.9"),
                "{lines:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"caf\xc3\xa9\x80, 203.0.113.9").unwrap(),
        );
        assert_eq!(
            limiter.client_address(ip("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        assert_eq!(
            limiter.client_address(ip("10.0.0.1"), &forwarded(&["[2001:db8::7]:443"])),
            ip("2001:db8::7")
        );
        // Other spellings a proxy writes: empty entries, IPv6 zones, with and without a port.
        for (lines, client) in [
            (&["203.0.113.9, "][..], "203.0.113.9"),
            (&["203.0.113.9,,", ""], "203.0.113.9"),
            (&["fe80::1%eth0"], "fe80::1"),
            (&["[fe80::1%25eth0]:443"], "fe80::1"),
        ] {
            assert_eq!(
                limiter.client_address(ip("10.0.0.1"), &forwarded(lines)),
                ip(client),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn a_trusted_proxy_without_a_usable_list_counts_as_itself() {
        let limiter = behind(&["10.0.0.1"]);
        for lines in [
            &[][..],
            &["unknown"],
            &["203.0.113.9, not-an-ip"],
            &["10.0.0.1"],
        ] {
            assert_eq!(
                limiter.client_address(ip("10.0.0.1"), &forwarded(lines)),
                ip("10.0.0.1"),
                "{lines:?}"
            );
        }
    }
}
