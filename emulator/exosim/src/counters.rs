//! Request and error counters, so tests can assert how often a client really went to the wire
//! (a cache hit is a request that did not happen).
//!
//! Counters only ever grow while the server runs; a [`Counters`] value is a snapshot. They count
//! requests and error codes, never request contents.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A snapshot of the emulator's counters (also served at `GET /_exosim/counters`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counters {
    /// Every POST to a token endpoint (v1 or v2), including ones answered by an injected fault.
    pub token_requests: u64,
    /// Access tokens issued, by any grant (client credentials or managed identity).
    pub tokens_issued: u64,
    /// GETs of an OIDC discovery document (v1 or v2, any tenant).
    pub discovery_requests: u64,
    /// GETs of a token-signing key set.
    pub jwks_requests: u64,
    /// GETs of the IMDS managed-identity endpoint.
    pub imds_requests: u64,
    /// GETs of the App Service managed-identity endpoint.
    pub app_service_requests: u64,
    /// GETs of the emulator's federation issuer (discovery and keys).
    pub federation_requests: u64,
    /// Token requests answered by an injected fault (see [`crate::Faults`]).
    pub faults_injected: u64,
    /// Every `InvokeCommand` request, whatever its outcome.
    pub invoke_requests: u64,
    /// Every request to the Remote PowerShell endpoint (`/PowerShell-LiveID`, `/PowerShell`).
    #[serde(default)]
    pub rps_requests: u64,
    /// Requests (InvokeCommand or Remote PowerShell) that changed a tenant's state.
    pub writes_applied: u64,
    /// Exchange requests (either transport) refused for authentication or authorisation.
    pub exchange_auth_failures: u64,
    /// Exchange requests (either transport) answered by an injected Exchange fault.
    pub exchange_faults_injected: u64,
    /// Cmdlet calls by canonical name (known cmdlets only), InvokeCommand requests and Remote
    /// PowerShell pipelines alike.
    pub cmdlets: BTreeMap<String, u64>,
    /// Error responses by code: `"AADSTS7000215"` for Entra errors, the `error` value for
    /// managed-identity errors (`"bad_request_102"`).
    pub errors: BTreeMap<String, u64>,
}

impl Counters {
    /// How many responses carried AADSTS `code`.
    pub fn aadsts(&self, code: u32) -> u64 {
        self.errors
            .get(&format!("AADSTS{code}"))
            .copied()
            .unwrap_or(0)
    }
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    TokenRequest,
    TokenIssued,
    Discovery,
    Jwks,
    Imds,
    AppService,
    Federation,
    FaultInjected,
    InvokeRequest,
    RpsRequest,
    WriteApplied,
    ExchangeAuthFailure,
    ExchangeFaultInjected,
}

#[derive(Debug, Default)]
pub(crate) struct CounterSet {
    inner: Mutex<Counters>,
}

impl CounterSet {
    pub(crate) fn bump(&self, counter: Counter) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match counter {
            Counter::TokenRequest => &mut c.token_requests,
            Counter::TokenIssued => &mut c.tokens_issued,
            Counter::Discovery => &mut c.discovery_requests,
            Counter::Jwks => &mut c.jwks_requests,
            Counter::Imds => &mut c.imds_requests,
            Counter::AppService => &mut c.app_service_requests,
            Counter::Federation => &mut c.federation_requests,
            Counter::FaultInjected => &mut c.faults_injected,
            Counter::InvokeRequest => &mut c.invoke_requests,
            Counter::RpsRequest => &mut c.rps_requests,
            Counter::WriteApplied => &mut c.writes_applied,
            Counter::ExchangeAuthFailure => &mut c.exchange_auth_failures,
            Counter::ExchangeFaultInjected => &mut c.exchange_faults_injected,
        };
        *slot += 1;
    }

    pub(crate) fn cmdlet(&self, name: &str) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *c.cmdlets.entry(name.to_owned()).or_default() += 1;
    }

    pub(crate) fn error(&self, code: &str) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *c.errors.entry(code.to_owned()).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> Counters {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
