//! # warden-runtime: where guests run
//!
//! Two front ends of the one [`warden_broker::Broker`]: [`component`] runs WebAssembly
//! components (wasmtime 48, WASI preview 2, the `warden:plugin` world in `wit/`) and
//! [`script`] runs Rhai scripts. Both turn a guest's request into the same
//! `Broker::invoke` / `Broker::stream` call with the same cmdlet name and parameter JSON, so a
//! policy decision can never differ between them.
//!
//! What it refuses: running a guest before the broker has granted its run (the grant is found
//! by the guest's sha256, so a changed plugin or script gets nothing); giving a guest any
//! ambient authority (no environment, files, sockets, stdin, module imports or `eval`); and
//! letting a guest outlive its limits — CPU, memory (for the whole run, every memory and table
//! summed), what it can make the host hold, wall clock (host calls included), output, log size
//! and line count, error size, and the grant's budgets. It never holds a credential: guests
//! reach Exchange only through the broker, which returns typed errors and shaped JSON.
//!
//! Both runtimes run every guest under one supervisor per run (`src/supervisor`): it
//! begins the run, keeps its deadline and CPU clock (time in host calls excluded), records the
//! first stop reason, holds the one log sink, answers the caller's [`Interrupt`], and finishes
//! the run (closing audit line, [`RunReport`]), so a limit ends a wasm plugin and a Rhai script
//! with the same report.

#![deny(missing_docs)]

pub mod component;
mod interrupt;
pub mod script;
mod supervisor;

pub use component::{
    CheckedPlugin, LoadedPlugin, PluginHost, PluginHostBuilder, PluginInfo, check_signature,
    detached_signature_path, plugin_principal, read_detached_signature,
};
pub use interrupt::Interrupt;
pub use script::{CompiledScript, ScriptHost};
pub use supervisor::log::LOG_LINE_OVERHEAD;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use warden_broker::{Delegation, GuestError, RunEnd, Usage};

/// Host-wide ceilings. A grant's budgets may tighten them for a run, never loosen them.
#[derive(Debug, Clone)]
pub struct RuntimeLimits {
    /// Most memory any guest may hold (wasm linear memory; for Rhai, what its thread
    /// allocates and still holds, counted by the allocator), whatever a grant says.
    pub max_memory_bytes: u64,
    /// Largest output a run may return.
    pub max_output_bytes: usize,
    /// Bytes of log lines and captured stdout/stderr kept per run, each line charged
    /// [`LOG_LINE_OVERHEAD`] bytes on top of its text (so empty lines are not free); the rest
    /// is dropped and counted in [`RunReport::log_bytes_dropped`].
    pub max_log_bytes: usize,
    /// Log lines kept per run, whatever their size; the rest are counted in
    /// [`RunReport::log_lines_dropped`].
    pub max_log_lines: usize,
    /// Longest single log line kept; longer lines are cut (at a character boundary). A guest's
    /// error message (wasm `err`, a Rhai error) is cut to this size too.
    pub max_log_line_bytes: usize,
    /// How often the CPU deadline is checked (the epoch tick for wasm).
    pub tick: Duration,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        Self {
            max_memory_bytes: 512 * 1024 * 1024,
            max_output_bytes: 16 * 1024 * 1024,
            max_log_bytes: 1024 * 1024,
            max_log_lines: 10_000,
            max_log_line_bytes: 8 * 1024,
            tick: Duration::from_millis(10),
        }
    }
}

/// Severity of a guest's log line (the WIT `log.level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        })
    }
}

/// Where a guest's log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The `log` import / Rhai `log::*`.
    Guest,
    /// What a wasm guest wrote to stdout (Rhai `print`).
    Stdout,
    /// What a wasm guest wrote to stderr (Rhai `debug`).
    Stderr,
}

