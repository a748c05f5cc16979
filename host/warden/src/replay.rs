//! Recorded answers for testing without a tenant: `--record FILE` writes every cmdlet call a
//! run makes, with Exchange's answer, as JSON lines; `--replay FILE` runs a guest against
//! those answers instead of Exchange. Both sit behind [`CmdletRunner`], under the broker, so
//! the policy, output shaping, budgets and audit trail are the real ones.
//!
//! A recording holds what the runner saw: each call's cmdlet, its parameters exactly as they
//! were sent (values the policy marks sensitive are hashed only in the audit trail, so they
//! are here as sent; the broker's resolved immutable ids too), the `$select` list, and the
//! pages, warnings and errors Exchange answered. No token or credential ever reaches a
//! runner, so none can be recorded. Treat a recording like the mailbox data it holds.
//!
//! [`LoggedRunner`] sits in the same place for every run and logs each call the broker lets
//! through at debug level (`-v`): the cmdlet, its parameter names (never values, which may be
//! sensitive) and how it ended.

use anyhow::Context;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use warden_exchange::params::encode_parameters;
use warden_exchange::verbs::CmdletKind;
use warden_exchange::{
    CmdletError, CmdletRunner, ExchangeError, Invocation, Page, PageStream, Result,
};

/// One recorded call: a line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    /// `Verb-Noun`.
    cmdlet: String,
    /// The parameters in their wire form (`InvokeCommand`'s `Parameters`).
    parameters: Value,
    /// The `$select` projection, when there was one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    select: Vec<String>,
    /// The pages Exchange answered, in order.
    #[serde(default)]
    pages: Vec<RecordedPage>,
    /// The error that ended the call, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<RecordedError>,
    /// False when the caller stopped reading before the last page.
    #[serde(default = "yes")]
    complete: bool,
}

fn yes() -> bool {
    true
}

/// One page of answers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RecordedPage {
    objects: Vec<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    errors: Vec<Value>,
}

/// An error that ended a call: a cmdlet's own error is kept whole (a guest tells them apart),
/// any other as its kind and text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum RecordedError {
    Remote {
        status: u16,
        code: String,
        #[serde(default)]
        error_id: Option<String>,
        #[serde(default)]
        exception_type: Option<String>,
        message: String,
        #[serde(default)]
        target: Option<String>,
    },
    /// The cmdlet did not run (a prompt or a what-if): replayed as such, so a replay shows
    /// the same "not executed" a live run did.
    NotExecuted {
        message: String,
    },
    Other {
        message: String,
    },
}

impl RecordedError {
    fn of(error: &ExchangeError) -> Self {
        match error {
            ExchangeError::Cmdlet(e) => RecordedError::Remote {
                status: e.status,
                code: e.code.clone(),
                error_id: e.error_id.clone(),
                exception_type: e.exception_type.clone(),
                message: e.message.clone(),
                target: e.target.clone(),
            },
            ExchangeError::NotExecuted { message, .. } => RecordedError::NotExecuted {
                message: message.clone(),
            },
            other => RecordedError::Other {
                message: other.to_string(),
            },
        }
    }

    fn to_error(&self, cmdlet: &str) -> ExchangeError {
        match self {
            RecordedError::Remote {
                status,
                code,
                error_id,
                exception_type,
                message,
                target,
            } => ExchangeError::Cmdlet(Box::new(CmdletError {
                cmdlet: cmdlet.to_owned(),
                status: *status,
                code: code.clone(),
                error_id: error_id.clone(),
                exception_type: exception_type.clone(),
                message: message.clone(),
                target: target.clone(),
                request_id: None,
                server: None,
            })),
            RecordedError::NotExecuted { message } => ExchangeError::NotExecuted {
                cmdlet: cmdlet.to_owned(),
                message: message.clone(),
                request_id: None,
            },
            RecordedError::Other { message } => ExchangeError::Transport {
                cmdlet: cmdlet.to_owned(),
                reason: format!("(recorded) {message}"),
            },
        }
    }
}

/// The parameters as a recording keys them: the wire form, so replay matches what was sent.
fn wire_parameters(invocation: &Invocation) -> Value {
    encode_parameters(&invocation.parameters)
}

