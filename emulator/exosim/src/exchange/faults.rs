//! Runtime fault injection and throttling for `InvokeCommand`: a queue of canned failures
//! (optionally only for one cmdlet), added latency, a strict `X-AnchorMailbox` mode, and an
//! optional per-tenant token bucket.
//!
//! Driven in-process through [`ExchangeFaults`] or over HTTP at `/_exosim/exchange-faults` with
//! an [`ExchangeFaultsUpdate`]. An update with a `tenant` applies to that tenant alone (its own
//! faults, latency and throttle, as Exchange Online throttles each tenant on its own), so a test
//! can throttle one tenant of a fleet hard while the others run. Each queued fault answers
//! exactly one InvokeCommand request that got past authentication and names a matching cmdlet,
//! in queue order; `after` lets that many matching requests through first, so a fault can hit,
//! say, the third page of a paged read. Settings made here sit over the configured ones
//! (`--throttle`, `--exchange-latency-ms`), which a clear leaves in place.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One canned failure of `InvokeCommand`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExchangeFault {
    /// 429 with a (possibly fractional) `Retry-After` and the rate headers.
    TooManyRequests {
        /// `Retry-After`, in seconds.
        retry_after_secs: f64,
    },
    /// 503.
    ServiceUnavailable,
    /// 504, with a non-JSON body (a gateway answered, not the service).
    GatewayTimeout,
    /// 500 whose error names `StorageTransientException` (the module retries those).
    TransientServerError,
    /// 500 with an error the module does not call transient (the service failed; for a whole
    /// `$batch`, after running its sub-requests).
    ServerError,
    /// 502 with a non-JSON body (a gateway lost the service's answer; for a whole `$batch`,
    /// after running its sub-requests).
    BadGateway,
    /// Close the connection with no HTTP response, without executing the cmdlet.
    ResetBeforeApply,
    /// Execute the cmdlet, apply and persist any change, then close the connection with no HTTP
    /// response: the ambiguous failure a client must not blindly retry for writes.
    ResetAfterApply,
    /// Execute the cmdlet (a write applies and is saved), then answer 200 with an HTML page
    /// instead of the JSON envelope: a proxy or captive portal that took the answer's place.
    HtmlAfterApply,
    /// Execute the cmdlet (a write applies and is saved) and log the request, then wait this
    /// long before answering: an answer that comes after the client has given up.
    SlowAnswer {
        /// The wait before the answer, in milliseconds.
        delay_ms: u64,
    },
    /// Refuse with 401 `The access token has expired.` and expire every access token issued
    /// so far ([`crate::Faults::expire_issued_tokens`]): the token ran out mid-run. Nothing is
    /// executed; a freshly minted token is accepted.
    TokenExpired,
    /// Refuse with 401 `User is not allowed to call <cmdlet>` however fresh the token: a role
    /// or consent granted a moment ago that has not reached Exchange yet. Queue it with
    /// `count: N` for "401 for the next N calls". Nothing is executed.
    Unauthorized,
}

impl ExchangeFault {
    /// The snake_case name (as in the JSON form and the request log).
    pub fn name(&self) -> &'static str {
        match self {
            ExchangeFault::TooManyRequests { .. } => "too_many_requests",
            ExchangeFault::ServiceUnavailable => "service_unavailable",
            ExchangeFault::GatewayTimeout => "gateway_timeout",
            ExchangeFault::TransientServerError => "transient_server_error",
            ExchangeFault::ServerError => "server_error",
            ExchangeFault::BadGateway => "bad_gateway",
            ExchangeFault::ResetBeforeApply => "reset_before_apply",
            ExchangeFault::ResetAfterApply => "reset_after_apply",
            ExchangeFault::HtmlAfterApply => "html_after_apply",
            ExchangeFault::SlowAnswer { .. } => "slow_answer",
            ExchangeFault::TokenExpired => "token_expired",
            ExchangeFault::Unauthorized => "unauthorized",
        }
    }
}

