//! Runtime fault injection for the Entra token endpoints (v1 and v2): a queue of canned
//! failures served before any real processing, added latency, the lifetime (and `refresh_in`)
//! of tokens issued from now on, and early expiry of every access token issued so far.
//!
//! Faults apply to client-credentials token POSTs only, not to discovery, keys or the
//! managed-identity endpoints. Each queued fault answers exactly one request, in order; an empty
//! queue means normal service. Driven in-process through [`Faults`] or over HTTP at
//! `/_exosim/faults` with a [`FaultsUpdate`] body.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One canned failure of the token endpoint. Bodies follow Entra's error shape with
/// `error = "temporarily_unavailable"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TokenFault {
    /// 503, AADSTS90033 (directory service unavailable), with `Retry-After` when given.
    ServiceUnavailable {
        /// `Retry-After` in seconds; none when absent.
        #[serde(default)]
        retry_after_secs: Option<u64>,
    },
    /// 429, AADSTS90055 (tenant throttling), always with `Retry-After`.
    TooManyRequests {
        /// `Retry-After` in seconds.
        retry_after_secs: u64,
    },
    /// 500, AADSTS50000 (token issuance error).
    InternalServerError,
}

/// A fault to queue `count` times (HTTP form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedFault {
    /// The fault.
    #[serde(flatten)]
    pub fault: TokenFault,
    /// How many consecutive token requests get it (default 1).
    #[serde(default = "one")]
    pub count: usize,
}

fn one() -> usize {
    1
}

/// A change to the fault settings, as `POST /_exosim/faults` takes it; absent fields are left
/// alone. Example: `{"push":[{"kind":"too_many_requests","retry_after_secs":1,"count":2}],
/// "latency_ms":50,"token_lifetime_secs":5,"refresh_in_secs":0}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsUpdate {
    /// Empty the queue and remove latency before applying the rest.
    #[serde(default)]
    pub clear: bool,
    /// Faults to append to the queue.
    #[serde(default)]
    pub push: Vec<QueuedFault>,
    /// Latency added before every token-endpoint response, in milliseconds.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// Lifetime of tokens issued from now on, in seconds (at least 1).
    #[serde(default)]
    pub token_lifetime_secs: Option<u64>,
    /// `refresh_in` of tokens issued from now on, in seconds; `0` stops sending it.
    #[serde(default)]
    pub refresh_in_secs: Option<u64>,
    /// Treat every access token issued so far as expired (see [`Faults::expire_issued_tokens`]).
    #[serde(default)]
    pub expire_issued_tokens: bool,
}

/// The current fault settings (`GET /_exosim/faults`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FaultsSnapshot {
    /// Queued faults, next first.
    pub queue: Vec<TokenFault>,
    /// Added latency in milliseconds.
    pub latency_ms: u64,
    /// Lifetime of issued tokens, in seconds.
    pub token_lifetime_secs: u64,
    /// `refresh_in` of issued tokens, in seconds, if sent.
    pub refresh_in_secs: Option<u64>,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<TokenFault>,
    latency: Duration,
    token_lifetime: Duration,
    refresh_in: Option<Duration>,
    /// Generation of issued access tokens; tokens of older generations count as expired.
    token_generation: u32,
}

