//! The one request pipeline every Exchange transport feeds with "send one attempt": the retry
//! policy ([`RetryPolicy`]), the deadline rule, the session's shared pause, the token fetched by
//! the deadline, and the one classifier ([`classify`]) from a failure and the kind of request
//! to retry / outcome unknown / fail.
//!
//! Write-safety, stated once: a request that may have reached Exchange and whose answer was
//! lost ([`FailureKind::Lost`]) is repeated only when repeating it cannot change state twice
//! ([`CmdletKind::Read`]); for a write it ends as "outcome unknown" and is never sent again.
//! A request that never left, or that Exchange refused before running it (429/503), is
//! repeated whatever it is. A transient server error (a 500 the module lists) is repeated for a
//! read only: for a write it is the answer. So is a 401 that a fresh token did not cure
//! ([`FailureKind::Unauthorized`]): a role or consent granted minutes ago reaches Exchange
//! slowly, so a read tries again a few times ([`UNAUTHORIZED_ATTEMPTS`]), spaced by the
//! policy's back-off, each with a fresh token. A 401 is Exchange's answer that it did not run
//! the cmdlet (it is given before the cmdlet runs, by the front door or the RBAC check), so a
//! write that got one was not applied: it fails as refused, never as of unknown outcome, and
//! is not repeated — the operator re-runs it once the grant has arrived.
//!
//! The deadline rule: no wait (back-off, `Retry-After`, the session's pause) is started that
//! would not end [`RETRY_RESERVE`] before the caller's deadline, and no token is waited for past
//! it; the attempt then fails with what it waited for (throttled, no response), so a write
//! never sent is never reported as of unknown outcome.

use crate::error::{ExchangeError, Result};
use crate::pause::Pause;
use crate::verbs::CmdletKind;
use std::time::Duration;
use tokio::time::Instant;
use warden_auth::{AccessToken, TokenProvider};

pub use warden_auth::RetryPolicy;

/// What a retry after a wait needs to be sent and answered: a wait that would leave less than
/// this before the caller's deadline is not started.
pub const RETRY_RESERVE: Duration = Duration::from_millis(100);

/// Exception names after which a 500 (REST) or a Failed pipeline (RPS) is a transient
/// failure (the module's list).
pub const TRANSIENT_EXCEPTIONS: &[&str] = &[
    "DCOverloadedException",
    "SuitabilityDirectoryException",
    "ServerInMMException",
    "ADServerSettingsChangedException",
    "StorageTransientException",
];

/// Attempts in all a read makes while Exchange keeps answering 401 with fresh tokens (the
/// module retries 401 like 503, up to 6 times: Calvindd2f/EXO_PROJECT
/// `.idea/full_modoule_dump.ps1`, `CheckRetryAndHandleWaitTime`; a few are enough to ride out
/// a grant that is still propagating, and a lasting refusal is not left hanging a minute).
pub const UNAUTHORIZED_ATTEMPTS: u32 = 3;

/// Whether a cmdlet's error names one of the [`TRANSIENT_EXCEPTIONS`] (as its exception type or
/// in its message): [`FailureKind::Transient`].
pub fn is_transient(error: &crate::error::CmdletError) -> bool {
    TRANSIENT_EXCEPTIONS.iter().any(|t| {
        error
            .exception_type
            .as_deref()
            .is_some_and(|e| e.contains(t))
            || error.message.contains(t)
    })
}

/// How one attempt failed, as far as repeating it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The request never left (connection refused, DNS, TLS handshake).
    NotSent,
    /// Exchange refused it before running it (429, 503): repeat after the wait it asked for.
    Throttled,
    /// It may have reached Exchange and its answer was lost (a broken connection, no answer in
    /// time, a gateway's 504, a 5xx without an answer of the protocol).
    Lost,
    /// Exchange answered that it failed with an error it calls transient.
    Transient,
    /// Exchange refused the app (401) even with a freshly minted token: a grant may still be
    /// propagating. Nothing ran.
    Unauthorized,
    /// Anything else: the answer is final.
    Final,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it again (after a wait, within the policy and the deadline).
    Retry,
    /// Stop: it may have run, so it is not sent again, and its outcome is unknown.
    OutcomeUnknown,
    /// Stop with the failure.
    Fail,
}

