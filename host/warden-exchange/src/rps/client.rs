//! The request layer of an RPS session: one SOAP request with the retry rules of the REST
//! transport, and the runspace pool every call shares.
//!
//! Retry rules per request (`call`):
//! - a connection that never opened, 429 and 503 (with `Retry-After`, paused for every caller
//!   of the session) mean "not processed": every request is repeated, a Command too;
//! - 401 mints a fresh token once (the request was not processed); with OAuth one still
//!   refused is [`crate::pipeline::FailureKind::Unauthorized`], which the pipeline repeats for
//!   reads only, and every Command counts as a write here: no cmdlet is re-sent after a lasting
//!   401 over RPS (the spaced re-tries are REST's). It is then explained as
//!   [`ExchangeError::AccessDenied`] (the grant-propagation hint only for a bearer token, never
//!   for Basic credentials); so is 403 and a `w:AccessDenied` fault (an app that
//!   authenticated but holds no Exchange role);
//! - an answer lost after sending (a broken connection, a timeout, 500/502/504 without a fault):
//!   Create, Signal and Delete are repeated; for Command, Send and a pipeline's Receive the
//!   caller decides ([`CallError::Ambiguous`]): a write's outcome is then unknown, a read starts
//!   over;
//! - a redirect is followed only for Create, only to https, at most `max_redirects` times, and
//!   moves the whole session; any other redirect is refused, so the Basic header is never
//!   replayed to a place the server names; with plain Basic credentials (a long-lived
//!   password) not even a Create's is followed to another host than the configured one;
//! - no wait (back-off, `Retry-After`, the session's pause) is started that would not end
//!   before the caller's deadline, and a request is given no more time than is left.

use super::{RpsAuth, RpsConfig};
use crate::error::{ExchangeError, Result};
use crate::pipeline::{Attempt, Deadline, Ended, Failure, Pipeline, token_by};
use crate::response::redact_credentials;
use crate::verbs::CmdletKind;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use uuid::Uuid;
use warden_auth::transport::{
    Auth, BasicPassword, HttpRequest, HttpResponse, HttpTransport, Method, SendFailure,
};
use warden_auth::{AccessToken, TokenProvider};
use warden_psrp::message::{Destination, Message, MessageType};
use warden_psrp::pipeline::{self, RunspacePoolState, SessionCapability};
use warden_psrp::wsman::{self, Fault, Header, Response, action};
use warden_psrp::{Defragmenter, fragment_message};

pub(super) use crate::pipeline::RETRY_RESERVE;

/// The largest PSRP message reassembled from a server's fragments.
pub(super) const MAX_MESSAGE: usize = 64 << 20;

/// The WS-Management `Win32` code of "the shell was not found on the server".
const SHELL_NOT_FOUND: u32 = 2_150_858_843;

/// A WS-Management operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Create,
    Receive,
    Command,
    Send,
    Signal,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "Create",
            Op::Receive => "Receive",
            Op::Command => "Command",
            Op::Send => "Send",
            Op::Signal => "Signal",
            Op::Delete => "Delete",
        }
    }

    /// What repeating it after its answer was lost could do, for the pipeline's classifier:
    /// Signal and Delete repeat harmlessly (a read); a lost CreateResponse may have opened a
    /// shell under the id we proposed (the opening starts over with a new one), a Receive's
    /// lost answer may have carried output, a Command or Send may have started a write — these
    /// are not repeated here, their callers decide by the cmdlet's kind.
    fn kind(self) -> CmdletKind {
        if matches!(self, Op::Signal | Op::Delete) {
            CmdletKind::Read
        } else {
            CmdletKind::Write
        }
    }
}

/// Why a request got no usable answer.
#[derive(Debug)]
pub(super) enum CallError {
    /// Final.
    Fatal(ExchangeError),
    /// The request may have been processed and its answer was lost.
    Ambiguous {
        /// What happened.
        reason: String,
    },
    /// The server took the request (it answered 2xx) but the answer is unusable (not
    /// WS-Management, or relating to another request): the request may have been processed.
    /// For a Command or the last Send of a write, its outcome is unknown; otherwise final.
    Unusable(ExchangeError),
}