/// Writes the calls of a run, with their answers, to a file at the end of the run.
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn CmdletRunner>,
    /// One slot per started call, in start order; filled when its stream ends or is dropped.
    calls: Arc<Mutex<Vec<Option<Call>>>>,
}

impl Recorder {
    /// A recorder in front of `inner` (the real Exchange session).
    pub fn new(inner: Arc<dyn CmdletRunner>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            calls: Arc::default(),
        })
    }

    /// Writes every call recorded so far to `path` (replacing it), one JSON object a line.
    pub fn write(&self, path: &Path) -> anyhow::Result<usize> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = Vec::new();
        let mut written = 0;
        for call in calls.iter().flatten() {
            serde_json::to_writer(&mut text, call)?;
            text.push(b'\n');
            written += 1;
        }
        let context = || format!("writing the recording {}", path.display());
        // A path that is there must be a plain file or a link (which is replaced, never
        // followed: a link to the audit trail must not truncate the trail).
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && !meta.file_type().is_file()
            && !meta.file_type().is_symlink()
        {
            anyhow::bail!("{}: not a regular file", context());
        }
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Owner-only (a new temporary file is created 0600, exclusively), like the audit key:
        // it holds tenant data and sensitive values as sent. Renamed into place only whole.
        let mut file = tempfile::NamedTempFile::new_in(dir).with_context(context)?;
        file.write_all(&text).with_context(context)?;
        file.as_file().sync_all().with_context(context)?;
        file.persist(path)
            .map_err(|e| anyhow::anyhow!("{}: {}", context(), e.error))?;
        Ok(written)
    }
}

impl CmdletRunner for Recorder {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        let call = Call {
            cmdlet: invocation.cmdlet.clone(),
            parameters: wire_parameters(&invocation),
            select: invocation.select.clone(),
            pages: Vec::new(),
            error: None,
            complete: false,
        };
        let slot = {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.push(None);
            calls.len() - 1
        };
        Box::new(RecordingStream {
            inner: self.inner.start(invocation),
            call: Some(call),
            slot,
            calls: self.calls.clone(),
        })
    }
}

#[derive(Debug)]
struct RecordingStream {
    inner: Box<dyn PageStream>,
    call: Option<Call>,
    slot: usize,
    calls: Arc<Mutex<Vec<Option<Call>>>>,
}

impl RecordingStream {
    fn note(&mut self, result: &Result<Option<Page>>) {
        let Some(call) = self.call.as_mut() else {
            return;
        };
        match result {
            Ok(Some(page)) => call.pages.push(RecordedPage {
                // A page that came as text (a wasm guest's) is recorded as its objects.
                objects: page.to_objects().unwrap_or_else(|error| {
                    tracing::warn!(%error, "a page could not be recorded");
                    Vec::new()
                }),
                warnings: page.warnings.clone(),
                errors: page.errors.clone(),
            }),
            Ok(None) => call.complete = true,
            Err(error) => {
                call.error = Some(RecordedError::of(error));
                call.complete = true;
            }
        }
    }
}

#[async_trait]
impl PageStream for RecordingStream {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        let result = self.inner.next_page().await;
        self.note(&result);
        result
    }

    async fn next_page_within(&mut self, patience: std::time::Duration) -> Result<Option<Page>> {
        let result = self.inner.next_page_within(patience).await;
        self.note(&result);
        result
    }
}

impl Drop for RecordingStream {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = calls.get_mut(self.slot) {
                *slot = Some(call);
            }
        }
    }
}

/// Answers calls from a recording instead of Exchange. Each call takes the first unused
/// recorded call with the same cmdlet, parameters and `$select`; once those are used up, the
/// last of them answers a read again (a plugin may read the same thing twice), never a write.
/// A call that was never
/// recorded fails, naming the cmdlet and its parameters, and is kept for the run's summary.
#[derive(Debug)]
pub struct ReplayRunner {
    source: PathBuf,
    calls: Vec<Call>,
    used: Mutex<Vec<bool>>,
    misses: Mutex<Vec<String>>,
}