/// Receives what a running guest reports. Called from the runtime's threads; keep it quick.
/// Lines arrive already capped by [`RuntimeLimits`].
pub trait RunObserver: Send + Sync + fmt::Debug {
    /// A log line (or a line of captured stdout/stderr).
    fn log(&self, source: LogSource, level: LogLevel, message: &str);
    /// Progress: `done` of `total` items.
    fn progress(&self, done: u64, total: Option<u64>, label: &str);
    /// Every linear memory of a wasm guest once its run has ended (completed, failed, trapped
    /// or stopped), before its store is dropped. Called once per started run, and only by a
    /// host built with [`PluginHostBuilder::inspect_guest_memory`]; never for Rhai scripts,
    /// which have no memory of their own.
    fn guest_memory(&self, _memories: &[GuestMemory<'_>]) {}
}

/// One linear memory of a wasm guest, as the host read it after the run.
#[derive(Clone, Copy)]
pub struct GuestMemory<'a> {
    /// Which core instance of the component it belongs to (in the store's order).
    pub instance: usize,
    /// Its index in that instance's memory index space.
    pub index: u32,
    /// Its bytes, all of them.
    pub data: &'a [u8],
}

impl fmt::Debug for GuestMemory<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The size, not megabytes of bytes.
        f.debug_struct("GuestMemory")
            .field("instance", &self.instance)
            .field("index", &self.index)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// An observer that forwards lines to `tracing` (target `guest`) and ignores progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingObserver;

impl RunObserver for TracingObserver {
    fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        match level {
            LogLevel::Trace => tracing::trace!(target: "guest", ?source, "{message}"),
            LogLevel::Debug => tracing::debug!(target: "guest", ?source, "{message}"),
            LogLevel::Info => tracing::info!(target: "guest", ?source, "{message}"),
            LogLevel::Warn => tracing::warn!(target: "guest", ?source, "{message}"),
            LogLevel::Error => tracing::error!(target: "guest", ?source, "{message}"),
        }
    }
    fn progress(&self, _done: u64, _total: Option<u64>, _label: &str) {}
}

/// What one run is given besides its code.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The words after `--` on the command line (the WIT `run(args)`; Rhai's `ARGS`).
    pub args: Vec<String>,
    /// Where log lines and progress go.
    pub observer: Arc<dyn RunObserver>,
    /// Stops the run from outside when triggered (keep a clone to trigger it).
    pub interrupt: Interrupt,
    /// On whose behalf the run acts, when the service began it for a person: the broker
    /// writes it into every audit line of the run. `None` for the CLI's own runs.
    pub delegation: Option<Delegation>,
}

impl RunRequest {
    /// A request with `args`, logging through `tracing`, with an interrupt nobody holds.
    pub fn new(args: Vec<String>) -> Self {
        Self {
            args,
            observer: Arc::new(TracingObserver),
            interrupt: Interrupt::new(),
            delegation: None,
        }
    }

    /// The same request, acting on behalf of `delegation`'s person.
    pub fn with_delegation(mut self, delegation: Delegation) -> Self {
        self.delegation = Some(delegation);
        self
    }

    /// The same request, stopped when `interrupt` is triggered.
    pub fn with_interrupt(mut self, interrupt: Interrupt) -> Self {
        self.interrupt = interrupt;
        self
    }
}

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum GuestOutput {
    /// A wasm plugin's `ok` string.
    Text(String),
    /// A Rhai script's final value, as JSON.
    Json(serde_json::Value),
}

/// Why the host stopped a guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StopReason {
    /// Ran past its CPU deadline.
    #[error("stopped: CPU limit of {} ms reached", limit.as_millis())]
    Cpu {
        /// The limit.
        // The tag is `limit`, so the field is serialized under another name.
        #[serde(rename = "limit_ms", serialize_with = "millis")]
        limit: Duration,
    },
    /// Tried to grow its memory past the limit.
    #[error("stopped: memory limit of {limit_bytes} bytes reached")]
    Memory {
        /// The limit.
        limit_bytes: u64,
    },
    /// Ran past its wall-clock limit (time in host calls included).
    #[error("stopped: wall-clock limit of {} ms reached", limit.as_millis())]
    WallClock {
        /// The limit.
        // The tag is `limit`, so the field is serialized under another name.
        #[serde(rename = "limit_ms", serialize_with = "millis")]
        limit: Duration,
    },
    /// Returned more output than allowed.
    #[error("stopped: output of {size_bytes} bytes is over the {limit_bytes}-byte limit")]
    Output {
        /// What it tried to return.
        size_bytes: u64,
        /// The limit.
        limit_bytes: u64,
    },
    /// A Rhai script used up its operations (or hit a size or depth limit).
    #[error("stopped: {what} limit reached")]
    ScriptLimit {
        /// Which limit (`operations`, `call depth`, `string size`, …).
        what: String,
    },
    /// Hit a host-side limit on what a guest may make the host create or hold for it.
    #[error("stopped: {which} limit of {max} reached")]
    HostLimit {
        /// Which limit.
        which: HostLimit,
        /// Its value.
        max: u64,
    },
    /// Its caller triggered the run's [`Interrupt`] (Ctrl-C, a cancelled task).
    #[error("stopped: interrupted")]
    Interrupted,
    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access).
    #[error("stopped: the guest trapped: {message}")]
    Trap {
        /// The trap, without host detail.
        message: String,
    },
}

