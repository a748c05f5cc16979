//! # warden-vocab: the words exo-warden's crates share
//!
//! Whether a cmdlet reads or writes ([`CmdletKind`]), which service runs it ([`Endpoint`]), what
//! a cmdlet or parameter name may look like and how two names compare ([`names`]), which
//! parameters Exchange takes encrypted ([`secure`]), how an OPATH filter is cut into tokens
//! ([`opath`]), who asks for a call ([`Principal`]) and on whose behalf ([`Delegation`]). The
//! policy, the audit trail, the Exchange session and the broker all speak these words; keeping
//! them here lets the policy and audit crates stay free of any network or async crate.
//!
//! What it refuses: nothing at run time beyond the name checks of [`names`] and the filter
//! characters of [`opath`]; by construction
//! it depends on no network, async or project crate.
#![deny(missing_docs)]

mod delegation;
mod endpoint;
mod kind;
pub mod names;
pub mod opath;
mod principal;
pub mod secure;

pub use delegation::{DelegatedPerson, Delegation};
pub use endpoint::{COMPLIANCE_NOUNS, EXCHANGE_NOUNS, Endpoint};
pub use kind::{CmdletKind, READ_VERBS};
pub use principal::{PluginSignature, Principal, SignatureVerdict, sha256_hex};
pub use secure::{SecureKind, secure_parameter, secure_parameter_named};