impl ReplayRunner {
    /// Reads a recording written by `--record`.
    pub fn load(path: &Path) -> anyhow::Result<Arc<Self>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "{}: the recording cannot be read: {e}\n  fix: check the path given with \
                 --replay (`--record FILE` against exosim writes one)",
                path.display()
            )
        })?;
        let mut calls = Vec::new();
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let call: Call = serde_json::from_str(line).map_err(|e| {
                anyhow::anyhow!(
                    "{}:{}: not a recorded call: {e}\n  fix: record it again with --record \
                     (each line is one call: cmdlet, parameters, pages)",
                    path.display(),
                    index + 1
                )
            })?;
            calls.push(call);
        }
        Ok(Arc::new(Self {
            source: path.to_owned(),
            used: Mutex::new(vec![false; calls.len()]),
            calls,
            misses: Mutex::default(),
        }))
    }

    /// The calls a guest made that the recording did not have, one line each.
    pub fn misses(&self) -> Vec<String> {
        self.misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn answer(&self, invocation: &Invocation) -> Option<Call> {
        let parameters = wire_parameters(invocation);
        let same = |call: &Call| {
            call.cmdlet == invocation.cmdlet
                && call.parameters == parameters
                && call.select == invocation.select
        };
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = self
            .calls
            .iter()
            .enumerate()
            .find(|(i, call)| !used[*i] && same(call))
            .map(|(i, _)| i);
        // A read may be asked again; a write is answered once per recorded write, as Exchange
        // would not apply the same change twice the same way (a plugin that repeats a write is
        // the bug replay must show, not hide).
        let again = || match CmdletKind::of(&invocation.cmdlet) {
            CmdletKind::Read => self.calls.iter().rposition(same),
            CmdletKind::Write => None,
        };
        let index = fresh.or_else(again)?;
        used[index] = true;
        Some(self.calls[index].clone())
    }
}

impl CmdletRunner for ReplayRunner {
    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        match self.answer(&invocation) {
            Some(call) => Box::new(ReplayStream {
                cmdlet: invocation.cmdlet,
                pages: call.pages.into_iter(),
                error: call.error,
                complete: call.complete,
                source: self.source.clone(),
            }),
            None => {
                let parameters =
                    serde_json::to_string(&wire_parameters(&invocation)).unwrap_or_default();
                let select = if invocation.select.is_empty() {
                    String::new()
                } else {
                    format!(" selecting {}", invocation.select.join(","))
                };
                let miss = format!("{} {parameters}{select}", invocation.cmdlet);
                self.misses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(miss.clone());
                Box::new(MissingStream {
                    message: format!(
                        "replay: {miss} is not in the recording {}; record the run again \
                         with --record against exosim",
                        self.source.display()
                    ),
                })
            }
        }
    }
}

#[derive(Debug)]
struct ReplayStream {
    cmdlet: String,
    pages: std::vec::IntoIter<RecordedPage>,
    error: Option<RecordedError>,
    complete: bool,
    source: PathBuf,
}

#[async_trait]
impl PageStream for ReplayStream {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        if let Some(page) = self.pages.next() {
            return Ok(Some(Page {
                objects: page.objects,
                text: None,
                warnings: page.warnings,
                errors: page.errors,
                next_link: None,
                request_id: None,
            }));
        }
        if let Some(error) = self.error.take() {
            return Err(error.to_error(&self.cmdlet));
        }
        if !self.complete {
            return Err(ExchangeError::Invalid(format!(
                "replay: {} was recorded only up to where its caller stopped reading; record \
                 the run again with --record to replay more of it ({})",
                self.cmdlet,
                self.source.display()
            )));
        }
        Ok(None)
    }
}

#[derive(Debug)]
struct MissingStream {
    message: String,
}

#[async_trait]
impl PageStream for MissingStream {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        Err(ExchangeError::Invalid(self.message.clone()))
    }
}

/// Logs every call the broker sends, at debug level: what `-v` shows of a run's calls.
#[derive(Debug)]
pub struct LoggedRunner {
    inner: Arc<dyn CmdletRunner>,
}

impl LoggedRunner {
    /// A logger in front of `inner`.
    pub fn new(inner: Arc<dyn CmdletRunner>) -> Arc<Self> {
        Arc::new(Self { inner })
    }
}