/// A fault to queue (HTTP form):
/// `{"kind":"reset_after_apply","count":2,"cmdlet":"Set-Mailbox","after":1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedExchangeFault {
    /// The fault.
    #[serde(flatten)]
    pub fault: ExchangeFault,
    /// How many matching requests get it (default 1).
    #[serde(default = "one")]
    pub count: usize,
    /// Only requests for this cmdlet (case-insensitive); any cmdlet when absent. `"$batch"`
    /// aims the fault at the outer `$batch` POST itself (a fault for any cmdlet never does).
    #[serde(default)]
    pub cmdlet: Option<String>,
    /// Matching requests let through untouched before the first of the `count` (default 0).
    #[serde(default)]
    pub after: usize,
}

impl QueuedExchangeFault {
    /// `fault` once, for the next request for `cmdlet` after `after` others have passed.
    pub fn for_cmdlet(cmdlet: &str, after: usize, fault: ExchangeFault) -> Self {
        QueuedExchangeFault {
            fault,
            count: 1,
            cmdlet: Some(cmdlet.to_owned()),
            after,
        }
    }
}

fn one() -> usize {
    1
}

/// A change to the Exchange fault settings (`POST /_exosim/exchange-faults`); absent fields are
/// left alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeFaultsUpdate {
    /// Empty the queue, remove latency and leave strict anchor mode first.
    #[serde(default)]
    pub clear: bool,
    /// Faults to append.
    #[serde(default)]
    pub push: Vec<QueuedExchangeFault>,
    /// Latency added before every Exchange answer, in milliseconds (overriding
    /// `exosim serve --exchange-latency-ms`).
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Require a well-formed `X-AnchorMailbox`.
    #[serde(default)]
    pub strict_anchor: Option<bool>,
    /// Throttle InvokeCommand (a token bucket per tenant), overriding `exosim serve --throttle`.
    #[serde(default)]
    pub throttle: Option<Throttle>,
    /// Apply this update to one tenant only (a tenant id; the HTTP endpoint also takes a
    /// domain): `clear` clears that tenant's settings, `push` faults fire only for its requests,
    /// `latency_ms` and `throttle` are its own. `strict_anchor` is global: the HTTP endpoint
    /// refuses it with a tenant, and [`ExchangeFaults::apply`] ignores it then.
    #[serde(default)]
    pub tenant: Option<String>,
}

/// The current settings (`GET /_exosim/exchange-faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExchangeFaultsSnapshot {
    /// Queued faults, next first.
    pub queue: Vec<QueuedExchangeFault>,
    /// Latency set at run time for every tenant, in milliseconds (`--exchange-latency-ms` is
    /// not shown; 0 when none is set).
    pub latency_ms: u64,
    /// Whether strict anchor mode is on.
    pub strict_anchor: bool,
    /// The throttle set at run time for every tenant, if any (`--throttle` is not shown).
    #[serde(default)]
    pub throttle: Option<Throttle>,
    /// Per-tenant settings, by tenant id.
    #[serde(default)]
    pub tenants: std::collections::BTreeMap<String, TenantFaultsSnapshot>,
}

/// One tenant's own settings (`ExchangeFaultsSnapshot::tenants`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TenantFaultsSnapshot {
    /// Faults queued for this tenant only, next first.
    pub queue: Vec<QueuedExchangeFault>,
    /// Its added latency in milliseconds, when set.
    pub latency_ms: Option<u64>,
    /// Its throttle, when set.
    pub throttle: Option<Throttle>,
}

/// One queued fault.
#[derive(Debug, Clone)]
struct Entry {
    /// Only this tenant's requests (a tenant id, lower case); any tenant when `None`.
    tenant: Option<String>,
    cmdlet: Option<String>,
    fault: ExchangeFault,
    /// Matching requests still to let through before this one fires.
    after: usize,
}

impl Entry {
    fn for_tenant(&self, tenant_id: &str) -> bool {
        self.tenant
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case(tenant_id))
    }
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Entry>,
    /// Run-time latency for every tenant; `None` falls back to the configured one.
    latency: Option<Duration>,
    strict_anchor: bool,
    throttle: Option<Throttle>,
    tenants: HashMap<String, TenantSettings>,
}

