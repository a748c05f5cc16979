//! # warden-policy: the operator's allow-list
//!
//! Decides, without network or async, whether a principal (a plugin pinned by sha256, or a
//! script pinned by hash) may run a cmdlet with given parameter values, and says which rule
//! decided and why. The broker asks it before every call; `warden policy explain` asks it
//! without running anything.
//!
//! What it refuses (default deny — [`Policy::empty`] allows nothing):
//! - any principal no `[[grant]]` names, or whose hash differs from the pinned one;
//! - a plugin whose grant has `signed_by` (a `[trust.*]` publisher) and whose signature, as the
//!   caller checked it against [`Policy::trusted_keys`], is missing, by another key, by a
//!   revoked key, no longer matching its bytes, unreadable, or on a manifest version older
//!   than the grant's `min_version` ([`SignatureRefusal`] names the case);
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
//! Tenants: a grant's `tenants = ["contoso", "tag:eu"]` (the `--tenants` grammar of
//! `warden-fleet`) limits it to runs for those config profiles ([`Policy::grant_for_tenant`]);
//! [`Policy::check_tenants`] checks the names and tags against the config's profiles.
//!
//! Declared ∩ granted: given a plugin's [`Declaration`], the grant keeps only declared cmdlets
//! and parameters; a granted-but-undeclared one is refused with a reason saying so.
//!
//! Delegated tasks (`[[task]]`, [`Task`]): a pinned script or plugin that the people a task
//! names may run through `warden serve`, its parameters' form fields derived from the
//! constraints and judged by the same checks as a call, with approvals ([`Approval`]).
//!
//! The file format is documented by `policy.example.toml` at the repository root. Main types:
//! [`Policy`], [`Grant`], [`Decision`], [`Principal`], [`Budgets`], [`TargetScope`], [`Task`].
#![deny(missing_docs)]

mod constraint;
mod declaration;
mod detail;
mod filter;
#[doc(hidden)]
pub mod fuzz;
mod grant;
pub mod known;
mod params;
mod policy;
mod resolved;
mod task;
mod text;

pub use constraint::Constraint;
pub use declaration::{Declaration, DeclarationError};
pub use grant::{
    AllowedCmdlet, Budgets, Decision, Grant, Judgement, MAX_REASON_BYTES, NameRefusal, Shaper,
};
pub use params::{DEFAULT_MAX_PARAMETER_BYTES, GivenParameters, MAX_PARAMETER_DEPTH};
pub use policy::{
    DenySummary, GrantSummary, MAX_POLICY_BYTES, POLICY_VERSION, Policy, PolicyError,
    PolicySummary, RoleSummary, SignatureRefusal, TargetScope,
};
pub use resolved::names_recipient;
pub use task::{
    Approval, DEFAULT_APPROVAL_EXPIRY, FieldError, FormField, MAX_APPROVAL_EXPIRY, Person, Task,
    TaskParameter, TaskRuns, TaskSummary, TaskVerdict, option_text,
};
// A run's tenant, as a grant's `tenants` judge it: its profile name and tags.
pub use warden_fleet::Candidate;
// The shared vocabulary, at the paths callers have always used.
pub use warden_vocab::{Endpoint, PluginSignature, Principal, SignatureVerdict, names, sha256_hex};

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
