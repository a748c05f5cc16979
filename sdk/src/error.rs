//! [`CallError`]: why a cmdlet call returned no results, as a plain Rust enum.
//!
//! It mirrors the WIT `call-error` variant case for case, plus one guest-side case
//! ([`CallError::Decode`]) for results that arrived but did not fit the type the plugin asked
//! for. It serializes as `{"kind": "denied", "rule": …, "reason": …}` so a plugin can hand an
//! error on as JSON without inventing its own shape.

use std::fmt;

use serde::Serialize;

use crate::bindings::warden::plugin::exchange as wit;

/// Why a call failed. Every case is safe to show a user: the host never puts a credential,
/// token or transport detail in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum CallError {
    /// The operator's policy refused the call. Retrying will not help.
    Denied {
        /// The deciding rule (`default-deny`, `deny[0]`, `role:reader/Get-Mailbox`, …).
        rule: String,
        /// Why, in words.
        reason: String,
    },
    /// The call was malformed (parameters not an object, a bad name, a value of the wrong shape).
    Invalid {
        /// What was wrong.
        message: String,
    },
    /// A budget of this run's grant is used up.
    Budget {
        /// `calls`, `writes`, `objects`, `output_bytes` or `wall_clock_secs`.
        budget: String,
        /// The grant's limit for it.
        limit: u64,
    },
    /// Exchange is throttling the tenant.
    Throttled {
        /// The suggested wait in milliseconds, when Exchange gave one.
        retry_after_ms: Option<u64>,
    },
    /// The cmdlet ran and failed in Exchange.
    Remote {
        /// Exchange's error id (`Ex6F9304`), or empty.
        error_id: String,
        /// The exception type (`ManagementObjectNotFoundException`).
        exception: String,
        /// Exchange's message.
        message: String,
        /// Exchange's request id, or empty.
        request_id: String,
    },
    /// No answer within the call's time limit. A read may be retried.
    Timeout {
        /// The limit, in milliseconds.
        after_ms: u64,
    },
    /// A write was sent and its fate is unknown; the host did not repeat it.
    OutcomeUnknown {
        /// What the host knows.
        message: String,
    },
    /// The host cannot serve calls now; the detail is in the operator's log.
    Unavailable {
        /// A short reason.
        message: String,
    },
    /// Guest side: the results arrived but were not the JSON shape the plugin asked for.
    Decode {
        /// What serde said.
        message: String,
    },
}

impl CallError {
    /// The case's name as it appears in JSON (`denied`, `outcome-unknown`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Denied { .. } => "denied",
            CallError::Invalid { .. } => "invalid",
            CallError::Budget { .. } => "budget",
            CallError::Throttled { .. } => "throttled",
            CallError::Remote { .. } => "remote",
            CallError::Timeout { .. } => "timeout",
            CallError::OutcomeUnknown { .. } => "outcome-unknown",
            CallError::Unavailable { .. } => "unavailable",
            CallError::Decode { .. } => "decode",
        }
    }

    /// True when Exchange said the object does not exist (`ManagementObjectNotFoundException`),
    /// which idempotent plugins read as "not there yet" rather than as a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Remote { exception, .. }
            if exception.ends_with("ManagementObjectNotFoundException"))
    }

    /// True for errors where the same *read* might succeed later (throttling, timeouts). Never
    /// use this to retry a write: an ambiguous write is [`CallError::OutcomeUnknown`] and must be
    /// checked, not repeated.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::Throttled { .. } | CallError::Timeout { .. }
        )
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Denied { rule, reason } => write!(f, "denied by {rule}: {reason}"),
            CallError::Invalid { message } => write!(f, "invalid call: {message}"),
            CallError::Budget { budget, limit } => {
                write!(f, "budget exhausted: {budget} (the grant allows {limit})")
            }
            CallError::Throttled {
                retry_after_ms: Some(ms),
            } => write!(f, "throttled by Exchange; retry after {ms} ms"),
            CallError::Throttled {
                retry_after_ms: None,
            } => write!(f, "throttled by Exchange"),
            CallError::Remote {
                error_id,
                exception,
                message,
                request_id,
            } => {
                let exception = if exception.is_empty() {
                    "Exchange error"
                } else {
                    exception.rsplit('.').next().unwrap_or(exception)
                };
                write!(f, "{exception}: {message}")?;
                match (error_id.is_empty(), request_id.is_empty()) {
                    (false, false) => write!(f, " (error id {error_id}, request id {request_id})"),
                    (false, true) => write!(f, " (error id {error_id})"),
                    (true, false) => write!(f, " (request id {request_id})"),
                    (true, true) => Ok(()),
                }
            }
            CallError::Timeout { after_ms } => write!(f, "no answer within {after_ms} ms"),
            CallError::OutcomeUnknown { message } => write!(
                f,
                "the write's outcome is unknown and it was not retried ({message}); check the object's state before trying again"
            ),
            CallError::Unavailable { message } => {
                write!(f, "the host cannot serve calls now: {message}")
            }
            CallError::Decode { message } => {
                write!(f, "the results did not have the expected shape: {message}")
            }
        }
    }
}

impl std::error::Error for CallError {}

impl From<wit::CallError> for CallError {
    fn from(e: wit::CallError) -> Self {
        match e {
            wit::CallError::Denied(d) => CallError::Denied {
                rule: d.rule,
                reason: d.reason,
            },
            wit::CallError::Invalid(message) => CallError::Invalid { message },
            wit::CallError::Budget(b) => CallError::Budget {
                budget: b.budget,
                limit: b.limit,
            },
            wit::CallError::Throttled(retry_after_ms) => CallError::Throttled { retry_after_ms },
            wit::CallError::Remote(r) => CallError::Remote {
                error_id: r.error_id,
                exception: r.exception,
                message: r.message,
                request_id: r.request_id,
            },
            wit::CallError::Timeout(after_ms) => CallError::Timeout { after_ms },
            wit::CallError::OutcomeUnknown(message) => CallError::OutcomeUnknown { message },
            wit::CallError::Unavailable(message) => CallError::Unavailable { message },
        }
    }
}
