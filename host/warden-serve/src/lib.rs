//! # warden-serve: delegated tasks as a service
//!
//! `warden serve`: one process that holds the credential and runs the operator's named tasks
//! (`[[task]]` in the policy) for people who sign in with Entra ID, through the same runtimes and
//! broker as the CLI. An HTTP API and a web page served by the binary itself; approvals (four
//! eyes) before a run that needs one; every run recorded in the store and audited with the
//! person who asked and the person who approved.
//!
//! What it refuses: a caller it cannot authenticate (401), a task or run the caller may not see
//! (403, with no hint of what exists), parameter values outside the policy (before queueing), an
//! approval by the run's own requester, and re-running a run that may have written.

#![deny(missing_docs)]

pub mod auth;