impl CallError {
    /// The error of a request that is not a write's Command or Send (`Ambiguous` as a
    /// transport failure).
    pub(super) fn into_error(self, cmdlet: &str) -> ExchangeError {
        match self {
            CallError::Fatal(error) | CallError::Unusable(error) => error,
            CallError::Ambiguous { reason } => ExchangeError::Transport {
                cmdlet: cmdlet.to_owned(),
                reason,
            },
        }
    }
}

impl From<ExchangeError> for CallError {
    fn from(error: ExchangeError) -> Self {
        CallError::Fatal(error)
    }
}

/// What one call remembers across its attempts.
#[derive(Debug, Default)]
struct CallState {
    /// A fresh token was minted after a 401.
    reminted: bool,
    /// Redirects followed.
    redirects: u32,
}

/// An open runspace pool (a WS-Management shell).
#[derive(Debug)]
pub(super) struct OpenPool {
    /// The shell's id (the selector of every later request).
    pub shell_id: Uuid,
    /// The runspace pool's id in PSRP messages.
    pub rpid: Uuid,
    /// Where it lives (after any redirect of its Create).
    pub endpoint: String,
    /// Which opening of the session this is.
    pub generation: u64,
}

/// The session's pool, opened lazily; one opening at a time.
#[derive(Debug)]
pub(super) struct PoolSlot {
    /// Where the next Create goes: the configured endpoint, or where a redirect moved it.
    pub endpoint: String,
    /// The open pool, if any.
    pub open: Option<Arc<OpenPool>>,
    generation: u64,
}

/// What a session shares between its clones and streams.
pub(super) struct Inner {
    pub config: Arc<RpsConfig>,
    pub http: Arc<dyn HttpTransport>,
    pub tokens: TokenProvider,
    pub session_id: Uuid,
    pub resource_uri: String,
    pub limiter: Arc<Semaphore>,
    pause: crate::pause::Pause,
    pub pool: tokio::sync::Mutex<PoolSlot>,
    object_ids: AtomicU64,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpsSession")
            .field("endpoint", &self.config.endpoint())
            .field("session_id", &self.session_id)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

/// The largest answer read: answers respect our `MaxEnvelopeSize`, anything far larger is
/// refused while it is read.
fn max_answer_bytes(config: &RpsConfig) -> usize {
    (config.max_envelope_size as usize)
        .saturating_mul(16)
        .max(4 << 20)
}

/// The pause after the `idle`-th Receive in a row that came back at once with nothing (a
/// server that does not hold a Receive open): 50 ms doubling to 1 s, so neither the opening nor
/// a pipeline busy-loops; not taken when it would leave no time before `deadline`.
pub(super) async fn idle_pause(idle: u32, deadline: Option<Instant>) {
    let pause = idle_pause_len(idle);
    Deadline(deadline).sleep(pause).await;
}

/// How long [`idle_pause`] waits.
pub(super) fn idle_pause_len(idle: u32) -> Duration {
    Duration::from_millis(25 << idle.clamp(1, 6)).min(Duration::from_secs(1))
}

/// Whether a fault says the app may not do this (authenticated, but no Exchange role).
pub(super) fn is_access_denied(fault: &Fault) -> bool {
    fault
        .subcode
        .as_deref()
        .is_some_and(|s| s.rsplit(':').next() == Some("AccessDenied"))
}

/// Whether a fault says the shell is unknown to the server (it lost the pool).
pub(super) fn is_shell_lost(fault: &Fault) -> bool {
    fault
        .subcode
        .as_deref()
        .is_some_and(|s| s.rsplit(':').next() == Some("InvalidSelectors"))
        || fault.wsman_code == Some(SHELL_NOT_FOUND)
}

/// A fault as an error: its reason and codes, never the envelope.
pub(super) fn fault_error(cmdlet: &str, what: &str, fault: &Fault) -> ExchangeError {
    let code = fault.subcode.as_deref().unwrap_or(&fault.code);
    let detail = fault
        .message
        .as_deref()
        .filter(|m| !m.trim().is_empty() && m.trim() != fault.reason.trim())
        .map(|m| format!(" ({})", m.trim()))
        .unwrap_or_default();
    let wsman = fault
        .wsman_code
        .map(|c| format!(", WS-Management error {c}"))
        .unwrap_or_default();
    ExchangeError::Protocol {
        cmdlet: cmdlet.to_owned(),
        reason: redact_credentials(&format!(
            "the server refused the {what}: {}{detail} [{code}{wsman}]",
            fault.reason.trim()
        )),
    }
}

/// An unexpected kind of answer.
pub(super) fn unexpected(cmdlet: &str, op: &str, response: &Response) -> ExchangeError {
    let kind = match response {
        Response::Created { .. } => "CreateResponse",
        Response::CommandCreated { .. } => "CommandResponse",
        Response::Received { .. } => "ReceiveResponse",
        Response::Sent => "SendResponse",
        Response::Signaled => "SignalResponse",
        Response::Deleted => "DeleteResponse",
        Response::Fault(_) => "a fault",
    };
    ExchangeError::Protocol {
        cmdlet: cmdlet.to_owned(),
        reason: format!("the server answered a {op} with {kind}"),
    }
}

/// A PSRP error as an [`ExchangeError::Protocol`].
pub(super) fn psrp_error(cmdlet: &str, what: &str, error: warden_psrp::PsrpError) -> ExchangeError {
    ExchangeError::Protocol {
        cmdlet: cmdlet.to_owned(),
        reason: redact_credentials(&format!("{what}: {error}")),
    }
}

enum OpenFailure {
    Retry(String),
    Fatal(ExchangeError),
}

impl From<ExchangeError> for OpenFailure {
    fn from(error: ExchangeError) -> Self {
        OpenFailure::Fatal(error)
    }
}

impl Inner {
    pub(super) fn new(
        config: Arc<RpsConfig>,
        tokens: TokenProvider,
        http: Arc<dyn HttpTransport>,
    ) -> Self {
        let endpoint = config.endpoint();
        Self {
            resource_uri: format!(
                "{}{}",
                wsman::RESOURCE_URI_PREFIX,
                config.configuration_name
            ),
            limiter: Arc::new(Semaphore::new(config.max_concurrency.max(1))),
            config,
            http,
            tokens,
            session_id: Uuid::new_v4(),
            pause: Default::default(),
            pool: tokio::sync::Mutex::new(PoolSlot {
                endpoint,
                open: None,
                generation: 0,
            }),
            object_ids: AtomicU64::new(1),
        }
    }