#[derive(Debug, Default, Clone, Copy)]
struct TenantSettings {
    latency: Option<Duration>,
    throttle: Option<Throttle>,
}

/// Fault injection for the Exchange Online half of a running emulator.
#[derive(Debug, Default)]
pub struct ExchangeFaults {
    state: Mutex<State>,
}

impl ExchangeFaults {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `fault` for the next InvokeCommand request.
    pub fn push(&self, fault: ExchangeFault) {
        self.push_n(1, fault);
    }

    /// Queues `fault` for the next `n` InvokeCommand requests.
    pub fn push_n(&self, n: usize, fault: ExchangeFault) {
        self.queue(&QueuedExchangeFault {
            fault,
            count: n,
            cmdlet: None,
            after: 0,
        });
    }

    /// Queues `fault` for the next request that runs `cmdlet` (case-insensitive).
    pub fn push_for(&self, cmdlet: &str, fault: ExchangeFault) {
        self.queue(&QueuedExchangeFault::for_cmdlet(cmdlet, 0, fault));
    }

    /// Queues a fault as the HTTP form describes it: `count` times, for `cmdlet` (or any),
    /// after `after` matching requests have passed untouched.
    pub fn queue(&self, queued: &QueuedExchangeFault) {
        self.queue_in(None, queued);
    }

    /// [`ExchangeFaults::queue`] for the requests of one tenant (by tenant id) only.
    pub fn queue_for_tenant(&self, tenant_id: &str, queued: &QueuedExchangeFault) {
        self.queue_in(Some(tenant_id), queued);
    }

    fn queue_in(&self, tenant: Option<&str>, queued: &QueuedExchangeFault) {
        let mut state = self.lock();
        for i in 0..queued.count {
            state.queue.push_back(Entry {
                tenant: tenant.map(str::to_ascii_lowercase),
                cmdlet: queued.cmdlet.clone(),
                fault: queued.fault,
                after: if i == 0 { queued.after } else { 0 },
            });
        }
    }

    /// Drops every queued fault and every run-time setting (latency, throttle, each tenant's
    /// own settings) and leaves strict anchor mode; the configured `--throttle` and
    /// `--exchange-latency-ms` stay.
    pub fn clear(&self) {
        *self.lock() = State::default();
    }

