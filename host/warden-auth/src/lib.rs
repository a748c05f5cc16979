//! # warden-auth: Entra ID app-only credentials and tokens
//!
//! Turns an operator's configuration (the `AZURE_*` variables, a TOML profile, flags) into a
//! credential, acquires app-only access tokens for the Exchange resource from the Microsoft
//! Entra ID token endpoint, caches and refreshes them, and explains what a token can and
//! cannot do ([`diagnose`]).
//!
//! What it refuses to do: hand out a token or a secret in anything that prints (every secret
//! lives in a type whose `Debug` is redacted and which zeroizes on drop), take a secret from a
//! command-line value, talk to an authority over plain `http://`, or retry a request that Entra
//! rejected as a configuration error.
//!
//! The main types: [`config::AuthSettings`] (where values come from), [`Credential`] (how a
//! token is obtained), [`TokenProvider`] (cache, single-flight, refresh, retries) and
//! [`AccessToken`].
#![deny(missing_docs)]

pub mod assertion;
pub mod certificate;
pub mod clock;
pub mod cloud;
pub mod config;
pub mod credential;
pub mod diagnose;
pub mod endpoint;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod provider;
pub mod retry;
mod roots;
pub mod secret;
pub mod transport;

pub use certificate::CertificateKey;
pub use clock::{Clock, SystemClock};
pub use cloud::Cloud;
pub use credential::Credential;
pub use error::{AuthError, EntraError, Result};
pub use provider::TokenProvider;
pub use retry::{Jitter, RetryPolicy};
pub use secret::{AccessToken, Secret};
pub use transport::{
    Auth, HttpRequest, HttpResponse, HttpTransport, ReqwestTransport, SendFailure,
};