/// The one write-safety table (see the module docs): `failure` of a request of `kind`.
pub fn classify(failure: FailureKind, kind: CmdletKind) -> Verdict {
    match (failure, kind) {
        (FailureKind::NotSent | FailureKind::Throttled, _) => Verdict::Retry,
        (FailureKind::Lost, CmdletKind::Read) => Verdict::Retry,
        (FailureKind::Lost, CmdletKind::Write) => Verdict::OutcomeUnknown,
        (FailureKind::Transient, CmdletKind::Read) => Verdict::Retry,
        (FailureKind::Transient, CmdletKind::Write) => Verdict::Fail,
        (FailureKind::Unauthorized, CmdletKind::Read) => Verdict::Retry,
        (FailureKind::Unauthorized, CmdletKind::Write) => Verdict::Fail,
        (FailureKind::Final, _) => Verdict::Fail,
    }
}

/// A failed attempt, as a transport reports it to the pipeline.
#[derive(Debug)]
pub(crate) enum Failure {
    /// [`FailureKind::NotSent`]; `error` if it is the last.
    NotSent(ExchangeError),
    /// [`FailureKind::Throttled`] with the status and the server's `Retry-After`.
    Throttled {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// [`FailureKind::Lost`]: `reason` for an unknown outcome, `error` if it is the last.
    Lost {
        reason: String,
        error: ExchangeError,
    },
    /// [`FailureKind::Transient`].
    Transient(ExchangeError),
    /// [`FailureKind::Unauthorized`]: the refusal, explained.
    Unauthorized(ExchangeError),
    /// [`FailureKind::Final`].
    Final(ExchangeError),
}

impl Failure {
    fn kind(&self) -> FailureKind {
        match self {
            Failure::NotSent(_) => FailureKind::NotSent,
            Failure::Throttled { .. } => FailureKind::Throttled,
            Failure::Lost { .. } => FailureKind::Lost,
            Failure::Transient(_) => FailureKind::Transient,
            Failure::Unauthorized(_) => FailureKind::Unauthorized,
            Failure::Final(_) => FailureKind::Final,
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    /// An answer the transport takes as it is.
    Done(T),
    /// Send again at once, not counted (a fresh token after a 401, a followed redirect).
    Again,
    /// Failed.
    Failed(Failure),
}

/// How a pipeline run ended without an answer.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It may have run; it was not repeated.
    OutcomeUnknown(String),
    /// Failed.
    Failed(ExchangeError),
}

impl Ended {
    /// As an error of `cmdlet`.
    pub(crate) fn into_error(self, cmdlet: &str) -> ExchangeError {
        match self {
            Ended::OutcomeUnknown(reason) => ExchangeError::OutcomeUnknown {
                cmdlet: cmdlet.to_owned(),
                reason,
            },
            Ended::Failed(error) => error,
        }
    }
}

impl From<ExchangeError> for Ended {
    fn from(error: ExchangeError) -> Self {
        Ended::Failed(error)
    }
}

/// A caller's deadline, if it has one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline(pub Option<Instant>);

impl Deadline {
    /// Whether a wait of `wait` from now would end [`RETRY_RESERVE`] before the deadline.
    pub(crate) fn affords(self, wait: Duration) -> bool {
        self.0
            .is_none_or(|d| Instant::now() + wait + RETRY_RESERVE < d)
    }

    /// The most a request may take: `limit`, or what is left, if less.
    pub(crate) fn cap(self, limit: Duration) -> Duration {
        self.0.map_or(limit, |d| {
            limit.min(d.saturating_duration_since(Instant::now()))
        })
    }