    /// Adds `latency` before every Exchange answer, in place of the configured latency.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = Some(latency);
    }

    /// Requires (or stops requiring) a well-formed `X-AnchorMailbox` header.
    pub fn set_strict_anchor(&self, strict: bool) {
        self.lock().strict_anchor = strict;
    }

    /// Number of queued faults not yet served.
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    /// Throttles every tenant without a throttle of its own (`None`: back to `--throttle`).
    pub fn set_throttle(&self, throttle: Option<Throttle>) {
        self.lock().throttle = throttle;
    }

    /// Throttles one tenant (by tenant id) on its own; `None` removes its own throttle.
    pub fn set_tenant_throttle(&self, tenant_id: &str, throttle: Option<Throttle>) {
        self.lock()
            .tenants
            .entry(tenant_id.to_ascii_lowercase())
            .or_default()
            .throttle = throttle;
    }

    /// Adds `latency` before every Exchange answer to one tenant (by tenant id).
    pub fn set_tenant_latency(&self, tenant_id: &str, latency: Duration) {
        self.lock()
            .tenants
            .entry(tenant_id.to_ascii_lowercase())
            .or_default()
            .latency = Some(latency);
    }

    /// Applies an update as the HTTP control endpoint receives it (the endpoint has already
    /// resolved a `tenant` domain to its id and refused `strict_anchor` with a tenant).
    pub fn apply(&self, update: &ExchangeFaultsUpdate) {
        let Some(tenant) = update.tenant.as_deref().map(str::to_ascii_lowercase) else {
            if update.clear {
                self.clear();
            }
            for queued in &update.push {
                self.queue(queued);
            }
            if let Some(ms) = update.latency_ms {
                self.set_latency(Duration::from_millis(ms));
            }
            if let Some(strict) = update.strict_anchor {
                self.set_strict_anchor(strict);
            }
            if update.throttle.is_some() {
                self.set_throttle(update.throttle);
            }
            return;
        };
        if update.clear {
            let mut state = self.lock();
            state.tenants.remove(&tenant);
            state
                .queue
                .retain(|e| e.tenant.as_deref() != Some(tenant.as_str()));
        }
        for queued in &update.push {
            self.queue_for_tenant(&tenant, queued);
        }
        if let Some(ms) = update.latency_ms {
            self.set_tenant_latency(&tenant, Duration::from_millis(ms));
        }
        if update.throttle.is_some() {
            self.set_tenant_throttle(&tenant, update.throttle);
        }
    }

    /// The current settings.
    pub fn snapshot(&self) -> ExchangeFaultsSnapshot {
        let state = self.lock();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let queued = |tenant: Option<&str>| -> Vec<QueuedExchangeFault> {
            state
                .queue
                .iter()
                .filter(|entry| entry.tenant.as_deref() == tenant)
                .map(|entry| QueuedExchangeFault {
                    fault: entry.fault,
                    count: 1,
                    cmdlet: entry.cmdlet.clone(),
                    after: entry.after,
                })
                .collect()
        };
        let mut tenants: std::collections::BTreeMap<String, TenantFaultsSnapshot> = state
            .queue
            .iter()
            .filter_map(|e| e.tenant.clone())
            .chain(state.tenants.keys().cloned())
            .map(|t| {
                let own = state.tenants.get(&t).copied().unwrap_or_default();
                let snapshot = TenantFaultsSnapshot {
                    queue: queued(Some(&t)),
                    latency_ms: own.latency.map(millis),
                    throttle: own.throttle,
                };
                (t, snapshot)
            })
            .collect();
        tenants
            .retain(|_, t| !t.queue.is_empty() || t.latency_ms.is_some() || t.throttle.is_some());
        ExchangeFaultsSnapshot {
            queue: queued(None),
            latency_ms: state.latency.map_or(0, millis),
            strict_anchor: state.strict_anchor,
            throttle: state.throttle,
            tenants,
        }
    }

    /// The latency before an answer to `tenant_id`: its own, else the run-time one, else
    /// `configured` (`--exchange-latency-ms`).
    pub(crate) fn latency(&self, tenant_id: Option<&str>, configured: Duration) -> Duration {
        let state = self.lock();
        tenant_id
            .and_then(|t| state.tenants.get(t))
            .and_then(|t| t.latency)
            .or(state.latency)
            .unwrap_or(configured)
    }

    /// The throttle for `tenant_id`: its own, else the run-time one, else `configured`
    /// (`--throttle`).
    pub(crate) fn throttle(
        &self,
        tenant_id: &str,
        configured: Option<Throttle>,
    ) -> Option<Throttle> {
        let state = self.lock();
        state
            .tenants
            .get(tenant_id)
            .and_then(|t| t.throttle)
            .or(state.throttle)
            .or(configured)
    }

    pub(crate) fn strict_anchor(&self) -> bool {
        self.lock().strict_anchor
    }

    /// Takes the first queued fault scoped to exactly `scope` (the outer `$batch` POST), with
    /// [`ExchangeFaults::take`]'s `after` rule; a fault for any cmdlet is left for the cmdlets.
    pub(crate) fn take_scoped(&self, scope: &str, tenant_id: &str) -> Option<ExchangeFault> {
        let mut state = self.lock();
        let at = state.queue.iter().position(|entry| {
            entry.for_tenant(tenant_id)
                && entry
                    .cmdlet
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(scope))
        })?;
        if state.queue[at].after > 0 {
            state.queue[at].after -= 1;
            return None;
        }
        state.queue.remove(at).map(|entry| entry.fault)
    }

    /// Takes the first queued fault that applies to `cmdlet`, unless it is still letting
    /// requests through (then this request passes and its count goes down).
    pub(crate) fn take(&self, cmdlet: &str, tenant_id: &str) -> Option<ExchangeFault> {
        let mut state = self.lock();
        let at = state.queue.iter().position(|entry| {
            entry.for_tenant(tenant_id)
                && entry
                    .cmdlet
                    .as_deref()
                    .is_none_or(|c| c.eq_ignore_ascii_case(cmdlet))
        })?;
        if state.queue[at].after > 0 {
            state.queue[at].after -= 1;
            return None;
        }
        state.queue.remove(at).map(|entry| entry.fault)
    }
}