#[async_trait::async_trait]
impl CmdletRunner for LoggedRunner {
    /// A guest's batch reaches the transport as one (names only, as for a single call).
    async fn run_batch(
        &self,
        invocations: Vec<Invocation>,
        patience: std::time::Duration,
    ) -> Vec<warden_exchange::rest::batch::BatchResult> {
        let names: Vec<&str> = invocations.iter().map(|i| i.cmdlet.as_str()).collect();
        tracing::debug!(cmdlets = %names.join(","), "allowed by the policy: calling Exchange in a batch");
        self.inner.run_batch(invocations, patience).await
    }

    fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
        // Names only: a value may be one the policy marks sensitive.
        let names: Vec<&str> = invocation.parameters.keys().map(String::as_str).collect();
        tracing::debug!(
            cmdlet = %invocation.cmdlet,
            parameters = %names.join(","),
            "allowed by the policy: calling Exchange"
        );
        let cmdlet = invocation.cmdlet.clone();
        Box::new(LoggedStream {
            inner: self.inner.start(invocation),
            cmdlet,
            objects: 0,
        })
    }
}

#[derive(Debug)]
struct LoggedStream {
    inner: Box<dyn PageStream>,
    cmdlet: String,
    objects: usize,
}

impl LoggedStream {
    fn note(&mut self, result: &Result<Option<Page>>) {
        match result {
            Ok(Some(page)) => self.objects += page.len(),
            Ok(None) => tracing::debug!(
                cmdlet = %self.cmdlet,
                objects = self.objects,
                "Exchange answered"
            ),
            Err(error) => tracing::debug!(
                cmdlet = %self.cmdlet,
                kind = error.kind(),
                "Exchange failed the call"
            ),
        }
    }
}

#[async_trait]
impl PageStream for LoggedStream {
    async fn next_page(&mut self) -> Result<Option<Page>> {
        let result = self.inner.next_page().await;
        self.note(&result);
        result
    }

    async fn next_page_within(&mut self, patience: std::time::Duration) -> Result<Option<Page>> {
        let result = self.inner.next_page_within(patience).await;
        self.note(&result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_exchange::Parameters;

    #[test]
    fn a_read_is_answered_again_and_a_write_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tape.jsonl");
        let empty = wire_parameters(&Invocation::new("Get-Mailbox", Parameters::new()));
        let line = |cmdlet: &str| {
            serde_json::json!({"cmdlet": cmdlet, "parameters": empty, "pages": [{"objects": []}]})
                .to_string()
        };
        std::fs::write(
            &path,
            format!("{}\n{}\n", line("Get-Mailbox"), line("Set-Mailbox")),
        )
        .unwrap();
        let replay = ReplayRunner::load(&path).unwrap();
        let call = |cmdlet: &str| replay.answer(&Invocation::new(cmdlet, Parameters::new()));
        assert!(call("Get-Mailbox").is_some());
        assert!(call("Get-Mailbox").is_some(), "a read may be asked again");
        assert!(call("Set-Mailbox").is_some());
        assert!(
            call("Set-Mailbox").is_none(),
            "a repeated write is not in the recording"
        );
    }

    /// A call that did not run is recorded and replayed as not executed, not as a transport
    /// failure (issue 15 review, 10).
    #[test]
    fn not_executed_is_recorded_and_replayed_as_such() {
        let error = ExchangeError::NotExecuted {
            cmdlet: "Remove-Mailbox".into(),
            message: "Exchange asked for confirmation: Remove alice?".into(),
            request_id: Some("r-1".into()),
        };
        let recorded = RecordedError::of(&error);
        let line = serde_json::to_string(&recorded).unwrap();
        assert!(line.contains("not_executed"), "{line}");
        let back: RecordedError = serde_json::from_str(&line).unwrap();
        match back.to_error("Remove-Mailbox") {
            ExchangeError::NotExecuted {
                cmdlet, message, ..
            } => {
                assert_eq!(cmdlet, "Remove-Mailbox");
                assert_eq!(message, "Exchange asked for confirmation: Remove alice?");
            }
            other => panic!("{other:?}"),
        }
    }
}
