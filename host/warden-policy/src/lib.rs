//! # warden-policy: the operator's allow-list
//!
//! Decides, without network or async, whether a principal (a plugin pinned by sha256, or a
//! script pinned by hash) may run a cmdlet with given parameter values, and says which rule
//! decided and why. The broker asks it before every call; `warden policy explain` asks it
//! without running anything.
//!
//! What it refuses (default deny — [`Policy::empty`] allows nothing):
//! - any principal no `[[grant]]` names, or whose hash differs from the pinned one;
//! - any cmdlet no role of the grant lists, and any parameter the role entry does not list —
//!   PowerShell's common parameters (`-Confirm`, `-WhatIf`, `-ErrorAction`, …) included;
//! - names that are not plain ASCII `[A-Za-z0-9-]` (lookalikes, fullwidth letters, zero-width
//!   characters, whitespace), prefix abbreviations (`Ident`) and aliases — names match exactly,
//!   ASCII-case-insensitively;
//! - parameter JSON that is not an object, has a duplicate key (also one differing only in
//!   case), nests where a single value is expected or deeper than 32 levels, holds numbers
//!   beyond `i64`, or is larger than the cap (64 KiB by default);
//! - string values (at any depth) with leading or trailing whitespace or invisible characters
//!   or with control characters anywhere: Exchange trims what it acts on, so the policy refuses
//!   rather than judge another text (the value judged is always the value sent);
//! - a list where the constraint has no `items`, a hashtable where it has no `keys`;
//! - an OPATH filter (`Filter`, `RecipientFilter`, …) naming a property it may not: one the
//!   constraint's `filter_properties` does not list or, by default, one the grant's output
//!   shaping hides;
//! - values that break a constraint, and any call a `[[deny]]` rule matches — deny overrides
//!   allow, and fails closed: it judges every list item and hashtable value, every spelling
//!   Exchange reads alike (case, `smtp:`, comma-separated flags), and a value it cannot judge
//!   counts as a match.
//!
//! Guest text a refusal quotes (names, a front end's problem) is cut to a bound
//! ([`names::for_record`], [`MAX_REASON_BYTES`]).
//!
//! Role merge: a call is allowed when ONE role entry for the cmdlet admits all of its
//! parameters. Entries (from different roles, or repeated in one role) are never merged
//! parameter-wise, so no role ever loosens another's constraint. Output shaping over several
//! entries keeps only the properties all limiting entries allow.
//!
//! Declared ∩ granted: given a plugin's [`Declaration`], the grant keeps only declared cmdlets
//! and parameters; a granted-but-undeclared one is refused with a reason saying so.
//!
//! The file format is documented by `policy.example.toml` at the repository root. Main types:
//! [`Policy`], [`Grant`], [`Decision`], [`Principal`], [`Budgets`], [`TargetScope`].
#![deny(missing_docs)]

mod constraint;
mod declaration;
mod filter;
#[doc(hidden)]
pub mod fuzz;
mod grant;
pub mod names;
mod params;
mod policy;
mod resolved;
mod text;

pub use constraint::Constraint;
pub use declaration::{Declaration, DeclarationError};
pub use grant::{AllowedCmdlet, Budgets, Decision, Grant, MAX_REASON_BYTES};
pub use params::{DEFAULT_MAX_PARAMETER_BYTES, MAX_PARAMETER_DEPTH};
pub use policy::{
    DenySummary, GrantSummary, MAX_POLICY_BYTES, POLICY_VERSION, Policy, PolicyError,
    PolicySummary, RoleSummary, TargetScope, sha256_hex,
};
pub use resolved::names_recipient;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// Who is asking: the thing a grant is pinned to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    /// A wasm component: its name and the SHA-256 (hex) of its bytes.
    Plugin {
        /// Plugin name as the policy's `plugin = "…"` gives it.
        name: String,
        /// SHA-256 of the component, lowercase hex.
        sha256: String,
    },
    /// A Rhai script: a file (path and hash) or an inline one-liner (hash only).
    Script {
        /// The script file, or `None` for an inline script.
        path: Option<PathBuf>,
        /// SHA-256 of the script's source, lowercase hex.
        sha256: String,
    },
    /// A script a person typed, run under an ad hoc grant (`script_inline = "any"`) because of
    /// who they are, not what the text hashes to. Its text goes into the audit trail whole.
    #[serde(rename = "ad-hoc")]
    AdHoc {
        /// Who typed it, as a grant's `principal = "…"` names them (`operator` on the CLI).
        principal: String,
        /// SHA-256 of the text, lowercase hex.
        sha256: String,
        /// The text (or, for an interactive session, empty: each line is recorded as it runs).
        #[serde(skip)]
        source: Arc<str>,
    },
}

impl Principal {
    /// A plugin principal from its component bytes.
    pub fn plugin(name: impl Into<String>, component: &[u8]) -> Self {
        Principal::Plugin {
            name: name.into(),
            sha256: sha256_hex(component),
        }
    }

    /// A script-file principal from its path and source.
    pub fn script_file(path: impl Into<PathBuf>, source: &[u8]) -> Self {
        Principal::Script {
            path: Some(path.into()),
            sha256: sha256_hex(source),
        }
    }

    /// An inline-script principal from its source (what `script_inline_sha256` pins).
    pub fn inline_script(source: &str) -> Self {
        Principal::Script {
            path: None,
            sha256: sha256_hex(source.as_bytes()),
        }
    }

    /// An ad hoc script `principal` typed (what a `script_inline = "any"` grant admits).
    pub fn ad_hoc(principal: impl Into<String>, source: &str) -> Self {
        Principal::AdHoc {
            principal: principal.into(),
            sha256: sha256_hex(source.as_bytes()),
            source: source.into(),
        }
    }

    /// The pinned hash (for an ad hoc script, its text's hash).
    pub fn sha256(&self) -> &str {
        match self {
            Principal::Plugin { sha256, .. }
            | Principal::Script { sha256, .. }
            | Principal::AdHoc { sha256, .. } => sha256,
        }
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Plugin { name, sha256 } => write!(f, "plugin {name} (sha256 {sha256})"),
            Principal::Script {
                path: Some(p),
                sha256,
            } => {
                write!(f, "script {} (sha256 {sha256})", p.display())
            }
            Principal::Script { path: None, sha256 } => {
                write!(f, "inline script (sha256 {sha256})")
            }
            Principal::AdHoc {
                principal, sha256, ..
            } => write!(f, "ad hoc script by {principal} (sha256 {sha256})"),
        }
    }
}

/// The CLI's ad hoc principal: whoever runs `warden eval` or `warden repl` with the policy.
pub const OPERATOR: &str = "operator";

/// A principal the policy gives nothing: the deciding rule and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{rule}: {reason}")]
pub struct Denial {
    /// `default-deny` (no grant names it) or `grant:ID` (hash mismatch).
    pub rule: String,
    /// Why, for people.
    pub reason: String,
}
