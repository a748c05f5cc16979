//! One call: a pipeline on the session's runspace pool, read page by page.
//!
//! Page semantics: every Receive answer that carries output, warnings or non-terminating
//! errors is one [`Page`] (objects from PIPELINE_OUTPUT, `warnings` from WARNING_RECORDs,
//! `errors` from ERROR_RECORDs); answers with none of these (a `TimedOut` fault, progress) are
//! not pages, the stream asks again. A Completed pipeline ends the stream; Failed is
//! [`ExchangeError::Cmdlet`] (what was received in the same answer is dropped: the error is the
//! outcome); Stopped is an error too (for a write, of unknown outcome). `ResultSize` is sent to
//! the server, and once that many objects have been returned the stream ends (a read's
//! pipeline is signalled to stop).
//!
//! A read that Failed with one of REST's transient exceptions ([`crate::pipeline::TRANSIENT_EXCEPTIONS`]) before
//! returning anything runs again, as REST retries its 500.
//!
//! After the Command was accepted, a write's outcome is known only from the pipeline's state:
//! any failure to read it is [`ExchangeError::OutcomeUnknown`], output that does not decode
//! included. So is an answer to the Command (or to the Send that completes the pipeline) that
//! the server took with a 2xx but that is not the expected one (not WS-Management, relating
//! to another request, another kind of answer): the write may have started. A read that loses an answer
//! before its first page starts over with a new Command; after a page it fails, since the
//! lost answer held results.

use super::client::{
    CallError, Inner, Op, OpenPool, RETRY_RESERVE, fault_error, idle_pause, is_shell_lost,
    psrp_error, unexpected,
};
use super::convert::{cmdlet_error, error_json, output_object};
use crate::error::{ExchangeError, Result};
use crate::pipeline::{Deadline, FailureKind, Verdict, classify, is_transient};
use crate::response::{Page, redact_credentials};
use crate::rest::session::Invocation;
use crate::runner::PageStream;
use crate::verbs::CmdletKind;
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use uuid::Uuid;
use warden_psrp::message::{Destination, Message, MessageType};
use warden_psrp::pipeline::{self, PipelineState};
use warden_psrp::wsman::{self, Header, Response, action, signal_code};
use warden_psrp::{Defragmenter, clixml, fragment_message};

struct Running {
    pool: Arc<OpenPool>,
    pipeline_id: Uuid,
    command_id: Uuid,
    defragmenter: Defragmenter,
    last_progress: Instant,
    /// Answers in a row that carried nothing (a server that does not hold a Receive open).
    idle: u32,
}

/// What one Receive brought.
enum Step {
    Page(Page),
    Nothing,
    End,
    /// A read lost an answer before its first page: start over.
    Restart(String),
    /// A read failed in a way REST retries: start over, or fail with this when out of attempts.
    Retry(ExchangeError),
}

/// The pages of one call, fetched on demand.
pub struct RpsStream {
    session: Arc<Inner>,
    cmdlet: String,
    kind: CmdletKind,
    select: Vec<String>,
    pipeline: Arc<String>,
    remaining: Option<u64>,
    permit: Option<OwnedSemaphorePermit>,
    running: Option<Running>,
    done: bool,
    pages: u32,
    restarts: u32,
    /// The patience of the page being fetched (for its timeout error).
    patience: Duration,
    /// Why the call is refused before anything is sent, given on the first page.
    refused: Option<ExchangeError>,
}

