//! State shared by every route of one running emulator: the directory, the signing keys, the
//! counters, fault settings, the request log and the assertion-replay memory.
//!
//! Identity routes use all of it; the Exchange Online routes keep their state in
//! [`crate::exchange::Exchange`]. Nothing in this module talks HTTP.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::counters::CounterSet;
use crate::directory::Directory;
use crate::faults::Faults;
use crate::pki::RsaCredential;
use crate::request_log::RequestLog;

pub(crate) struct Shared {
    /// `https://localhost:PORT`, no trailing slash.
    pub base_url: String,
    pub directory: Directory,
    /// Signs access tokens (`kid` = `x5t` = its SHA-1 thumbprint).
    pub signing: RsaCredential,
    /// The emulator's own external identity provider, for workload identity federation.
    pub federation: RsaCredential,
    /// Decrypts SecureString parameters; its public half is published in the ready info.
    pub secure_string: rsa::PrivateKey,
    /// The App Service `IDENTITY_HEADER` secret.
    pub identity_header: String,
    pub counters: CounterSet,
    pub faults: Faults,
    pub log: RequestLog,
    pub replay: ReplayCache,
    /// Authorization codes and refresh tokens of the delegated (user) flows.
    pub sign_in: crate::identity::delegated::SignInState,
    /// The Exchange Online half: organisations, faults, throttling, its request log.
    pub exchange: crate::exchange::Exchange,
    /// Remote PowerShell: open shells and the on-premises credentials.
    pub rps: crate::rps::Rps,
    /// Security & Compliance: searches, purge actions and policies per tenant, and how the
    /// Exchange front door treats regional hosts.
    pub compliance: crate::compliance::Compliance,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The federation issuer, `{base_url}/_federation`.
    pub(crate) fn federation_issuer(&self) -> String {
        format!("{}/_federation", self.base_url)
    }
}

/// Remembers the `jti` of accepted client assertions until they expire.
///
/// Policy (a deliberate choice, tested): the *same* assertion sent again is accepted, because
/// MSAL reuses one assertion for about 540 s and Entra accepts that (msal-python's
/// `AutoRefresher`; see docs/protocol/entra-auth.md §1.4). A *different* assertion that reuses a
/// `jti` already seen for the same client is a replay and is refused with AADSTS50027.
#[derive(Debug, Default)]
pub(crate) struct ReplayCache {
    seen: Mutex<HashMap<(String, String), Seen>>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    /// SHA-256 of the whole assertion.
    digest: [u8; 32],
    /// When we may forget it (the assertion's `exp` plus clock skew).
    forget_at: i64,
}

/// The replay cache's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// First time, or the identical assertion again.
    Fresh,
    /// Another assertion already used this `jti`.
    Replayed,
}

/// Upper bound on remembered `jti`s; beyond it, the oldest-expiring are forgotten first.
const MAX_REMEMBERED: usize = 100_000;

impl ReplayCache {
    pub(crate) fn check_and_remember(
        &self,
        client_id: &str,
        jti: &str,
        digest: [u8; 32],
        forget_at: i64,
        now: i64,
    ) -> Replay {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let key = (client_id.to_owned(), jti.to_owned());
        if let Some(prior) = seen.get(&key)
            && prior.forget_at > now
        {
            return if prior.digest == digest {
                Replay::Fresh
            } else {
                Replay::Replayed
            };
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.retain(|_, s| s.forget_at > now);
            if seen.len() >= MAX_REMEMBERED
                && let Some(oldest) = seen
                    .iter()
                    .min_by_key(|(_, s)| s.forget_at)
                    .map(|(k, _)| k.clone())
            {
                seen.remove(&oldest);
            }
        }
        seen.insert(key, Seen { digest, forget_at });
        Replay::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_resend_is_fresh_different_is_replay() {
        let cache = ReplayCache::default();
        assert_eq!(
            cache.check_and_remember("c", "j", [1; 32], 100, 0),
            Replay::Fresh
        );
        assert_eq!(
            cache.check_and_remember("c", "j", [1; 32], 100, 1),
            Replay::Fresh
        );
        assert_eq!(
            cache.check_and_remember("c", "j", [2; 32], 100, 2),
            Replay::Replayed
        );
        assert_eq!(
            cache.check_and_remember("other", "j", [2; 32], 100, 2),
            Replay::Fresh
        );
        // Forgotten after expiry.
        assert_eq!(
            cache.check_and_remember("c", "j", [3; 32], 300, 101),
            Replay::Fresh
        );
    }
}
