//! Which cmdlets read and which change state. The rule lives in `warden-vocab` (shared with the
//! policy, which must not depend on this crate); re-exported here at its old path.

pub use warden_vocab::{CmdletKind, READ_VERBS};
