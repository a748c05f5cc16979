//! What can go wrong running a cmdlet, typed so the broker can tell the guest exactly which
//! kind of failure it was: a remote cmdlet error (with Exchange's error id, exception type,
//! message and request id), missing permissions (401/403, explained with the token's
//! diagnosis), throttling, an unknown outcome of a write, a timeout, or a protocol violation.
//!
//! No variant carries a token, an `Authorization` header, or a request body.

use std::time::Duration;
use warden_auth::AuthError;

/// Result with [`ExchangeError`].
pub type Result<T, E = ExchangeError> = std::result::Result<T, E>;

/// A terminating error the cmdlet itself raised (`docs/protocol/exo-protocol.md` §1.8).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CmdletError {
    /// The cmdlet.
    pub cmdlet: String,
    /// HTTP status.
    pub status: u16,
    /// `error.code` (`NotFound`, `BadRequest`, …).
    pub code: String,
    /// The Exchange error id (`Ex6F9304`), first part of `details[0].message`.
    pub error_id: Option<String>,
    /// The exception type (`ManagementObjectNotFoundException`), from `x-ExceptionType` or the
    /// second part of `details[0].message`.
    pub exception_type: Option<String>,
    /// The message for people.
    pub message: String,
    /// `details[0].target`.
    pub target: Option<String>,
    /// `request-id`, to quote to Microsoft support.
    pub request_id: Option<String>,
    /// `X-CalculatedBETarget`: the backend server.
    pub server: Option<String>,
}

/// `Get-Mailbox failed (HTTP 404, ManagementObjectNotFoundException, error id Ex6F9304): …
/// [request-id …, server …]`: what a support case quotes, in the order the module prints it
/// (`[Server=…,RequestId=…]`, Calvindd2f/EXO_PROJECT `.idea/full_modoule_dump.ps1`).
impl std::fmt::Display for CmdletError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed (HTTP {}", self.cmdlet, self.status)?;
        if let Some(exception) = &self.exception_type {
            write!(f, ", {exception}")?;
        }
        if let Some(id) = &self.error_id {
            write!(f, ", error id {id}")?;
        }
        write!(f, "): {}", self.message)?;
        let ids: Vec<String> = [("request-id", &self.request_id), ("server", &self.server)]
            .into_iter()
            .filter_map(|(name, value)| value.as_deref().map(|v| format!("{name} {v}")))
            .collect();
        if !ids.is_empty() {
            write!(f, " [{}]", ids.join(", "))?;
        }
        Ok(())
    }
}

/// Everything that can go wrong running a cmdlet.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// No token could be had.
    #[error(transparent)]
    Auth(#[from] AuthError),

    /// The cmdlet failed on the server.
    #[error("{0}")]
    Cmdlet(Box<CmdletError>),

    /// Exchange refused the app (401/403); `explanation` says why in words.
    #[error("Exchange refused {cmdlet} (HTTP {status}): {message}{}\n  {explanation}", request_id.as_deref().map(|r| format!(" [request-id {r}]")).unwrap_or_default())]
    AccessDenied {
        /// The cmdlet.
        cmdlet: String,
        /// 401 or 403.
        status: u16,
        /// The server's message.
        message: String,
        /// What it means for this app, with the token diagnosis.
        explanation: String,
        /// `request-id` of the refusal (REST), to quote to Microsoft support.
        request_id: Option<String>,
    },

    /// Still throttled (429/503) after the retry budget.
    #[error("{cmdlet}: Exchange is throttling or unavailable (HTTP {status}) after {attempts} attempts{}", retry_after.map(|d| format!("; it asked to wait {:.1}s", d.as_secs_f64())).unwrap_or_default())]
    Throttled {
        /// The cmdlet.
        cmdlet: String,
        /// Last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// Last `Retry-After`.
        retry_after: Option<Duration>,
    },

    /// A write failed in a way that leaves its effect unknown; it was not retried.
    #[error(
        "{cmdlet}: the outcome is unknown ({reason}); the request may have run, so it was not repeated. Check the object's state before retrying"
    )]
    OutcomeUnknown {
        /// The cmdlet.
        cmdlet: String,
        /// What happened.
        reason: String,
    },

    /// No response (connection refused, reset, TLS) after the retries a read allows.
    #[error("{cmdlet}: no response from Exchange: {reason}")]
    Transport {
        /// The cmdlet.
        cmdlet: String,
        /// What happened.
        reason: String,
    },

    /// The call did not finish in time.
    #[error("{cmdlet}: no answer within {}", humantime_secs(*after))]
    Timeout {
        /// The cmdlet.
        cmdlet: String,
        /// The limit.
        after: Duration,
    },

    /// Exchange answered a request that carried `Confirm: true` with a confirmation prompt
    /// (`@adminapi.confirmationmessage`), or one that carried `WhatIf: true` with what it would
    /// do, and no objects: nothing was changed. warden has no one to ask, so the call is
    /// reported as not executed, never as success (Calvindd2f/EXO_PROJECT
    /// `.idea/full_modoule_dump.ps1`: the module prompts, or prints "What if:", only for a
    /// non-empty message).
    #[error("{cmdlet}: not executed: {message}")]
    NotExecuted {
        /// The cmdlet.
        cmdlet: String,
        /// Why: "Exchange asked for confirmation: …" or "what if: …".
        message: String,
        /// The answer's request id, for a support case.
        request_id: Option<String>,
    },

    /// The server broke the protocol (bad JSON, a paging link to another host, a loop).
    #[error("{cmdlet}: {reason}")]
    Protocol {
        /// The cmdlet.
        cmdlet: String,
        /// What was wrong.
        reason: String,
    },

    /// The request cannot be sent as given (bad configuration or input).
    #[error("{0}")]
    Invalid(String),
}

impl ExchangeError {
    /// The kind of failure as a short stable word, for audit lines and guest errors.
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeError::Auth(_) => "auth",
            ExchangeError::Cmdlet(_) => "remote",
            ExchangeError::AccessDenied { .. } => "access-denied",
            ExchangeError::Throttled { .. } => "throttled",
            ExchangeError::OutcomeUnknown { .. } => "outcome-unknown",
            ExchangeError::Transport { .. } => "transport",
            ExchangeError::Timeout { .. } => "timeout",
            ExchangeError::NotExecuted { .. } => "not-executed",
            ExchangeError::Protocol { .. } => "protocol",
            ExchangeError::Invalid(_) => "invalid",
        }
    }
}

/// `960s`, or `0.3s` for a limit under a minute that is not whole seconds.
fn humantime_secs(after: Duration) -> String {
    if after.subsec_millis() == 0 {
        format!("{}s", after.as_secs())
    } else {
        format!("{:.1}s", after.as_secs_f64())
    }
}