impl fmt::Debug for RpsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpsStream")
            .field("cmdlet", &self.cmdlet)
            .field("kind", &self.kind)
            .field("pages", &self.pages)
            .field("running", &self.running.as_ref().map(|r| r.command_id))
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RpsStream {
    pub(super) fn new(session: Arc<Inner>, invocation: Invocation) -> Self {
        let remaining = invocation.result_limit();
        // Refused before the parameters are serialized: a SecureString's text never enters a
        // pipeline's CLIXML, whichever way the stream was asked for.
        let refused = super::refusal(&invocation);
        let parameters = if refused.is_some() {
            Vec::new()
        } else {
            invocation
                .parameters
                .iter()
                .map(|(name, value)| (name.clone(), super::convert::to_ps(value)))
                .collect()
        };
        let command = pipeline::Command {
            name: invocation.cmdlet.clone(),
            is_script: false,
            parameters,
        };
        let pipeline = Arc::new(pipeline::create_pipeline(&[command]));
        Self {
            session,
            kind: CmdletKind::of(&invocation.cmdlet),
            cmdlet: invocation.cmdlet,
            select: invocation.select,
            pipeline,
            remaining,
            permit: None,
            running: None,
            done: false,
            pages: 0,
            restarts: 0,
            patience: Duration::MAX,
            refused,
        }
    }

    /// Whether an answer lost after the call may have started is "outcome unknown" (a write)
    /// rather than a reason to run the call again (a read): the pipeline's one classifier.
    fn unknown_if_lost(&self) -> bool {
        classify(FailureKind::Lost, self.kind) == Verdict::OutcomeUnknown
    }

    fn finish(&mut self) {
        self.done = true;
        self.running = None;
        self.permit = None;
    }

    /// A failure after the Command was accepted: for a write, its outcome is unknown.
    fn after_start(&self, error: ExchangeError) -> ExchangeError {
        match error {
            ExchangeError::Cmdlet(_)
            | ExchangeError::NotExecuted { .. }
            | ExchangeError::OutcomeUnknown { .. } => error,
            other if self.kind.is_write() => ExchangeError::OutcomeUnknown {
                cmdlet: self.cmdlet.clone(),
                reason: other.to_string(),
            },
            other => other,
        }
    }

    /// Stops the running pipeline (best effort) and forgets it.
    async fn abandon(&mut self, code: &str) {
        if let Some(running) = self.running.take() {
            self.session
                .signal_quietly(&self.cmdlet, &running.pool, running.command_id, code)
                .await;
        }
    }

    async fn next(&mut self, deadline: Option<Instant>) -> Result<Option<Page>> {
        let affordable = |wait: Duration| Deadline(deadline).affords(wait);
        loop {
            if self.running.is_none() {
                if self.permit.is_none() {
                    self.permit = Some(self.acquire(deadline).await?);
                }
                if let Some(reason) = self.start(deadline).await? {
                    self.restart(self.transport(reason), &affordable).await?;
                    continue;
                }
            }
            // Every failure of a Receive comes after the Command was accepted: one that
            // leaves a write's outcome unknown (output that does not decode, a message of
            // another pipeline) says so.
            let step = self.receive(deadline).await;
            match step.map_err(|e| self.after_start(e))? {
                Step::Page(page) => {
                    self.pages += 1;
                    return Ok(Some(page));
                }
                Step::Nothing => {}
                Step::End => {
                    self.finish();
                    return Ok(None);
                }
                Step::Restart(reason) => {
                    self.restart(self.transport(reason), &affordable).await?;
                }
                Step::Retry(error) => self.restart(error, &affordable).await?,
            }
        }
    }

    fn transport(&self, reason: String) -> ExchangeError {
        ExchangeError::Transport {
            cmdlet: self.cmdlet.clone(),
            reason,
        }
    }

    /// Runs the call again after a back-off, or fails with `error` when out of attempts or
    /// patience.
    async fn restart(
        &mut self,
        error: ExchangeError,
        affordable: &impl Fn(Duration) -> bool,
    ) -> Result<()> {
        self.abandon(signal_code::TERMINATE).await;
        self.restarts += 1;
        let wait = self.session.backoff(self.restarts);
        if self.restarts >= self.session.config.max_attempts || !affordable(wait) {
            return Err(error);
        }
        tracing::debug!(cmdlet = %self.cmdlet, reason = %error, "nothing of the call ran for sure, or it is a read that returned nothing yet: running it again");
        tokio::time::sleep(wait).await;
        Ok(())
    }

    async fn acquire(&self, deadline: Option<Instant>) -> Result<OwnedSemaphorePermit> {
        let acquire = self.session.limiter.clone().acquire_owned();
        let permit = match deadline {
            None => acquire.await,
            Some(d) => tokio::time::timeout_at(d.checked_sub(RETRY_RESERVE).unwrap_or(d), acquire)
                .await
                .map_err(|_| ExchangeError::Transport {
                    cmdlet: self.cmdlet.clone(),
                    reason: format!(
                        "all {} runspaces stayed busy past the caller's time limit; nothing was sent",
                        self.session.config.max_concurrency.max(1)
                    ),
                })?,
        };
        Ok(permit.expect("the limiter is never closed"))
    }

    /// Command (the first CREATE_PIPELINE fragment), then Send for the rest. `Some(reason)`:
    /// nothing ran for sure, or it is a read: start over.
    async fn start(&mut self, deadline: Option<Instant>) -> Result<Option<String>> {
        let body = self.pipeline.clone();
        let c = self.session.config.clone();
        let mut reopened = false;
        'open: loop {
            let pool = self.session.ensure_open(&self.cmdlet, deadline).await?;
            let pipeline_id = Uuid::new_v4();
            let message = Message {
                destination: Destination::Server,
                message_type: MessageType::CREATE_PIPELINE,
                runspace_pool_id: pool.rpid,
                pipeline_id: Some(pipeline_id),
                data: body.as_ref().clone(),
            }
            .encode();
            let fragments = fragment_message(
                self.session.next_object_id(),
                &message,
                wsman::max_fragment_len(c.max_envelope_size),
            );
            let Some((first, rest)) = fragments.split_first() else {
                return Err(ExchangeError::Invalid(format!(
                    "{}: the pipeline encoded to no fragment",
                    self.cmdlet
                )));
            };
            let template = self.session.header(action::COMMAND, Some(pool.shell_id));
            let mut url = pool.endpoint.clone();
            let answer = self
                .session
                .call(
                    &self.cmdlet,
                    Op::Command,
                    &mut url,
                    &template,
                    &|h: &Header| wsman::command(h, pipeline_id, first),
                    deadline,
                )
                .await;
            let command_id = match answer {
                Ok(Response::CommandCreated { command_id }) => command_id,
                Ok(Response::Fault(fault)) if is_shell_lost(&fault) && !reopened => {
                    // The server lost the pool: the command never ran; open a new one.
                    tracing::info!(cmdlet = %self.cmdlet, "the server lost the runspace pool; reopening");
                    self.session.forget(&pool).await;
                    reopened = true;
                    continue 'open;
                }
                Ok(Response::Fault(fault)) => {
                    return Err(fault_error(&self.cmdlet, "Command", &fault));
                }
                // The server took the Command (a 2xx), yet its answer is not one: the write may
                // have started.
                Ok(other) => {
                    return Err(self.after_start(unexpected(&self.cmdlet, "Command", &other)));
                }
                Err(CallError::Unusable(error)) => return Err(self.after_start(error)),
                Err(CallError::Fatal(error)) => return Err(error),
                Err(CallError::Ambiguous { reason, .. }) => {
                    if self.unknown_if_lost() {
                        return Err(ExchangeError::OutcomeUnknown {
                            cmdlet: self.cmdlet.clone(),
                            reason,
                        });
                    }
                    return Ok(Some(reason));
                }
            };
            self.running = Some(Running {
                pool: pool.clone(),
                pipeline_id,
                command_id,
                defragmenter: Defragmenter::new(super::client::MAX_MESSAGE),
                last_progress: Instant::now(),
                idle: 0,
            });
            for (i, fragment) in rest.iter().enumerate() {
                let last = i + 1 == rest.len();
                let template = self.session.header(action::SEND, Some(pool.shell_id));
                let mut url = pool.endpoint.clone();
                let answer = self
                    .session
                    .call(
                        &self.cmdlet,
                        Op::Send,
                        &mut url,
                        &template,
                        &|h: &Header| wsman::send(h, Some(command_id), fragment),
                        deadline,
                    )
                    .await;
                match answer {
                    Ok(Response::Sent) => {}
                    Ok(Response::Fault(fault)) if is_shell_lost(&fault) && !reopened => {
                        // The pipeline never got all of its fragments: it never ran.
                        self.running = None;
                        self.session.forget(&pool).await;
                        reopened = true;
                        continue 'open;
                    }
                    Ok(Response::Fault(fault)) => {
                        self.abandon(signal_code::TERMINATE).await;
                        return Err(fault_error(&self.cmdlet, "Send of the pipeline", &fault));
                    }
                    Ok(other) => {
                        let error = unexpected(&self.cmdlet, "Send", &other);
                        return Err(self.send_unusable(last, error).await);
                    }
                    Err(CallError::Unusable(error)) => {
                        return Err(self.send_unusable(last, error).await);
                    }
                    Err(CallError::Fatal(error)) => {
                        // Refused, throttled or never sent: the pipeline is incomplete, not run.
                        self.abandon(signal_code::TERMINATE).await;
                        return Err(error);
                    }
                    Err(CallError::Ambiguous { reason, .. }) => {
                        if last && self.unknown_if_lost() {
                            // The last fragment may have arrived and started the write.
                            self.running = None;
                            return Err(ExchangeError::OutcomeUnknown {
                                cmdlet: self.cmdlet.clone(),
                                reason,
                            });
                        }
                        // Incomplete (or a read): start over with a new Command.
                        return Ok(Some(reason));
                    }
                }
            }
            return Ok(None);
        }
    }

    /// A Send the server took (a 2xx) with an unusable answer: after the last fragment a
    /// write may have started (its outcome is unknown and it is left to finish); otherwise the
    /// pipeline is incomplete or a read, and is stopped.
    async fn send_unusable(&mut self, last: bool, error: ExchangeError) -> ExchangeError {
        if last && self.kind.is_write() {
            self.running = None;
            return self.after_start(error);
        }
        self.abandon(signal_code::TERMINATE).await;
        error
    }

    /// One Receive of the running pipeline.
    async fn receive(&mut self, deadline: Option<Instant>) -> Result<Step> {
        let c = self.session.config.clone();
        let running = self.running.as_ref().expect("a pipeline runs");
        let (pool, command_id) = (running.pool.clone(), running.command_id);
        if running.last_progress.elapsed() >= c.request_timeout {
            return Err(self.after_start(ExchangeError::Timeout {
                cmdlet: self.cmdlet.clone(),
                after: c.request_timeout,
            }));
        }
        if let Some(d) = deadline
            && Instant::now() + RETRY_RESERVE >= d
        {
            return Err(self.after_start(ExchangeError::Timeout {
                cmdlet: self.cmdlet.clone(),
                after: self.patience,
            }));
        }
        let template = self.session.receive_header(pool.shell_id, deadline);
        let mut url = pool.endpoint.clone();
        let answer = self
            .session
            .call(
                &self.cmdlet,
                Op::Receive,
                &mut url,
                &template,
                &|h: &Header| wsman::receive(h, Some(command_id)),
                deadline,
            )
            .await;
        let (streams, state) = match answer {
            Ok(Response::Received { streams, state }) => (streams, state),
            Ok(Response::Fault(fault)) if fault.is_timeout() => return Ok(Step::Nothing),
            Ok(Response::Fault(fault)) if is_shell_lost(&fault) => {
                self.session.forget(&pool).await;
                let reason = "the server lost the session while the pipeline ran".to_owned();
                return self.lost(reason);
            }
            Ok(Response::Fault(fault)) => {
                return Err(self.after_start(fault_error(&self.cmdlet, "Receive", &fault)));
            }
            Ok(other) => return Err(self.after_start(unexpected(&self.cmdlet, "Receive", &other))),
            Err(CallError::Fatal(error) | CallError::Unusable(error)) => {
                return Err(self.after_start(error));
            }
            Err(CallError::Ambiguous { reason, .. }) => return self.lost(reason),
        };
        let mut page = Page::default();
        let mut final_state = None;
        let running = self.running.as_mut().expect("a pipeline runs");
        let empty = streams.iter().all(|c| c.data.is_empty()) && state.is_none();
        if empty {
            // Not a busy loop against a server that answers at once with nothing.
            running.idle += 1;
            idle_pause(running.idle, deadline).await;
            return Ok(Step::Nothing);
        }
        running.idle = 0;
        for chunk in streams {
            if chunk.command_id.is_some_and(|id| id != command_id) {
                continue;
            }
            let messages = running
                .defragmenter
                .push(&chunk.data)
                .map_err(|e| psrp_error(&self.cmdlet, "the pipeline's output", e))?;
            for bytes in messages {
                running.last_progress = Instant::now();
                let message = Message::decode(&bytes)
                    .map_err(|e| psrp_error(&self.cmdlet, "the pipeline's output", e))?;
                if message
                    .pipeline_id
                    .is_some_and(|id| id != running.pipeline_id)
                {
                    return Err(ExchangeError::Protocol {
                        cmdlet: self.cmdlet.clone(),
                        reason: "the server sent a message of another pipeline".into(),
                    });
                }
                let bad = |what: &str, e| psrp_error(&self.cmdlet, what, e);
                match message.message_type {
                    MessageType::PIPELINE_OUTPUT => {
                        let value = clixml::deserialize(&message.data)
                            .map_err(|e| bad("an output object", e))?;
                        page.objects.push(output_object(value, &self.select));
                    }
                    MessageType::WARNING_RECORD => {
                        let text = pipeline::parse_informational_record(&message.data)
                            .map_err(|e| bad("a warning", e))?;
                        page.warnings.push(redact_credentials(&text));
                    }
                    MessageType::ERROR_RECORD => {
                        let info = pipeline::parse_error_record(&message.data)
                            .map_err(|e| bad("an error record", e))?;
                        page.errors.push(error_json(&info));
                    }
                    MessageType::PIPELINE_STATE => {
                        let (state, error) = pipeline::parse_pipeline_state(&message.data)
                            .map_err(|e| bad("the pipeline's state", e))?;
                        if matches!(
                            state,
                            PipelineState::Completed
                                | PipelineState::Failed
                                | PipelineState::Stopped
                        ) {
                            final_state = Some((state, error));
                        }
                    }
                    MessageType::PIPELINE_HOST_CALL | MessageType::RUNSPACEPOOL_HOST_CALL => {
                        let error = ExchangeError::Protocol {
                            cmdlet: self.cmdlet.clone(),
                            reason: "the cmdlet asked the host for input (a confirmation or a missing parameter); warden has no interactive host: pass -Confirm:$false and every mandatory parameter".into(),
                        };
                        let error = self.after_start(error);
                        self.abandon(signal_code::PS_CRTL_C).await;
                        return Err(error);
                    }
                    other => {
                        tracing::trace!(cmdlet = %self.cmdlet, message = other.0, "message ignored");
                    }
                }
            }
        }
        if let Some(remaining) = self.remaining.as_mut() {
            page.objects
                .truncate(usize::try_from(*remaining).unwrap_or(usize::MAX));
            *remaining -= page.objects.len() as u64;
        }
        let mut ended = false;
        match final_state {
            Some((PipelineState::Completed, _)) => ended = true,
            Some((PipelineState::Failed, error)) => {
                self.running = None;
                let info = error.unwrap_or_default();
                let error = cmdlet_error(&self.cmdlet, &info);
                if let Some(prompt) = confirmation_prompt(&error) {
                    if self.pages == 0 && page.objects.is_empty() {
                        // The runspace had no one to ask before any output, so the cmdlet
                        // did not run: reported as over REST (a confirmation message).
                        return Err(ExchangeError::NotExecuted {
                            request_id: error.request_id.clone(),
                            cmdlet: self.cmdlet.clone(),
                            message: format!("Exchange asked for confirmation: {prompt}"),
                        });
                    }
                    // Output came first: part of the pipeline ran, so a write's outcome is
                    // unknown.
                    return Err(self.after_start(ExchangeError::Protocol {
                        cmdlet: self.cmdlet.clone(),
                        reason: format!(
                            "the cmdlet asked for confirmation after it had produced output, so part of it may have run: {prompt}"
                        ),
                    }));
                }
                if is_transient(&error)
                    && classify(FailureKind::Transient, self.kind) == Verdict::Retry
                    && self.pages == 0
                    && page.objects.is_empty()
                {
                    // What REST retries (a directory or store hiccup): a read runs again.
                    return Ok(Step::Retry(ExchangeError::Cmdlet(Box::new(error))));
                }
                return Err(ExchangeError::Cmdlet(Box::new(error)));
            }
            Some((_, error)) => {
                self.running = None;
                let why = error
                    .map(|e| e.message)
                    .filter(|m| !m.trim().is_empty())
                    .map(|m| format!(": {}", redact_credentials(&m)))
                    .unwrap_or_default();
                return Err(self.after_start(ExchangeError::Protocol {
                    cmdlet: self.cmdlet.clone(),
                    reason: format!("the server stopped the pipeline before it finished{why}"),
                }));
            }
            None if state.as_ref().is_some_and(|s| s.is_done()) => {
                self.running = None;
                return Err(self.after_start(ExchangeError::Protocol {
                    cmdlet: self.cmdlet.clone(),
                    reason: "the command ended without reporting the pipeline's state".into(),
                }));
            }
            None => {}
        }
        if !ended && self.remaining == Some(0) {
            // ResultSize reached: stop reading; a read's pipeline is stopped too.
            if self.kind.is_write() {
                self.running = None;
            } else {
                self.abandon(signal_code::PS_CRTL_C).await;
            }
            ended = true;
        }
        let has_content =
            !page.objects.is_empty() || !page.warnings.is_empty() || !page.errors.is_empty();
        if ended {
            self.finish();
            return Ok(if has_content {
                Step::Page(page)
            } else {
                Step::End
            });
        }
        Ok(if has_content {
            Step::Page(page)
        } else {
            Step::Nothing
        })
    }

    /// An answer of the running pipeline was lost.
    fn lost(&mut self, reason: String) -> Result<Step> {
        if self.unknown_if_lost() {
            self.running = None;
            return Err(ExchangeError::OutcomeUnknown {
                cmdlet: self.cmdlet.clone(),
                reason,
            });
        }
        if self.pages == 0 {
            return Ok(Step::Restart(reason));
        }
        // The pipeline may still run: the error path stops it.
        Err(ExchangeError::Transport {
            cmdlet: self.cmdlet.clone(),
            reason: format!(
                "{reason}; {} page(s) were returned and the rest of the results are lost",
                self.pages
            ),
        })
    }
}

