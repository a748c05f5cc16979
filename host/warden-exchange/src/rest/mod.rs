//! The REST transport: `POST {base}/adminapi/beta/{tenant}/InvokeCommand`, the
//! ExchangeOnlineManagement module's own API (`docs/protocol/exo-protocol.md` §1), beside the
//! legacy Remote PowerShell transport in [`crate::rps`]. Both feed the one request
//! [`crate::pipeline`]. Security & Compliance ([`compliance`]) is the same API on its own host.

pub mod batch;
pub mod compliance;
pub mod entity;
pub mod module_file;
pub mod routing;
pub mod secure_string;
pub mod session;

pub use compliance::{EndpointRunner, compliance_base, compliance_scope};
pub use secure_string::{MODULE_PUBLIC_KEY, SecureStringKey, encrypt_secure_parameters};
pub use session::{
    Invocation, MAX_ANSWER_BYTES_PER_OBJECT, MODULE_CMDLET_TIMEOUTS, MODULE_TIMEOUT_SLACK_SECS,
    RestSession, ResultStream, SYSTEM_MAILBOX, SessionConfig, TRANSIENT_EXCEPTIONS,
    max_answer_bytes, rest_base,
};
