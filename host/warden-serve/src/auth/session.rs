//! Sessions and pending sign-ins, kept server-side in a [`SessionStore`].
//!
//! The browser holds only an opaque 256-bit random id in an HttpOnly cookie; the store holds
//! the record under the id's SHA-256 (so a copy of the store's table is not a set of live
//! cookies), with an absolute expiry that is checked on every read, whatever the store's own
//! purging does. A sign-in always makes a new id (no fixation), and sign-out deletes the record.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::SignedIn;
use super::error::SessionStoreError;

/// Where sessions and pending sign-ins live: the service's database (SQLite or PostgreSQL
/// through `warden-store`), or [`MemorySessions`]. Keys are opaque (a prefix and a hash);
/// values are JSON; `expires_at` lets the store purge, and is checked again on every read.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores `data` under `id` until `expires_at`, replacing what was there.
    async fn put(
        &self,
        id: &str,
        data: &serde_json::Value,
        expires_at: OffsetDateTime,
    ) -> Result<(), SessionStoreError>;
    /// The data under `id`, if any (an expired record may be returned; the caller checks).
    async fn get(&self, id: &str) -> Result<Option<serde_json::Value>, SessionStoreError>;
    /// Removes `id` (absent is not an error).
    async fn delete(&self, id: &str) -> Result<(), SessionStoreError>;
}

/// An in-process [`SessionStore`]: for tests and a single instance that may lose its sessions
/// on restart. Expired records are dropped when met.
#[derive(Debug, Default)]
pub struct MemorySessions {
    records: Mutex<HashMap<String, (serde_json::Value, OffsetDateTime)>>,
}

impl MemorySessions {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records it holds (expired ones included until met).
    pub fn len(&self) -> usize {
        self.records.lock().expect("session map lock").len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn put(
        &self,
        id: &str,
        data: &serde_json::Value,
        expires_at: OffsetDateTime,
    ) -> Result<(), SessionStoreError> {
        let mut records = self.records.lock().expect("session map lock");
        let now = OffsetDateTime::now_utc();
        records.retain(|_, (_, expires)| *expires > now);
        records.insert(id.to_owned(), (data.clone(), expires_at));
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<serde_json::Value>, SessionStoreError> {
        let mut records = self.records.lock().expect("session map lock");
        match records.get(id) {
            Some((_, expires)) if *expires <= OffsetDateTime::now_utc() => {
                records.remove(id);
                Ok(None)
            }
            found => Ok(found.map(|(data, _)| data.clone())),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), SessionStoreError> {
        self.records.lock().expect("session map lock").remove(id);
        Ok(())
    }
}

/// A session id as the browser's cookie holds it: 256 random bits, base64url. It never
/// prints (`Debug` is redacted, no `Display`, no `Serialize`).
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId(String);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionId(..)")
    }
}

impl SessionId {
    /// A fresh random id.
    pub(crate) fn generate() -> Self {
        Self(random_token())
    }

    /// The id a cookie carries, if it has the shape of one (43 base64url characters).
    pub(crate) fn from_cookie(value: &str) -> Option<Self> {
        let shaped = value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        shaped.then(|| Self(value.to_owned()))
    }

    /// The value for the cookie and the CSRF MAC: secret, use only there.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The session's key in the store.
    pub(crate) fn store_key(&self) -> String {
        store_key("session", &self.0)
    }
}

/// The store key of a cookie value: a kind prefix and the value's SHA-256, so the store never
/// holds the cookie itself and a pending sign-in can never be read as a session.
pub(crate) fn store_key(kind: &str, cookie_value: &str) -> String {
    format!(
        "{kind}:{}",
        URL_SAFE_NO_PAD.encode(Sha256::digest(cookie_value.as_bytes()))
    )
}

/// 256 random bits from the thread's CSPRNG (ChaCha, seeded from the OS), base64url.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `at` as the unix seconds a record keeps, rounded up: a record lasts at least its TTL.
/// Rounded down it could end up to a second early (with a TTL of one second, at once).
pub(crate) fn unix_expiry(at: OffsetDateTime) -> i64 {
    at.unix_timestamp() + i64::from(at.nanosecond() > 0)
}

/// Whether a record stamped by [`unix_expiry`] is still valid.
pub(crate) fn unexpired(expires_at: i64) -> bool {
    expires_at > OffsetDateTime::now_utc().unix_timestamp()
}

/// A signed-in session as stored.
#[derive(Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub person: SignedIn,
    /// Unix seconds.
    pub expires_at: i64,
}

/// A sign-in between `/signin` and `/auth/callback`: the secrets of the request that only the
/// service may know. Never printed.
#[derive(Serialize, Deserialize)]
pub(crate) struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub return_to: String,
    /// Unix seconds.
    pub expires_at: i64,
}