    /// `deadline - RETRY_RESERVE`: when waiting for something before a send must stop.
    pub(crate) fn send_by(self) -> Option<Instant> {
        self.0.map(|d| d.checked_sub(RETRY_RESERVE).unwrap_or(d))
    }

    /// Sleeps `wait` if it is affordable; false (without sleeping) if it is not.
    pub(crate) async fn sleep(self, wait: Duration) -> bool {
        if !self.affords(wait) {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }
}

/// A token for `scope`, or — when it cannot be had by the deadline (the token endpoint slow or
/// throttled) — an error saying so, before anything is sent.
pub(crate) async fn token_by(
    tokens: &TokenProvider,
    scope: &str,
    deadline: Deadline,
) -> Result<AccessToken> {
    let Some(by) = deadline.send_by() else {
        return Ok(tokens.get_token(scope).await?);
    };
    match tokio::time::timeout_at(by, tokens.get_token(scope)).await {
        Ok(token) => Ok(token?),
        Err(_) => Err(ExchangeError::Auth(warden_auth::AuthError::Transport {
            url: tokens
                .credential()
                .token_url()
                .unwrap_or_else(|| "the token endpoint".into()),
            reason: "no token within the caller's time limit".into(),
        })),
    }
}

/// One request's run through the pipeline. A transport drives it so:
///
/// ```text
/// loop {
///     pipeline.begin().await?;                  // counts the attempt, waits out the pause
///     match send_one_attempt().await {
///         Attempt::Done(answer) => return Ok(answer),
///         Attempt::Again => pipeline.again(),
///         Attempt::Failed(failure) => pipeline.failed(failure).await?,   // classify, wait
///     }
/// }
/// ```
#[derive(Debug)]
pub(crate) struct Pipeline<'a> {
    policy: RetryPolicy,
    pause: &'a Pause,
    deadline: Deadline,
    cmdlet: &'a str,
    kind: CmdletKind,
    attempts: u32,
    unauthorized: u32,
}

impl<'a> Pipeline<'a> {
    /// A run of a request of `kind` (what repeating it could do) for `cmdlet`.
    pub(crate) fn new(
        policy: RetryPolicy,
        pause: &'a Pause,
        deadline: Deadline,
        cmdlet: &'a str,
        kind: CmdletKind,
    ) -> Self {
        Self {
            policy,
            pause,
            deadline,
            cmdlet,
            kind,
            attempts: 0,
            unauthorized: 0,
        }
    }

    /// Before each attempt: counts it and waits out the session's pause, unless the pause
    /// would outlast the deadline (then it is throttled).
    pub(crate) async fn begin(&mut self) -> std::result::Result<(), Ended> {
        self.attempts += 1;
        if let Err(left) = self.pause.wait_out(self.deadline.0, RETRY_RESERVE).await {
            return Err(Ended::Failed(ExchangeError::Throttled {
                cmdlet: self.cmdlet.to_owned(),
                status: 429,
                attempts: self.attempts - 1,
                retry_after: Some(left),
            }));
        }
        Ok(())
    }

    /// Counts an attempt sent before this pipeline began (a read's page asked for ahead,
    /// sent only while no pause held), so its failure is weighed as the first attempt's.
    pub(crate) fn sent_ahead(&mut self) {
        self.attempts += 1;
    }

    /// The attempt is repeated at once and not counted (a fresh token, a followed redirect).
    pub(crate) fn again(&mut self) {
        self.attempts -= 1;
    }