/// The host-side limits besides memory, CPU and time, named in [`StopReason::HostLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostLimit {
    /// Core wasm instances in one run.
    CoreInstances,
    /// Linear memories in one run.
    Memories,
    /// Tables in one run.
    Tables,
    /// Elements of one table.
    TableElements,
    /// Live component-model resource handles in one run.
    ResourceHandles,
    /// Host resources a run holds open at once (result streams, WASI streams and pollables).
    HostResources,
    /// Bytes of one `get-random-bytes` call.
    RandomBytes,
    /// Bytes a guest passes to the host in one call.
    HostCallBytes,
}

impl fmt::Display for HostLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostLimit::CoreInstances => "core-instance (per run)",
            HostLimit::Memories => "linear-memory count (per run)",
            HostLimit::Tables => "table count (per run)",
            HostLimit::TableElements => "table-size (elements per table)",
            HostLimit::ResourceHandles => "resource-handle (live handles per run)",
            HostLimit::HostResources => "open host resources (streams and pollables per run)",
            HostLimit::RandomBytes => "random-bytes (bytes per call)",
            HostLimit::HostCallBytes => "host-call data (bytes per call)",
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum RunOutcome {
    /// The guest finished and returned output.
    Completed {
        /// Its output.
        output: GuestOutput,
    },
    /// The guest finished with an error of its own (wasm `err(message)`; a Rhai error that
    /// was not caught, with its position).
    Failed {
        /// The guest's message.
        message: String,
    },
    /// The host stopped the guest at a limit.
    Stopped {
        /// Which limit.
        reason: StopReason,
    },
}

impl RunOutcome {
    /// The status word used in the audit trail (`run-end:<status>`) and exit codes: the
    /// closing line's own ([`RunEnd::status`]), so the two cannot disagree.
    pub fn status(&self) -> &'static str {
        self.run_end().status()
    }

    /// How the run's closing audit line records this outcome. Output is counted as the
    /// operator sees it: a text (a plugin's, or a script's string value) by its bytes, any
    /// other value by its JSON text.
    pub fn run_end(&self) -> RunEnd {
        match self {
            RunOutcome::Completed { output } => RunEnd::Completed {
                output_bytes: match output {
                    GuestOutput::Text(text) => text.len() as u64,
                    GuestOutput::Json(serde_json::Value::String(text)) => text.len() as u64,
                    GuestOutput::Json(value) => value.to_string().len() as u64,
                },
            },
            RunOutcome::Failed { message } => RunEnd::Failed {
                message: message.clone(),
            },
            RunOutcome::Stopped { reason } => RunEnd::Stopped {
                reason: reason.to_string(),
            },
        }
    }
}

/// A run that started (its grant was found): how it ended and what it used.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The run id, in every audit line of the run.
    pub run_id: String,
    /// The grant it ran under.
    pub grant_id: String,
    /// How it ended.
    pub outcome: RunOutcome,
    /// What it used of its budgets.
    pub usage: Usage,
    /// Time from start to end.
    #[serde(serialize_with = "millis")]
    pub elapsed: Duration,
    /// Log bytes dropped at the caps.
    pub log_bytes_dropped: u64,
    /// Log lines dropped whole at the caps.
    pub log_lines_dropped: u64,
    /// The guest's time as its CPU budget measures it (time since the guest started running,
    /// after its code was prepared, outside host calls, up to where it stopped); both runtimes
    /// report it.
    #[serde(
        rename = "cpu_ms",
        skip_serializing_if = "Option::is_none",
        serialize_with = "optional_millis"
    )]
    pub cpu_used: Option<Duration>,
    /// The most memory the guest held at any moment, where the runtime counts it (Rhai: every
    /// allocation charged to the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// Whether the run's closing audit line was written. `false`: the trail does not say how
    /// the run ended (the operator must be told; the CLI exits non-zero).
    pub trail_closed: bool,
}

fn optional_millis<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// `text` cut to at most `max` bytes, at a character boundary (log lines, labels).
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A run that never started: the guest could not be loaded, or the broker refused it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The plugin or script file is not something we can run. `problem` says what is wrong
    /// with it, `fix` what to do.
    #[error("{what}: {problem}. {fix}")]
    Load {
        /// The file (or `inline script`).
        what: String,
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
    /// The broker refused the run (no grant names it, its hash differs from the pinned one,
    /// or the audit trail cannot be written).
    #[error("run refused: {0}")]
    Refused(GuestError),
    /// The host could not set up the engine (cache directory, engine configuration).
    #[error("runtime setup failed: {0}")]
    Setup(String),
}