    /// A fresh PSRP object id (fragments of one message share it).
    pub(super) fn next_object_id(&self) -> u64 {
        self.object_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The header template of `action` (`to` and the message id are set per attempt).
    pub(super) fn header(&self, action: &str, shell_id: Option<Uuid>) -> Header {
        let c = &self.config;
        let mut header = Header::new("", &self.resource_uri, action);
        header.session_id = Some(self.session_id);
        header.max_envelope_size = c.max_envelope_size;
        header.operation_timeout = c.operation_timeout;
        header.shell_id = shell_id;
        header
    }

    /// The header of a Receive: its `OperationTimeout` ends a second before `deadline`, so the
    /// server answers `TimedOut` (nothing lost) rather than the caller cutting the request off.
    pub(super) fn receive_header(&self, shell_id: Uuid, deadline: Option<Instant>) -> Header {
        let mut header = self.header(action::RECEIVE, Some(shell_id));
        if let Some(d) = deadline {
            let left = d
                .saturating_duration_since(Instant::now())
                .saturating_sub(Duration::from_secs(1));
            header.operation_timeout = header
                .operation_timeout
                .min(left)
                .max(Duration::from_secs(1));
        }
        header
    }

    /// The session's back-off after failed attempt `attempt`.
    pub(super) fn backoff(&self, attempt: u32) -> Duration {
        self.config.retry_policy().delay(attempt)
    }

    /// The Basic credentials of one request: for OAuth a token fetched now (the provider
    /// renews it before expiry), never waited for past the deadline.
    async fn credentials(
        &self,
        deadline: Deadline,
    ) -> Result<(String, BasicPassword, Option<AccessToken>)> {
        match &self.config.auth {
            RpsAuth::Basic { user, password } => {
                Ok((user.clone(), BasicPassword::Secret(password.clone()), None))
            }
            RpsAuth::OAuth { user } => {
                let token = token_by(&self.tokens, &self.config.scope, deadline).await?;
                Ok((
                    user.clone(),
                    BasicPassword::Bearer(token.clone()),
                    Some(token),
                ))
            }
        }
    }

    fn access_denied(
        &self,
        cmdlet: &str,
        status: u16,
        message: &str,
        token: Option<&AccessToken>,
    ) -> ExchangeError {
        let c = &self.config;
        let explanation = match token {
            Some(token) => crate::rest::session::access_denied_explanation(
                cmdlet, status, message, token, &c.tenant, &c.scope,
            ),
            None if status == 401 => "the server refused the Basic user name and password: check the account, its password, and that it may use Remote PowerShell".to_owned(),
            None => "the account is authenticated but not authorised: it needs an Exchange role that grants this cmdlet".to_owned(),
        };
        ExchangeError::AccessDenied {
            cmdlet: cmdlet.to_owned(),
            status,
            message: redact_credentials(message),
            explanation,
            request_id: None,
        }
    }

    /// Sends one request built by `build` from `template` (with `to` = `url` and a fresh
    /// message id per attempt) through the [`crate::pipeline`], with the rules in the module
    /// docs. A Create that is redirected updates `url`. Faults other than access denied are
    /// returned as answers.
    pub(super) async fn call(
        &self,
        cmdlet: &str,
        op: Op,
        url: &mut String,
        template: &Header,
        build: &(dyn Fn(&Header) -> String + Send + Sync),
        deadline: Option<Instant>,
    ) -> Result<Response, CallError> {
        let deadline = Deadline(deadline);
        let mut pipeline = Pipeline::new(
            self.config.retry_policy(),
            &self.pause,
            deadline,
            cmdlet,
            op.kind(),
        );
        let mut state = CallState::default();
        let ended = loop {
            if let Err(ended) = pipeline.begin().await {
                break ended;
            }
            match self
                .call_attempt(cmdlet, op, url, template, build, deadline, &mut state)
                .await
            {
                Attempt::Done(answer) => return answer,
                Attempt::Again => pipeline.again(),
                Attempt::Failed(failure) => {
                    if let Err(ended) = pipeline.failed(failure).await {
                        break ended;
                    }
                }
            }
        };
        Err(match ended {
            // The caller decides: a write's outcome is then unknown, a read starts over.
            Ended::OutcomeUnknown(reason) => CallError::Ambiguous { reason },
            Ended::Failed(error) => CallError::Fatal(error),
        })
    }

    /// One attempt of [`Self::call`]: credentials by the deadline, one POST, its answer
    /// classified.
    #[allow(clippy::too_many_arguments, reason = "one request's parts")]
    async fn call_attempt(
        &self,
        cmdlet: &str,
        op: Op,
        url: &mut String,
        template: &Header,
        build: &(dyn Fn(&Header) -> String + Send + Sync),
        deadline: Deadline,
        state: &mut CallState,
    ) -> Attempt<Result<Response, CallError>> {
        let c = &self.config;
        let (user, password, token) = match self.credentials(deadline).await {
            Ok(credentials) => credentials,
            Err(error) => return Attempt::Failed(Failure::Final(error)),
        };
        let mut header = template.clone();
        header.to = url.clone();
        header.message_id = Uuid::new_v4();
        let timeout = deadline.cap(c.request_timeout);
        if timeout.is_zero() {
            return Attempt::Failed(Failure::Final(ExchangeError::Timeout {
                cmdlet: cmdlet.to_owned(),
                after: c.request_timeout,
            }));
        }
        let mut request = HttpRequest::new(Method::Post, url.clone());
        request.headers = vec![
            ("content-type".into(), wsman::CONTENT_TYPE.into()),
            ("accept-encoding".into(), "identity".into()),
        ];
        request.auth = Some(Auth::Basic { user, password });
        request.body = build(&header).into_bytes().into();
        request.timeout = timeout;
        request.max_response_bytes = Some(max_answer_bytes(c));
        let response = match self.http.send(request).await {
            Ok(response) => response,
            Err(SendFailure::NotSent(reason)) => {
                tracing::debug!(cmdlet, op = op.name(), %reason, "connection failed before sending");
                return Attempt::Failed(Failure::NotSent(ExchangeError::Transport {
                    cmdlet: cmdlet.to_owned(),
                    reason,
                }));
            }
            Err(SendFailure::TimedOut) => {
                return Attempt::Failed(Failure::Lost {
                    reason: format!(
                        "no answer to the {} within {}s",
                        op.name(),
                        timeout.as_secs()
                    ),
                    error: ExchangeError::Timeout {
                        cmdlet: cmdlet.to_owned(),
                        after: timeout,
                    },
                });
            }
            Err(SendFailure::Ambiguous(reason)) => {
                let reason = format!(
                    "the connection broke after the {} was sent: {reason}",
                    op.name()
                );
                return Attempt::Failed(Failure::Lost {
                    error: ExchangeError::Transport {
                        cmdlet: cmdlet.to_owned(),
                        reason: reason.clone(),
                    },
                    reason,
                });
            }
        };
        let status = response.status;
        match status {
            300..=399 => {
                return match self.redirect(cmdlet, op, url, &response, &mut state.redirects) {
                    Ok(target) => {
                        *url = target;
                        Attempt::Again
                    }
                    Err(error) => Attempt::Failed(Failure::Final(error)),
                };
            }
            401 if !state.reminted && token.is_some() => {
                // Roles are embedded when a token is issued: a fresh token may carry a new grant.
                state.reminted = true;
                if let Some(token) = &token {
                    self.tokens.invalidate(&c.scope, token);
                }
                tracing::debug!(cmdlet, op = op.name(), "401: minting a fresh token once");
                return Attempt::Again;
            }
            401 | 403 => {
                let message = match wsman::parse_response(&String::from_utf8_lossy(&response.body))
                {
                    Ok((_, Response::Fault(fault))) => fault.reason,
                    _ if status == 401 => "the credentials were refused (HTTP 401)".to_owned(),
                    _ => "access denied (HTTP 403)".to_owned(),
                };
                let error = self.access_denied(cmdlet, status, &message, token.as_ref());
                // An OAuth 401 after a fresh token: a grant may still be propagating (the
                // pipeline retries a read a few times, each with a token minted anew). Basic
                // credentials and a 403 do not change by waiting.
                if let (401, Some(token)) = (status, &token) {
                    self.tokens.invalidate(&c.scope, token);
                    return Attempt::Failed(Failure::Unauthorized(error));
                }
                return Attempt::Failed(Failure::Final(error));
            }
            429 | 503 => {
                return Attempt::Failed(Failure::Throttled {
                    status,
                    retry_after: response.retry_after(),
                });
            }
            _ => {}
        }
        let text = String::from_utf8_lossy(&response.body);
        match wsman::parse_response(&text) {
            Ok((relates_to, answer)) => {
                if let Some(relates_to) = relates_to
                    && relates_to != header.message_id
                {
                    return Attempt::Done(Err(CallError::Unusable(ExchangeError::Protocol {
                        cmdlet: cmdlet.to_owned(),
                        reason: format!(
                            "the answer to the {} relates to another request",
                            op.name()
                        ),
                    })));
                }
                if let Response::Fault(fault) = &answer {
                    if is_access_denied(fault) {
                        // Authenticated, not authorised: what REST says with a 403.
                        return Attempt::Failed(Failure::Final(self.access_denied(
                            cmdlet,
                            403,
                            &fault.reason,
                            token.as_ref(),
                        )));
                    }
                    return Attempt::Done(Ok(answer));
                }
                if (200..300).contains(&status) {
                    return Attempt::Done(Ok(answer));
                }
            }
            Err(error) if (200..300).contains(&status) => {
                return Attempt::Done(Err(CallError::Unusable(psrp_error(
                    cmdlet,
                    &format!("the answer to the {} is not WS-Management", op.name()),
                    error,
                ))));
            }
            Err(_) => {}
        }
        // A failure status without a fault.
        if matches!(status, 500 | 502 | 504) {
            let reason = format!(
                "HTTP {status} without a WS-Management fault after the {} reached the server",
                op.name()
            );
            return Attempt::Failed(Failure::Lost {
                error: ExchangeError::Transport {
                    cmdlet: cmdlet.to_owned(),
                    reason: reason.clone(),
                },
                reason,
            });
        }
        Attempt::Failed(Failure::Final(ExchangeError::Protocol {
            cmdlet: cmdlet.to_owned(),
            reason: format!(
                "HTTP {status} answering the {} (no WS-Management fault in the body)",
                op.name()
            ),
        }))
    }

    /// Where a redirect of `op` goes, if it may be followed (see the module docs).
    fn redirect(
        &self,
        cmdlet: &str,
        op: Op,
        url: &str,
        response: &HttpResponse,
        redirects: &mut u32,
    ) -> Result<String> {
        let c = &self.config;
        let status = response.status;
        let location = response.header("location").filter(|l| !l.trim().is_empty());
        let protocol = |reason: String| ExchangeError::Protocol {
            cmdlet: cmdlet.to_owned(),
            reason,
        };
        let Some(location) = location else {
            return Err(protocol(format!(
                "HTTP {status} answering the {} without a Location",
                op.name()
            )));
        };
        let target = url::Url::parse(url)
            .and_then(|base| base.join(location.trim()))
            .map_err(|e| protocol(format!("the redirect's Location is not a URL ({e})")))?;
        let shown = format!(
            "{}://{}{}",
            target.scheme(),
            target.host_str().unwrap_or("?"),
            target.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        if op != Op::Create {
            return Err(protocol(format!(
                "the server redirected a {} to {shown}; only the Create that opens the session may be redirected, so the credentials are not sent there",
                op.name()
            )));
        }
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Err(protocol(format!(
                "HTTP {status} answering the Create is not a redirect warden follows"
            )));
        }
        if !c.allow_redirection {
            return Err(protocol(format!(
                "the server redirected the session to {shown} and allow_redirection is off"
            )));
        }
        if target.scheme() != "https" {
            return Err(protocol(format!(
                "refusing to follow the redirect to {shown}: it is not https, and the credentials would travel in clear"
            )));
        }
        if matches!(c.auth, RpsAuth::Basic { .. }) {
            // A password lives long: it goes only where it was configured to go.
            let configured = url::Url::parse(&c.endpoint()).ok();
            let configured_host = configured
                .as_ref()
                .and_then(|u| u.host_str())
                .unwrap_or("?")
                .to_ascii_lowercase();
            let target_host = target.host_str().unwrap_or("?").to_ascii_lowercase();
            if target_host != configured_host {
                return Err(protocol(format!(
                    "refused a redirect of the plain-Basic credentials from {configured_host} to {target_host}; set the endpoint URL to {target_host} if you trust it"
                )));
            }
        }
        *redirects += 1;
        if *redirects > c.max_redirects {
            return Err(protocol(format!(
                "more than {} redirects opening the session; stopping",
                c.max_redirects
            )));
        }
        tracing::info!(cmdlet, to = %shown, "the server redirected the session; following");
        Ok(target.to_string())
    }

    /// The open pool, opening it first if needed (one opening at a time; the others wait).
    pub(super) async fn ensure_open(
        &self,
        cmdlet: &str,
        deadline: Option<Instant>,
    ) -> Result<Arc<OpenPool>> {
        let mut slot = match deadline {
            None => self.pool.lock().await,
            Some(d) => tokio::time::timeout_at(d, self.pool.lock())
                .await
                .map_err(|_| ExchangeError::Transport {
                    cmdlet: cmdlet.to_owned(),
                    reason: "the session was still being opened when the caller's time limit passed; nothing was sent".into(),
                })?,
        };
        if let Some(pool) = &slot.open {
            return Ok(pool.clone());
        }
        let c = &self.config;
        let affordable = |wait: Duration| Deadline(deadline).affords(wait);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut endpoint = slot.endpoint.clone();
            let result = self.open_once(cmdlet, &mut endpoint, deadline).await;
            // A redirect the Create followed moves the whole session.
            slot.endpoint.clone_from(&endpoint);
            match result {
                Ok((shell_id, rpid)) => {
                    slot.generation += 1;
                    let pool = Arc::new(OpenPool {
                        shell_id,
                        rpid,
                        endpoint,
                        generation: slot.generation,
                    });
                    slot.open = Some(pool.clone());
                    tracing::debug!(cmdlet, %shell_id, "runspace pool opened");
                    return Ok(pool);
                }
                Err(OpenFailure::Fatal(error)) => return Err(error),
                Err(OpenFailure::Retry(reason)) => {
                    let wait = self.backoff(attempt);
                    if attempt >= c.max_attempts || !affordable(wait) {
                        return Err(ExchangeError::Transport {
                            cmdlet: cmdlet.to_owned(),
                            reason: format!("the runspace pool could not be opened: {reason}"),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Forgets `pool` (the server lost it), unless it was already replaced.
    pub(super) async fn forget(&self, pool: &OpenPool) {
        let mut slot = self.pool.lock().await;
        if slot
            .open
            .as_ref()
            .is_some_and(|p| p.generation == pool.generation)
        {
            slot.open = None;
        }
    }

    /// Create, then Receive the shell's output until the pool's state is Opened.
    async fn open_once(
        &self,
        cmdlet: &str,
        endpoint: &mut String,
        deadline: Option<Instant>,
    ) -> Result<(Uuid, Uuid), OpenFailure> {
        let c = &self.config;
        let rpid = Uuid::new_v4();
        let max_fragment = wsman::max_fragment_len(c.max_envelope_size);
        let max_runspaces = i32::try_from(c.max_concurrency.max(1)).unwrap_or(i32::MAX);
        let mut creation = Vec::new();
        for (message_type, data) in [
            (
                MessageType::SESSION_CAPABILITY,
                pipeline::session_capability(&SessionCapability::default()),
            ),
            (
                MessageType::INIT_RUNSPACEPOOL,
                pipeline::init_runspace_pool(1, max_runspaces),
            ),
        ] {
            let message = Message {
                destination: Destination::Server,
                message_type,
                runspace_pool_id: rpid,
                pipeline_id: None,
                data,
            }
            .encode();
            for fragment in fragment_message(self.next_object_id(), &message, max_fragment) {
                creation.extend_from_slice(&fragment);
            }
        }
        let mut template = self.header(action::CREATE, None);
        template.options = vec![("protocolversion".into(), "2.3".into())];
        let answer = self
            .call(
                cmdlet,
                Op::Create,
                endpoint,
                &template,
                &|h: &Header| wsman::create_shell(h, rpid, &creation),
                deadline,
            )
            .await;
        let shell_id = match answer {
            Ok(Response::Created { shell_id }) => shell_id,
            Ok(Response::Fault(fault)) => {
                return Err(OpenFailure::Fatal(fault_error(
                    cmdlet,
                    "Create that opens the session",
                    &fault,
                )));
            }
            Ok(other) => return Err(OpenFailure::Fatal(unexpected(cmdlet, "Create", &other))),
            Err(CallError::Fatal(error) | CallError::Unusable(error)) => {
                return Err(OpenFailure::Fatal(error));
            }
            Err(CallError::Ambiguous { reason, .. }) => {
                // The shell may exist under the id we proposed: remove it, then start over.
                self.delete_quietly(cmdlet, rpid, endpoint).await;
                return Err(OpenFailure::Retry(reason));
            }
        };
        // Opening is one request's worth of patience, not forever.
        let began = Instant::now();
        let open_by = began + c.request_timeout;
        let open_by = deadline.map_or(open_by, |d| d.min(open_by));
        let mut defragmenter = Defragmenter::new(MAX_MESSAGE);
        let mut url = endpoint.clone();
        // Answers in a row that carried nothing.
        let mut idle = 0;
        loop {
            if Instant::now() + RETRY_RESERVE >= open_by {
                self.delete_quietly(cmdlet, shell_id, &url).await;
                return Err(OpenFailure::Fatal(ExchangeError::Timeout {
                    cmdlet: cmdlet.to_owned(),
                    after: open_by - began,
                }));
            }
            let template = self.receive_header(shell_id, Some(open_by));
            let answer = self
                .call(
                    cmdlet,
                    Op::Receive,
                    &mut url,
                    &template,
                    &|h: &Header| wsman::receive(h, None),
                    Some(open_by),
                )
                .await;
            let streams = match answer {
                Ok(Response::Received { streams, .. }) => streams,
                Ok(Response::Fault(fault)) if fault.is_timeout() => continue,
                Ok(Response::Fault(fault)) => {
                    return Err(OpenFailure::Fatal(fault_error(
                        cmdlet,
                        "Receive that opens the session",
                        &fault,
                    )));
                }
                Ok(other) => return Err(OpenFailure::Fatal(unexpected(cmdlet, "Receive", &other))),
                Err(CallError::Fatal(error) | CallError::Unusable(error)) => {
                    return Err(OpenFailure::Fatal(error));
                }
                Err(CallError::Ambiguous { reason, .. }) => {
                    // The pool's state may have been in the lost answer: start over.
                    self.delete_quietly(cmdlet, shell_id, &url).await;
                    return Err(OpenFailure::Retry(reason));
                }
            };
            if streams.iter().all(|c| c.data.is_empty()) {
                // Not a busy loop against a server that answers at once with nothing.
                idle += 1;
                idle_pause(idle, Some(open_by)).await;
                continue;
            }
            idle = 0;
            for chunk in streams {
                let messages = defragmenter
                    .push(&chunk.data)
                    .map_err(|e| psrp_error(cmdlet, "opening the session", e))?;
                for bytes in messages {
                    let message = Message::decode(&bytes)
                        .map_err(|e| psrp_error(cmdlet, "opening the session", e))?;
                    match message.message_type {
                        MessageType::RUNSPACEPOOL_STATE => {
                            let (state, error) = pipeline::parse_runspace_pool_state(&message.data)
                                .map_err(|e| psrp_error(cmdlet, "the runspace pool's state", e))?;
                            match state {
                                RunspacePoolState::Opened => return Ok((shell_id, rpid)),
                                RunspacePoolState::Broken | RunspacePoolState::Closed => {
                                    let why = error
                                        .map(|e| e.message)
                                        .filter(|m| !m.trim().is_empty())
                                        .unwrap_or_else(|| "no reason given".into());
                                    return Err(OpenFailure::Fatal(ExchangeError::Protocol {
                                        cmdlet: cmdlet.to_owned(),
                                        reason: redact_credentials(&format!(
                                            "the server could not open the runspace pool ({state:?}): {why}"
                                        )),
                                    }));
                                }
                                _ => {}
                            }
                        }
                        MessageType::WARNING_RECORD => {
                            if let Ok(text) = pipeline::parse_informational_record(&message.data) {
                                tracing::warn!(cmdlet, warning = %redact_credentials(&text), "the server warned while opening the session");
                            }
                        }
                        MessageType::RUNSPACEPOOL_HOST_CALL => {
                            return Err(OpenFailure::Fatal(ExchangeError::Protocol {
                                cmdlet: cmdlet.to_owned(),
                                reason: "the server asked the host for input while opening the session; warden has no interactive host".into(),
                            }));
                        }
                        other => {
                            tracing::trace!(cmdlet, message = other.0, "opening: message ignored");
                        }
                    }
                }
            }
        }
    }

    /// Deletes a shell, ignoring the outcome (cleanup after a failed opening).
    async fn delete_quietly(&self, cmdlet: &str, shell_id: Uuid, url: &str) {
        let template = self.header(action::DELETE, Some(shell_id));
        let mut url = url.to_owned();
        let by = Instant::now() + self.config.operation_timeout.min(Duration::from_secs(10));
        let _ = self
            .call(
                cmdlet,
                Op::Delete,
                &mut url,
                &template,
                &|h: &Header| wsman::delete(h),
                Some(by),
            )
            .await;
    }

    /// Closes the pool (Delete), if open.
    pub(super) async fn close(&self) -> Result<()> {
        const WHAT: &str = "closing the RPS session";
        let mut slot = self.pool.lock().await;
        let Some(pool) = slot.open.take() else {
            return Ok(());
        };
        let template = self.header(action::DELETE, Some(pool.shell_id));
        let mut url = pool.endpoint.clone();
        match self
            .call(
                WHAT,
                Op::Delete,
                &mut url,
                &template,
                &|h: &Header| wsman::delete(h),
                None,
            )
            .await
        {
            Ok(Response::Deleted) => Ok(()),
            Ok(Response::Fault(fault)) if is_shell_lost(&fault) => Ok(()),
            Ok(Response::Fault(fault)) => Err(fault_error(WHAT, "Delete", &fault)),
            Ok(other) => Err(unexpected(WHAT, "Delete", &other)),
            Err(error) => Err(error.into_error(WHAT)),
        }
    }

    /// Signals a pipeline, ignoring the outcome (stopping what nobody reads any more).
    pub(super) async fn signal_quietly(
        &self,
        cmdlet: &str,
        pool: &OpenPool,
        command_id: Uuid,
        code: &str,
    ) {
        let template = self.header(action::SIGNAL, Some(pool.shell_id));
        let mut url = pool.endpoint.clone();
        let by = Instant::now() + self.config.operation_timeout.min(Duration::from_secs(10));
        let code = code.to_owned();
        let result = self
            .call(
                cmdlet,
                Op::Signal,
                &mut url,
                &template,
                &move |h: &Header| wsman::signal(h, command_id, &code),
                Some(by),
            )
            .await;
        if let Err(CallError::Fatal(error) | CallError::Unusable(error)) = result {
            tracing::debug!(cmdlet, %error, "signalling the pipeline failed");
        }
    }
}