/// Per-tenant throttling: a token bucket of `burst` requests refilled at `per_second`
/// (HTTP form `{"per_second":0.5,"burst":1}`, command-line form `0.5:1`). Both forms are
/// checked by [`Throttle::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawThrottle")]
pub struct Throttle {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Bucket size: requests allowed in a burst.
    pub burst: u32,
}

/// A throttle that would refuse everything or nothing: its rate is not a positive finite number
/// or its burst is zero. The message names the value and what is expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidThrottle(String);

/// The JSON form before [`Throttle::new`] checks it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    per_second: f64,
    burst: u32,
}

impl TryFrom<RawThrottle> for Throttle {
    type Error = InvalidThrottle;

    fn try_from(raw: RawThrottle) -> Result<Self, InvalidThrottle> {
        Throttle::new(raw.per_second, raw.burst)
    }
}

impl Throttle {
    /// `per_second` sustained requests with bursts of `burst`; refuses a rate that is not a
    /// positive finite number and a burst of 0.
    pub fn new(per_second: f64, burst: u32) -> Result<Throttle, InvalidThrottle> {
        if !(per_second.is_finite() && per_second > 0.0) {
            return Err(InvalidThrottle(format!(
                "'{per_second}' is not a positive number of requests per second"
            )));
        }
        if burst == 0 {
            return Err(InvalidThrottle(
                "'0' is not a positive burst size".to_owned(),
            ));
        }
        Ok(Throttle { per_second, burst })
    }
}

impl std::str::FromStr for Throttle {
    type Err = InvalidThrottle;

    /// `PER_SECOND[:BURST]`, e.g. `5` or `0.5:3`; the burst defaults to one second's worth (at
    /// least 1).
    fn from_str(text: &str) -> Result<Self, InvalidThrottle> {
        let (rate, burst) = match text.split_once(':') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (text, None),
        };
        let per_second: f64 = rate.parse().map_err(|_| {
            InvalidThrottle(format!(
                "'{rate}' is not a positive number of requests per second"
            ))
        })?;
        let burst = match burst {
            Some(b) => b
                .parse::<u32>()
                .map_err(|_| InvalidThrottle(format!("'{b}' is not a positive burst size")))?,
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "clamped"
            )]
            None => per_second.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
        };
        Throttle::new(per_second, burst)
    }
}

/// The rate headers of one response, and whether it is throttled.
#[derive(Debug, Clone)]
pub(crate) struct RateState {
    pub limit: u64,
    pub remaining: u64,
    pub reset_unix_ms: i64,
    /// `Some(seconds)` when the request must be refused with 429.
    pub retry_after: Option<f64>,
}

/// Without a throttle, the rate headers count requests per tenant in fixed one-minute windows
/// against the limit of the capture (30000) and never refuse. The window length is our guess.
const UNTHROTTLED_LIMIT: u64 = 30_000;

#[derive(Debug)]
enum Bucket {
    Tokens {
        tokens: f64,
        at: Instant,
    },
    Window {
        start: Instant,
        start_unix_ms: i64,
        count: u64,
    },
}

