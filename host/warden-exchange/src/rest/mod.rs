//! The REST transport: `POST {base}/adminapi/beta/{tenant}/InvokeCommand`, the
//! ExchangeOnlineManagement module's own API (`docs/protocol/exo-protocol.md` §1), beside the
//! legacy Remote PowerShell transport in [`crate::rps`]. Both feed the one request
//! [`crate::pipeline`]. Security & Compliance ([`compliance`]) is the same API on its own host.

pub mod compliance;
pub mod session;

pub use compliance::{EndpointRunner, compliance_base, compliance_scope};
pub use session::{
    Invocation, RestSession, ResultStream, SYSTEM_MAILBOX, SessionConfig, TRANSIENT_EXCEPTIONS,
    rest_base,
};
