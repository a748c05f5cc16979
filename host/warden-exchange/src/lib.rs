//! # warden-exchange: the authenticated Exchange Online admin session
//!
//! Runs cmdlets through the REST `InvokeCommand` API the ExchangeOnlineManagement module uses
//! (`docs/protocol/exo-protocol.md` §1): the module's headers and parameter encoding, results as a
//! stream of pages, typed errors, retries that never repeat a write whose outcome is unknown,
//! one token re-mint on 401, and a per-tenant concurrency limit with shared back-off. The
//! `Get-EXO*` cmdlets are GETs of the REST entity sets ([`rest::entity`]); many small calls
//! can go in one `$batch` ([`rest::batch`]).
//!
//! The legacy Remote PowerShell transport ([`rps`]) sits behind the same [`CmdletRunner`].
//!
//! Security & Compliance PowerShell ([`rest::compliance`]) is the same API on its own host with
//! its own token; [`connect()`] routes each call by [`Endpoint`].
//!
//! What it refuses: sending the bearer token anywhere but the configured https host and, for a
//! front door's redirect or a paging link, other hosts of the same cloud ([`cloud`]); letting
//! the HTTP layer follow redirects; retrying an ambiguous write, and deciding *whether* a
//! cmdlet may run — that is the broker's job; this crate only runs what it is given.
#![deny(missing_docs)]

pub mod cloud;
pub mod connect;
pub mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod params;
mod pause;
pub mod pipeline;
pub mod response;
pub mod rest;
pub mod rps;
pub mod runner;
pub mod verbs;

pub use cloud::HostSuffixes;
pub use connect::{ExchangeProfile, ExchangeSettings, Transport, connect};
pub use error::{CmdletError, ExchangeError, Result};
pub use params::{ParamValue, Parameters};
pub use response::{ObjectsText, Page};
pub use rest::{EndpointRunner, Invocation, RestSession, ResultStream, SessionConfig};
pub use rps::{RpsAuth, RpsConfig, RpsSession};
pub use runner::{CmdletRunner, PageStream};
/// The REST session under its former name.
pub type ExchangeSession = RestSession;
/// The REST session's module under its former path.
pub use rest::session;
pub use verbs::CmdletKind;
pub use warden_vocab::Endpoint;
