//! CSRF tokens: the HMAC-SHA256 of the session id and the target path (the form's action, or
//! the API path a cookie-authenticated call posts to) under a server key.
//!
//! A cross-site page can make the browser send our session cookie, but cannot read our pages,
//! so it cannot know this value; it needs no storage and dies with the session. A token is
//! good for its one target only: one that leaks from a form (a log, a referrer, a cached page)
//! cannot approve a run or start another task. The key is a
//! subkey of the service's [`ServerKey`] (random, kept in the service's state), so every
//! instance sharing that key accepts the others' tokens.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::server_key::ServerKey;
use super::session::SessionId;

/// Domain separation: this key is for CSRF tokens and nothing else.
const LABEL: &[u8] = b"exo-warden serve csrf v3";

/// The server key. Never prints.
#[derive(Clone)]
pub(crate) struct CsrfKey([u8; 32]);

impl std::fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CsrfKey(..)")
    }
}

impl CsrfKey {
    /// The CSRF key of the service whose key is `server_key`.
    pub fn derive(server_key: &ServerKey) -> Self {
        Self(server_key.subkey(LABEL))
    }

    fn mac(&self, session: &SessionId, target: &str) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        // A session id holds no NUL, so (session, target) pairs cannot run into each other.
        mac.update(session.expose().as_bytes());
        mac.update(b"\0");
        mac.update(target.as_bytes());
        mac
    }

    /// The token for `session` posting to `target` (a path, e.g. `/runs/{id}/decide`).
    pub fn token(&self, session: &SessionId, target: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(session, target).finalize().into_bytes())
    }

    /// Whether `token` is `session`'s for `target` (constant-time).
    pub fn verify(&self, session: &SessionId, target: &str, token: &str) -> bool {
        URL_SAFE_NO_PAD
            .decode(token)
            .is_ok_and(|tag| self.mac(session, target).verify_slice(&tag).is_ok())
    }
}