/// Fault injection and token-lifetime control for a running emulator.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    pub(crate) fn new(token_lifetime: Duration, refresh_in: Option<Duration>) -> Self {
        Faults {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                latency: Duration::ZERO,
                token_lifetime: clamp_lifetime(token_lifetime),
                refresh_in,
                token_generation: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `fault` for the next token request that finds the queue otherwise empty.
    pub fn push(&self, fault: TokenFault) {
        self.push_n(1, fault);
    }

    /// Queues `fault` `n` times.
    pub fn push_n(&self, n: usize, fault: TokenFault) {
        let mut state = self.lock();
        state.queue.extend(std::iter::repeat_n(fault, n));
    }

    /// Drops queued faults and added latency (token lifetime settings stay).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.queue.clear();
        state.latency = Duration::ZERO;
    }

    /// Number of queued faults not yet served.
    pub fn pending(&self) -> usize {
        self.lock().queue.len()
    }

    /// Adds `latency` before every token-endpoint response.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Sets the lifetime of tokens issued from now on (at least one second).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().token_lifetime = clamp_lifetime(lifetime);
    }

    /// Sets (or, with `None`, stops sending) `refresh_in` on tokens issued from now on.
    pub fn set_refresh_in(&self, refresh_in: Option<Duration>) {
        self.lock().refresh_in = refresh_in;
    }

    /// Makes every access token issued until now expired, as if their lifetimes had run out:
    /// the Exchange endpoint refuses them with 401 `The access token has expired.`, while
    /// tokens issued afterwards are accepted. This is token expiry in the middle of a run
    /// without waiting for it, for a client whose clock still believes its token is fresh.
    pub fn expire_issued_tokens(&self) {
        let mut state = self.lock();
        state.token_generation = state.token_generation.wrapping_add(1);
    }

    /// The generation new access tokens carry (in their `uti`, see `identity::issue`).
    pub(crate) fn token_generation(&self) -> u32 {
        self.lock().token_generation
    }

    /// Applies an update as the HTTP control endpoint receives it.
    pub fn apply(&self, update: &FaultsUpdate) {
        if update.clear {
            self.clear();
        }
        for queued in &update.push {
            self.push_n(queued.count, queued.fault);
        }
        if let Some(ms) = update.latency_ms {
            self.set_latency(Duration::from_millis(ms));
        }
        if let Some(secs) = update.token_lifetime_secs {
            self.set_token_lifetime(Duration::from_secs(secs));
        }
        if let Some(secs) = update.refresh_in_secs {
            self.set_refresh_in((secs > 0).then(|| Duration::from_secs(secs)));
        }
        if update.expire_issued_tokens {
            self.expire_issued_tokens();
        }
    }

    /// The current settings.
    pub fn snapshot(&self) -> FaultsSnapshot {
        let state = self.lock();
        FaultsSnapshot {
            queue: state.queue.iter().copied().collect(),
            latency_ms: u64::try_from(state.latency.as_millis()).unwrap_or(u64::MAX),
            token_lifetime_secs: state.token_lifetime.as_secs(),
            refresh_in_secs: state.refresh_in.map(|d| d.as_secs()),
        }
    }

    /// Takes the next queued fault and the latency to add, for one token request.
    pub(crate) fn next(&self) -> (Option<TokenFault>, Duration) {
        let mut state = self.lock();
        (state.queue.pop_front(), state.latency)
    }

    pub(crate) fn lifetimes(&self) -> (Duration, Option<Duration>) {
        let state = self.lock();
        (state.token_lifetime, state.refresh_in)
    }
}

fn clamp_lifetime(lifetime: Duration) -> Duration {
    lifetime.max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_fifo_and_update_parses() {
        let faults = Faults::new(Duration::from_secs(3599), None);
        let update: FaultsUpdate = serde_json::from_str(
            r#"{"push":[{"kind":"service_unavailable","count":2},{"kind":"too_many_requests","retry_after_secs":3}],
                "latency_ms":5,"refresh_in_secs":0,"token_lifetime_secs":0}"#,
        )
        .unwrap();
        faults.apply(&update);
        assert_eq!(faults.pending(), 3);
        assert_eq!(
            faults.next().0,
            Some(TokenFault::ServiceUnavailable {
                retry_after_secs: None
            })
        );
        faults.next();
        assert_eq!(
            faults.next(),
            (
                Some(TokenFault::TooManyRequests {
                    retry_after_secs: 3
                }),
                Duration::from_millis(5)
            )
        );
        assert_eq!(faults.next().0, None);
        assert_eq!(faults.lifetimes(), (Duration::from_secs(1), None));
        assert!(serde_json::from_str::<FaultsUpdate>(r#"{"pusj":[]}"#).is_err());
    }
}
