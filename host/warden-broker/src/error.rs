//! The errors a guest receives. They are the only failure information that crosses into a
//! sandbox, so they are built from typed fields, never from a transport's or a token
//! provider's message text (which could, through a bug elsewhere, carry a header).

use serde::Serialize;
use std::time::Duration;
use warden_exchange::ExchangeError;
use warden_policy::{Decision, Grant};

/// Tells the operator (warden's log on stderr, never the guest) which value a refusal was
/// about and the rule that refused it. The guest's [`GuestError::Denied`] keeps only the rule
/// and the reason; a sensitive value is not shown to anyone (see [`Grant::refused_value`]).
pub(crate) fn tell_operator(grant: &Grant, decision: &Decision) {
    if let Some(detail) = grant.refused_value(decision) {
        tracing::warn!("{} refused: {detail}", decision.cmdlet);
    }
}

/// Why a guest's call did not return results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GuestError {
    /// The policy refused the call.
    #[error("denied by {rule}: {reason}")]
    Denied {
        /// The deciding rule's id.
        rule: String,
        /// Why, in words.
        reason: String,
    },
    /// The call was malformed (bad JSON, bad names).
    #[error("invalid call: {reason}")]
    Invalid {
        /// What was wrong.
        reason: String,
    },
    /// A budget of the grant is used up.
    #[serde(rename = "budget")]
    #[error("budget exhausted: {budget} (limit {limit})")]
    BudgetExhausted {
        /// Which budget.
        budget: String,
        /// Its limit.
        limit: u64,
    },
    /// Exchange is throttling; try later.
    #[error("throttled by Exchange{}", retry_after_ms.map(|ms| format!("; retry after {ms} ms")).unwrap_or_default())]
    Throttled {
        /// Suggested wait.
        retry_after_ms: Option<u64>,
    },
    /// The cmdlet failed in Exchange.
    #[error("{exception}: {message} (error id {error_id}, request id {request_id})")]
    Remote {
        /// Exchange's error id (`Ex6F9304`), or empty.
        error_id: String,
        /// Exception type (`ManagementObjectNotFoundException`), or the HTTP status.
        exception: String,
        /// The message.
        message: String,
        /// Exchange's request id, or empty.
        request_id: String,
    },
    /// The call ran past its time limit.
    #[error("timed out after {after_ms} ms")]
    Timeout {
        /// The limit.
        after_ms: u64,
    },
    /// A write may or may not have happened; it was not repeated.
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown {
        /// What happened.
        reason: String,
    },
    /// The host cannot serve the call (Exchange unreachable, credentials failing, audit down).
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What is wrong, without secrets.
        reason: String,
    },
}

impl GuestError {
    /// The short kind word used in audit lines.
    pub fn kind(&self) -> &'static str {
        match self {
            GuestError::Denied { .. } => "denied",
            GuestError::Invalid { .. } => "invalid",
            GuestError::BudgetExhausted { .. } => "budget",
            GuestError::Throttled { .. } => "throttled",
            GuestError::Remote { .. } => "remote",
            GuestError::Timeout { .. } => "timeout",
            GuestError::OutcomeUnknown { .. } => "outcome-unknown",
            GuestError::Unavailable { .. } => "unavailable",
        }
    }

    /// Maps a session error to what a guest may see.
    pub fn from_exchange(error: &ExchangeError, timeout: Duration) -> GuestError {
        match error {
            ExchangeError::Cmdlet(e) => GuestError::Remote {
                error_id: e.error_id.clone().unwrap_or_default(),
                exception: e
                    .exception_type
                    .clone()
                    .unwrap_or_else(|| format!("HTTP {}", e.status)),
                message: e.message.clone(),
                request_id: e.request_id.clone().unwrap_or_default(),
            },
            ExchangeError::AccessDenied {
                status,
                message,
                request_id,
                ..
            } => GuestError::Remote {
                error_id: String::new(),
                exception: format!("AccessDenied (HTTP {status})"),
                message: message.clone(),
                request_id: request_id.clone().unwrap_or_default(),
            },
            ExchangeError::Throttled { retry_after, .. } => GuestError::Throttled {
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            },
            ExchangeError::Timeout { .. } => GuestError::Timeout {
                after_ms: timeout.as_millis() as u64,
            },
            // The reason holds transport text (URLs, TLS detail): the guest gets a fixed one.
            ExchangeError::OutcomeUnknown { .. } => GuestError::OutcomeUnknown {
                reason: "the connection failed after the request was sent; the write may have run"
                    .into(),
            },
            // Auth and transport messages come from other crates' text: give the guest the kind
            // only; the operator's log has the detail.
            ExchangeError::Auth(_) => GuestError::Unavailable {
                reason: "the host could not obtain a token for Exchange (see the warden log)"
                    .into(),
            },
            ExchangeError::Transport { .. } => GuestError::Unavailable {
                reason: "Exchange did not answer (see the warden log)".into(),
            },
            // Nothing ran: the guest learns that and Exchange's prompt (server text, like a
            // remote error's message).
            ExchangeError::NotExecuted {
                message,
                request_id,
                ..
            } => GuestError::Remote {
                error_id: String::new(),
                exception: "NotExecuted".into(),
                message: format!("not executed: {message}"),
                request_id: request_id.clone().unwrap_or_default(),
            },
            ExchangeError::Protocol { .. } => GuestError::Unavailable {
                reason: "Exchange answered outside the protocol (see the warden log)".into(),
            },
            ExchangeError::Invalid(_) => GuestError::Unavailable {
                reason: "the host's Exchange configuration is invalid (see the warden log)".into(),
            },
        }
    }
}