#[async_trait]
impl PageStream for RpsStream {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        self.next_page_within(Duration::MAX).await
    }

    async fn next_page_within(&mut self, patience: Duration) -> Result<Option<Page>> {
        if let Some(refused) = self.refused.take() {
            self.done = true;
            return Err(refused);
        }
        if self.done {
            return Ok(None);
        }
        if self.remaining == Some(0) {
            self.finish();
            return Ok(None);
        }
        let deadline = Instant::now().checked_add(patience);
        self.patience = patience;
        let result = self.next(deadline).await;
        if result.is_err() {
            if self.running.is_some() && !self.kind.is_write() {
                self.abandon(signal_code::PS_CRTL_C).await;
            }
            self.finish();
        }
        result
    }
}

impl Drop for RpsStream {
    fn drop(&mut self) {
        // A read nobody reads any more is stopped; a write is left to finish.
        if let Some(running) = self.running.take()
            && !self.kind.is_write()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let session = self.session.clone();
            let cmdlet = self.cmdlet.clone();
            let (pool, command_id) = (running.pool, running.command_id);
            handle.spawn(async move {
                session
                    .signal_quietly(&cmdlet, &pool, command_id, signal_code::PS_CRTL_C)
                    .await;
            });
        }
    }
}

/// The prompt of a cmdlet that failed because it asked for confirmation with no host to ask:
/// PowerShell's `HostException` "… The host was attempting to request confirmation with the
/// following message: <prompt>".
fn confirmation_prompt(error: &crate::error::CmdletError) -> Option<&str> {
    const ASKED: &str = "attempting to request confirmation with the following message:";
    if !error
        .exception_type
        .as_deref()
        .is_some_and(|t| t.ends_with("HostException"))
    {
        return None;
    }
    let at = error.message.find(ASKED)?;
    Some(error.message[at + ASKED.len()..].trim())
}