#[derive(Debug, Default)]
pub(crate) struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Takes one request from `tenant`'s bucket.
    pub(crate) fn take(
        &self,
        throttle: Option<Throttle>,
        tenant: &str,
        now_unix_ms: i64,
    ) -> RateState {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match throttle {
            Some(t) => {
                let rate = t.per_second.max(1e-6);
                let burst = f64::from(t.burst.max(1));
                let entry = buckets.entry(tenant.to_owned()).or_insert(Bucket::Tokens {
                    tokens: burst,
                    at: now,
                });
                if !matches!(entry, Bucket::Tokens { .. }) {
                    *entry = Bucket::Tokens {
                        tokens: burst,
                        at: now,
                    };
                }
                let Bucket::Tokens { tokens, at } = entry else {
                    unreachable!("set above")
                };
                *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
                *at = now;
                let retry_after = if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    None
                } else {
                    Some(((1.0 - *tokens) / rate).max(0.001))
                };
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "bounded by burst"
                )]
                let remaining = tokens.floor() as u64;
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "milliseconds to refill a bucket"
                )]
                let reset = now_unix_ms + ((burst - *tokens) / rate * 1000.0).ceil() as i64;
                RateState {
                    limit: u64::from(t.burst.max(1)),
                    remaining,
                    reset_unix_ms: reset,
                    retry_after,
                }
            }
            None => {
                let entry = buckets.entry(tenant.to_owned()).or_insert(Bucket::Window {
                    start: now,
                    start_unix_ms: now_unix_ms,
                    count: 0,
                });
                if !matches!(entry, Bucket::Window { .. }) {
                    *entry = Bucket::Window {
                        start: now,
                        start_unix_ms: now_unix_ms,
                        count: 0,
                    };
                }
                let Bucket::Window {
                    start,
                    start_unix_ms,
                    count,
                } = entry
                else {
                    unreachable!("set above")
                };
                if now.duration_since(*start) >= Duration::from_secs(60) {
                    *start = now;
                    *start_unix_ms = now_unix_ms;
                    *count = 0;
                }
                *count += 1;
                RateState {
                    limit: UNTHROTTLED_LIMIT,
                    remaining: UNTHROTTLED_LIMIT.saturating_sub(*count),
                    reset_unix_ms: *start_unix_ms + 60_000,
                    retry_after: None,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "8d3f5c1a-2b4e-4f6a-9c7d-1e2f3a4b5c6d";

    #[test]
    fn tenant_faults_and_throttle_stay_with_their_tenant() {
        let faults = ExchangeFaults::default();
        let update: ExchangeFaultsUpdate = serde_json::from_str(
            r#"{"tenant":"A","push":[{"kind":"service_unavailable"}],"latency_ms":7,"throttle":{"per_second":0.5,"burst":1}}"#,
        )
        .unwrap();
        faults.apply(&update);
        assert_eq!(faults.take("Get-Mailbox", "b"), None, "not b's fault");
        assert_eq!(
            faults.take("Get-Mailbox", "a"),
            Some(ExchangeFault::ServiceUnavailable)
        );
        let configured = Duration::from_millis(3);
        assert_eq!(
            faults.latency(Some("a"), configured),
            Duration::from_millis(7)
        );
        assert_eq!(faults.latency(Some("b"), configured), configured);
        assert!(faults.throttle("a", None).is_some());
        assert_eq!(faults.throttle("b", None), None);
        let snapshot = faults.snapshot();
        assert_eq!(snapshot.tenants["a"].latency_ms, Some(7));
        faults.apply(&ExchangeFaultsUpdate {
            clear: true,
            tenant: Some("a".to_owned()),
            ..ExchangeFaultsUpdate::default()
        });
        assert_eq!(faults.throttle("a", None), None);
        assert!(faults.snapshot().tenants.is_empty());
    }

    #[test]
    fn throttles_that_refuse_all_or_nothing_are_refused_in_every_form() {
        for json in [
            r#"{"per_second":0,"burst":0}"#,
            r#"{"per_second":0,"burst":1}"#,
            r#"{"per_second":-2,"burst":1}"#,
            r#"{"per_second":1,"burst":0}"#,
        ] {
            let update = format!(r#"{{"throttle":{json}}}"#);
            let err = serde_json::from_str::<ExchangeFaultsUpdate>(&update).unwrap_err();
            assert!(
                err.to_string().contains("is not a positive"),
                "{json}: {err}"
            );
        }
        for text in ["0", "-1:2", "1:0", "NaN", "inf", "x"] {
            let err = text.parse::<Throttle>().unwrap_err();
            assert!(
                err.to_string().contains("is not a positive"),
                "{text}: {err}"
            );
        }
        assert_eq!("0.5:3".parse(), Throttle::new(0.5, 3));
        assert_eq!("2.5".parse::<Throttle>().unwrap().burst, 3);
        let ok: ExchangeFaultsUpdate =
            serde_json::from_str(r#"{"throttle":{"per_second":0.5,"burst":1}}"#).unwrap();
        assert_eq!(ok.throttle, Throttle::new(0.5, 1).ok());
    }

    #[test]
    fn a_clear_falls_back_to_the_configured_latency() {
        let faults = ExchangeFaults::default();
        let configured = Duration::from_millis(150);
        faults.set_latency(Duration::ZERO);
        assert_eq!(
            faults.latency(None, configured),
            Duration::ZERO,
            "overridden"
        );
        faults.clear();
        assert_eq!(faults.latency(Some("a"), configured), configured);
    }

    #[test]
    fn bucket_refuses_after_burst() {
        let limiter = Limiter::default();
        let t = Some(Throttle {
            per_second: 1.0,
            burst: 2,
        });
        assert!(limiter.take(t, "a", 0).retry_after.is_none());
        assert!(limiter.take(t, "a", 0).retry_after.is_none());
        let refused = limiter.take(t, "a", 0);
        assert!(
            refused.retry_after.is_some_and(|s| s > 0.5 && s <= 1.0),
            "{refused:?}"
        );
        assert!(limiter.take(t, "b", 0).retry_after.is_none());
    }

    #[test]
    fn cmdlet_specific_faults_wait_for_their_cmdlet() {
        let faults = ExchangeFaults::default();
        faults.push_for("Set-Mailbox", ExchangeFault::ResetAfterApply);
        faults.push(ExchangeFault::ServiceUnavailable);
        assert_eq!(
            faults.take("Get-Mailbox", T),
            Some(ExchangeFault::ServiceUnavailable)
        );
        assert_eq!(faults.take("Get-Mailbox", T), None);
        assert_eq!(
            faults.take("set-mailbox", T),
            Some(ExchangeFault::ResetAfterApply)
        );
        let update: ExchangeFaultsUpdate = serde_json::from_str(
            r#"{"push":[{"kind":"too_many_requests","retry_after_secs":0.5,"count":2,"cmdlet":"Get-Mailbox"}],"strict_anchor":true}"#,
        )
        .unwrap();
        faults.apply(&update);
        assert_eq!(faults.pending(), 2);
        assert!(faults.strict_anchor());
    }

    #[test]
    fn after_lets_matching_requests_through_first() {
        let faults = ExchangeFaults::default();
        let update: ExchangeFaultsUpdate = serde_json::from_str(
            r#"{"push":[{"kind":"slow_answer","delay_ms":5,"cmdlet":"Get-Mailbox","after":2,"count":2}]}"#,
        )
        .unwrap();
        faults.apply(&update);
        let slow = ExchangeFault::SlowAnswer { delay_ms: 5 };
        // Other cmdlets do not count towards `after`.
        assert_eq!(faults.take("Get-Recipient", T), None);
        assert_eq!(faults.take("Get-Mailbox", T), None);
        assert_eq!(faults.take("Get-Mailbox", T), None);
        assert_eq!(faults.take("Get-Mailbox", T), Some(slow));
        assert_eq!(
            faults.take("Get-Mailbox", T),
            Some(slow),
            "count follows at once"
        );
        assert_eq!(faults.take("Get-Mailbox", T), None);
        assert_eq!(faults.pending(), 0);
    }
}
