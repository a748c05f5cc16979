//! The service's own secret key: a random 256-bit value the service keeps in its state (file
//! or store), never derived from the client secret, so rotating one never weakens the other.
//! Each use gets its own subkey (HMAC-SHA256 of a label): CSRF tokens, the sealed sign-in cookie.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The service's secret key (256 random bits). Never prints; compare by use, not by value.
#[derive(Clone)]
pub struct ServerKey([u8; 32]);

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

impl ServerKey {
    /// A fresh random key (the OS-seeded CSPRNG): make it once, store it with
    /// [`expose_bytes`](Self::expose_bytes), load it at every start with
    /// [`from_bytes`](Self::from_bytes), so that instances and restarts agree.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Self(bytes)
    }

    /// The key stored earlier.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key's bytes, to store it (in a file only the service can read, or the store).
    pub fn expose_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The subkey for `label` (domain separation between uses).
    pub(crate) fn subkey(&self, label: &[u8]) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label);
        mac.finalize().into_bytes().into()
    }
}