    /// After a failed attempt: `Ok` when it is to be sent again (after the wait, taken here),
    /// else how it ended.
    pub(crate) async fn failed(&mut self, failure: Failure) -> std::result::Result<(), Ended> {
        let (cmdlet, attempts) = (self.cmdlet, self.attempts);
        let mut last = self.policy.is_last(attempts);
        if let Failure::Unauthorized(_) = failure {
            self.unauthorized += 1;
            last |= self.unauthorized >= UNAUTHORIZED_ATTEMPTS;
        }
        match classify(failure.kind(), self.kind) {
            Verdict::Retry => {}
            Verdict::OutcomeUnknown => {
                let reason = match failure {
                    Failure::Lost { reason, .. } => reason,
                    other => format!("{other:?}"),
                };
                return Err(Ended::OutcomeUnknown(reason));
            }
            Verdict::Fail => {
                return Err(Ended::Failed(match failure {
                    Failure::NotSent(error)
                    | Failure::Lost { error, .. }
                    | Failure::Transient(error)
                    | Failure::Unauthorized(error)
                    | Failure::Final(error) => error,
                    Failure::Throttled {
                        status,
                        retry_after,
                    } => ExchangeError::Throttled {
                        cmdlet: cmdlet.to_owned(),
                        status,
                        attempts,
                        retry_after,
                    },
                }));
            }
        }
        match failure {
            Failure::Throttled {
                status,
                retry_after,
            } => {
                let throttled = |retry_after| {
                    Ended::Failed(ExchangeError::Throttled {
                        cmdlet: cmdlet.to_owned(),
                        status,
                        attempts,
                        retry_after,
                    })
                };
                if last {
                    return Err(throttled(retry_after));
                }
                let wait = retry_after.unwrap_or_else(|| self.policy.delay(attempts));
                // Everyone using this session backs off together, not only this caller; the
                // next `begin` sleeps it out.
                self.pause.extend(wait);
                if !self.deadline.affords(wait) {
                    return Err(throttled(Some(wait)));
                }
                tracing::debug!(
                    cmdlet,
                    attempts,
                    status,
                    wait_ms = wait.as_millis() as u64,
                    "throttled; waiting"
                );
                Ok(())
            }
            Failure::NotSent(error)
            | Failure::Lost { error, .. }
            | Failure::Transient(error)
            | Failure::Unauthorized(error)
            | Failure::Final(error) => {
                let wait = self.policy.delay(attempts);
                if last || !self.deadline.sleep(wait).await {
                    return Err(Ended::Failed(error));
                }
                tracing::debug!(cmdlet, attempts, %error, "retrying");
                Ok(())
            }
        }
    }
}

/// Drives `answers` (one per attempt) through a pipeline, as a transport does (tests).
#[cfg(test)]
async fn drive<T>(
    mut pipeline: Pipeline<'_>,
    mut answers: impl FnMut() -> Attempt<T>,
) -> std::result::Result<T, Ended> {
    loop {
        pipeline.begin().await?;
        match answers() {
            Attempt::Done(answer) => return Ok(answer),
            Attempt::Again => pipeline.again(),
            Attempt::Failed(failure) => pipeline.failed(failure).await?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CmdletKind::{Read, Write};

    #[test]
    fn the_write_safety_table() {
        let table = [
            (FailureKind::NotSent, Read, Verdict::Retry),
            (FailureKind::NotSent, Write, Verdict::Retry),
            (FailureKind::Throttled, Read, Verdict::Retry),
            (FailureKind::Throttled, Write, Verdict::Retry),
            (FailureKind::Lost, Read, Verdict::Retry),
            (FailureKind::Lost, Write, Verdict::OutcomeUnknown),
            (FailureKind::Transient, Read, Verdict::Retry),
            (FailureKind::Transient, Write, Verdict::Fail),
            (FailureKind::Unauthorized, Read, Verdict::Retry),
            (FailureKind::Unauthorized, Write, Verdict::Fail),
            (FailureKind::Final, Read, Verdict::Fail),
            (FailureKind::Final, Write, Verdict::Fail),
        ];
        for (failure, kind, verdict) in table {
            assert_eq!(classify(failure, kind), verdict, "{failure:?} × {kind:?}");
        }
    }

    fn pipeline<'a>(policy: &RetryPolicy, pause: &'a Pause, kind: CmdletKind) -> Pipeline<'a> {
        Pipeline::new(policy.clone(), pause, Deadline(None), "Set-Mailbox", kind)
    }

    fn lost() -> Failure {
        Failure::Lost {
            reason: "reset".into(),
            error: ExchangeError::Invalid("lost".into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_write_is_sent_once_and_a_lost_read_until_the_policy_is_spent() {
        let policy = RetryPolicy::exchange(4, Duration::from_millis(10), Duration::from_millis(50));
        let pause = Pause::default();
        let mut sent = 0;
        let ended = drive(pipeline(&policy, &pause, Write), || -> Attempt<()> {
            sent += 1;
            Attempt::Failed(lost())
        })
        .await
        .unwrap_err();
        assert!(matches!(ended, Ended::OutcomeUnknown(reason) if reason == "reset"));
        assert_eq!(sent, 1);
        let mut sent = 0;
        let ended = drive(pipeline(&policy, &pause, Read), || -> Attempt<()> {
            sent += 1;
            Attempt::Failed(lost())
        })
        .await
        .unwrap_err();
        assert!(matches!(ended, Ended::Failed(ExchangeError::Invalid(_))));
        assert_eq!(sent, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lasting_401_is_tried_a_few_spaced_times_for_a_read_and_once_for_a_write() {
        let policy = RetryPolicy::exchange(6, Duration::from_secs(2), Duration::from_secs(60));
        let pause = Pause::default();
        let refused = || Failure::Unauthorized(ExchangeError::Invalid("401".into()));
        let started = Instant::now();
        let mut sent = 0;
        let ended = drive(pipeline(&policy, &pause, Read), || -> Attempt<()> {
            sent += 1;
            Attempt::Failed(refused())
        })
        .await
        .unwrap_err();
        assert!(matches!(ended, Ended::Failed(ExchangeError::Invalid(_))));
        assert_eq!(sent, UNAUTHORIZED_ATTEMPTS);
        // Spaced by the back-off (half-jittered 2 s, then 4 s), on tokio's paused clock.
        assert!(
            started.elapsed() >= Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let mut sent = 0;
        let ended = drive(pipeline(&policy, &pause, Write), || -> Attempt<()> {
            sent += 1;
            Attempt::Failed(refused())
        })
        .await
        .unwrap_err();
        assert!(matches!(ended, Ended::Failed(ExchangeError::Invalid(_))));
        assert_eq!(sent, 1);
        // A grant that arrives on the second try: the read succeeds.
        let mut answers = vec![Attempt::Failed(refused()), Attempt::Done(7)].into_iter();
        let answer = drive(pipeline(&policy, &pause, Read), || answers.next().unwrap())
            .await
            .unwrap();
        assert_eq!(answer, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_pauses_every_caller_and_again_is_not_counted() {
        let policy = RetryPolicy::exchange(2, Duration::from_millis(10), Duration::from_millis(50));
        let pause = Pause::default();
        let mut answers = vec![
            Attempt::Again,
            Attempt::Again,
            Attempt::Failed(Failure::Throttled {
                status: 429,
                retry_after: Some(Duration::from_secs(3)),
            }),
            Attempt::Done(7),
        ]
        .into_iter();
        let started = Instant::now();
        let answer = drive(pipeline(&policy, &pause, Write), || answers.next().unwrap())
            .await
            .unwrap();
        assert_eq!(answer, 7);
        assert!(started.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn no_wait_is_started_that_would_outlast_the_deadline() {
        let policy = RetryPolicy::exchange(6, Duration::from_millis(10), Duration::from_millis(50));
        let pause = Pause::default();
        let mut sent = 0;
        let deadline = Deadline(Some(Instant::now() + Duration::from_secs(1)));
        let run = Pipeline::new(policy.clone(), &pause, deadline, "Set-Mailbox", Write);
        let ended = drive(run, || -> Attempt<()> {
            sent += 1;
            Attempt::Failed(Failure::Throttled {
                status: 429,
                retry_after: Some(Duration::from_secs(30)),
            })
        })
        .await
        .unwrap_err();
        assert_eq!(sent, 1);
        assert!(matches!(
            ended,
            Ended::Failed(ExchangeError::Throttled { attempts: 1, .. })
        ));
    }
}
