//! Types that hold secrets: a client secret, a PFX password, an access token.
//!
//! They never print (their `Debug` says only what kind of secret it is), have no `Display` or
//! `Serialize`, and zeroize their memory on drop. Reading the value takes an explicit
//! `expose()` call, which is easy to find in review.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// A secret string (client secret, certificate password, federated assertion).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value; the `String` is moved in, so no unzeroized copy is left behind.
    pub fn new(value: String) -> Self {
        Self(SecretString::from(value))
    }

    /// The secret's value. Call it only where the value goes on the wire or into a KDF.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// True when the secret is the empty string (an unset password, for example).
    pub fn is_empty(&self) -> bool {
        self.0.expose_secret().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// An access token with its lifetime, as the token endpoint returned it.
///
/// Cheap to clone (the value is shared); the value is zeroized when the last clone drops.
#[derive(Clone)]
pub struct AccessToken {
    value: Arc<SecretString>,
    /// When the token stops being valid, on the client's clock at receipt.
    pub expires_on: SystemTime,
    /// When a proactive refresh should start (`refresh_in`, else 5 minutes before expiry).
    pub refresh_on: SystemTime,
}

impl AccessToken {
    /// Wraps a token value with its lifetime.
    pub fn new(value: String, expires_on: SystemTime, refresh_on: SystemTime) -> Self {
        Self {
            value: Arc::new(SecretString::from(value)),
            expires_on,
            refresh_on,
        }
    }

    /// The raw token. Only a transport building an `Authorization` header may call this.
    pub fn expose(&self) -> &str {
        self.value.expose_secret()
    }

    /// True when both handles share the same token value (same issuance).
    pub fn same_as(&self, other: &AccessToken) -> bool {
        Arc::ptr_eq(&self.value, &other.value) || self.expose() == other.expose()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("value", &"[redacted]")
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("canary-secret-value".into());
        let token = AccessToken::new(
            "canary.token.value".into(),
            SystemTime::now(),
            SystemTime::now(),
        );
        let printed = format!("{secret:?} {token:?} {secret:#?} {token:#?}");
        assert!(!printed.contains("canary"), "{printed}");
        assert_eq!(secret.expose(), "canary-secret-value");
    }
}
