//! The workers: each claims the oldest queued run from the store, checks it against the
//! policy as it is NOW (task gone, requester no longer a delegate, values no longer allowed,
//! approval now needed: refused), and runs the task's pinned script or plugin through the
//! runtimes and a broker over the one Exchange session. The run is marked `may_have_written`
//! before any write is sent ([`crate::marking`]); log lines and the guest's output go to the
//! store.

use crate::marking::{MarkingRunner, WriteMarker};
use crate::run_error::RunError;
use crate::runs;
use crate::state::AppState;
use async_trait::async_trait;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use warden_broker::Broker;
use warden_exchange::CmdletRunner;
use warden_policy::{Policy, Principal, TaskRuns};
use warden_runtime::{
    GuestOutput, Interrupt, LogLevel, LogSource, PluginHost, RunObserver, RunOutcome, RunRequest,
    RuntimeError, RuntimeLimits, ScriptHost,
};
use warden_store::{Claim, RunRecord, RunStatus, Store};

/// What the workers need besides the shared state.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The Exchange session every run's broker calls.
    pub runner: Arc<dyn CmdletRunner>,
    /// Time limit of each cmdlet call.
    pub call_timeout: Duration,
    /// The runtimes' limits.
    pub limits: RuntimeLimits,
    /// How many runs at once (0: this instance runs nothing, it only serves).
    pub workers: usize,
    /// This instance's name, the prefix of its workers' names (`NAME/N`): at start, the runs
    /// its workers were running when it last stopped are recovered, and no other instance's.
    pub instance: String,
}

/// A running run's handle for shutdown: its interrupt, and whether it may have written.
#[derive(Debug, Clone)]
struct Active {
    interrupt: Interrupt,
    cut: Arc<AtomicBool>,
}

/// The pool.
#[derive(Debug)]
pub struct Workers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    active: Arc<std::sync::Mutex<Vec<Active>>>,
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl Workers {
    /// Starts `config.workers` workers.
    pub fn start(state: AppState, config: WorkerConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(std::sync::Mutex::new(Vec::new()));
        let scripts = Arc::new(ScriptHost::new(config.limits.clone()));
        let config = Arc::new(config);
        let tasks = (0..config.workers)
            .map(|n| {
                let worker = Worker {
                    name: format!("{}/{n}", config.instance),
                    state: state.clone(),
                    config: config.clone(),
                    scripts: scripts.clone(),
                    stop: stop.clone(),
                    active: active.clone(),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Self {
            tasks,
            active,
            stop,
            wake: state.wake.clone(),
        }
    }

    /// Stops claiming runs; waits up to `grace` for the running ones, then interrupts them
    /// (the cut ones are marked by their workers) and waits for them to end.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_waiters();
        // One future for both waits: polling a finished JoinHandle again (a second join_all
        // over the same handles) panics, and the cut runs would then never be marked.
        let mut all = std::pin::pin!(futures::future::join_all(self.tasks));
        if tokio::time::timeout(grace, &mut all).await.is_ok() {
            return;
        }
        for active in self.active.lock().expect("active runs lock").iter() {
            active.cut.store(true, Ordering::Release);
            active.interrupt.interrupt();
        }
        all.await;
    }
}

struct Worker {
    name: String,
    state: AppState,
    config: Arc<WorkerConfig>,
    scripts: Arc<ScriptHost>,
    stop: Arc<AtomicBool>,
    active: Arc<std::sync::Mutex<Vec<Active>>>,
}

/// How often an idle worker looks at the store without being woken (runs queued by another
/// instance, approvals given there).
const IDLE_POLL: Duration = Duration::from_secs(1);

impl Worker {
    async fn run(self) {
        while !self.stop.load(Ordering::Acquire) {
            match self.state.store.claim_next(&self.name).await {
                Ok(Some(run)) => self.execute(run).await,
                Ok(None) => {
                    let _ = tokio::time::timeout(IDLE_POLL, self.state.wake.notified()).await;
                }
                Err(error) => {
                    tracing::error!(%error, worker = %self.name, "claiming a run failed");
                    tokio::time::sleep(IDLE_POLL).await;
                }
            }
        }
    }

    async fn finish(
        &self,
        claim: &Claim,
        status: RunStatus,
        results: Option<Value>,
        error: Option<String>,
    ) {
        if let Err(e) = self.state.store.finish(claim, status, results, error).await {
            tracing::error!(error = %e, run = %claim.id, "could not record how a run ended");
        }
    }

    async fn execute(&self, run: RunRecord) {
        let id = run.id;
        // The claim fences every later write about this run: once the run is recovered and
        // claimed elsewhere, this worker can no longer mark, log or finish it.
        let Some(claim) = run.claim() else {
            tracing::error!(run = %id, "a claimed run came back without its claim");
            return;
        };
        let checked = match self.state.policy.current() {
            Ok(policy) => admit(&policy, &run).map(|args| (policy, args)),
            Err(error) => Err(RunError::PolicyUnavailable(error)),
        };
        let (policy, args) = match checked {
            Ok(ok) => ok,
            Err(error) => return self.fail(&run, &claim, error).await,
        };
        let code = match self.load(&policy, &run.task) {
            Ok(code) => code,
            Err(reason) => {
                return self
                    .fail(&run, &claim, RunError::CodeUnavailable(reason))
                    .await;
            }
        };
        let marked = Arc::new(AtomicBool::new(false));
        let marker = Arc::new(StoreMarker {
            store: self.state.store.clone(),
            claim: claim.clone(),
            marked: marked.clone(),
        });
        let runner: Arc<dyn CmdletRunner> =
            Arc::new(MarkingRunner::new(self.config.runner.clone(), marker));
        let broker = Broker::new(
            policy,
            runner,
            self.state.audit.clone(),
            self.config.call_timeout,
        );
        let (lines, mut receiver) = mpsc::unbounded_channel::<(&'static str, String)>();
        let (store, log_claim) = (self.state.store.clone(), claim.clone());
        let logger = tokio::spawn(async move {
            while let Some((level, line)) = receiver.recv().await {
                if let Err(error) = store.append_log(&log_claim, level, &line).await {
                    tracing::warn!(%error, run = %id, "could not store a log line");
                }
            }
        });
        let active = Active {
            interrupt: Interrupt::new(),
            cut: Arc::new(AtomicBool::new(false)),
        };
        self.active
            .lock()
            .expect("active runs lock")
            .push(active.clone());
        let request = RunRequest {
            args,
            observer: Arc::new(StoreObserver { lines }),
            interrupt: active.interrupt.clone(),
        };
        let result = match &code {
            Code::Script {
                principal,
                source,
                what,
            } => match self.scripts.compile(what, source) {
                Ok(compiled) => {
                    self.scripts
                        .run(&compiled, principal.clone(), &broker, request)
                        .await
                }
                Err(e) => Err(e),
            },
            Code::Plugin { bytes, what } => {
                match PluginHost::new(self.config.limits.clone(), None)
                    .and_then(|host| host.load_bytes(what, bytes.clone()).map(|p| (host, p)))
                {
                    Ok((host, plugin)) => host.run(&plugin, &broker, request).await,
                    Err(e) => Err(e),
                }
            }
        };
        self.active
            .lock()
            .expect("active runs lock")
            .retain(|a| !Arc::ptr_eq(&a.cut, &active.cut));
        // The observer is dropped with the request: the logger ends once its lines are stored.
        let _ = logger.await;
        let cut = active.cut.load(Ordering::Acquire);
        let error = match result {
            Ok(report) => match report.outcome {
                RunOutcome::Completed { output } => {
                    return self
                        .finish(
                            &claim,
                            RunStatus::Completed,
                            Some(output_value(output)),
                            None,
                        )
                        .await;
                }
                RunOutcome::Failed { message } => RunError::Failed(message),
                RunOutcome::Stopped { reason } if cut => {
                    if marked.load(Ordering::Acquire) {
                        RunError::CutAfterWrite(format!(
                            "cut by the service's shutdown after it may have written ({reason})"
                        ))
                    } else {
                        // Nothing was written: left running, so recovery at the next start
                        // queues it again.
                        tracing::warn!(run = %id, "run cut by shutdown before any write; it is queued again at the next start");
                        return;
                    }
                }
                RunOutcome::Stopped { reason } => RunError::Stopped(reason),
            },
            Err(RuntimeError::Refused(error)) => RunError::CodeRefused(error.to_string()),
            Err(error @ RuntimeError::Load { .. }) => RunError::CodeUnavailable(error.to_string()),
            Err(other) => RunError::Failed(other.to_string()),
        };
        self.fail(&run, &claim, error).await;
    }

    /// Ends `run` with `error`: the delegate's reason in the store (and, for a run refused
    /// before it started, in its log), the detail to the operator ([`RunError::report`]).
    async fn fail(&self, run: &RunRecord, claim: &Claim, error: RunError) {
        error.report(&self.state, run);
        let told = error.for_delegate();
        if error.status() == RunStatus::Refused {
            let _ = self.state.store.append_log(claim, "error", &told).await;
        }
        self.finish(claim, error.status(), None, Some(told)).await;
    }

    /// The task's pinned code, as its grant names it.
    fn load(&self, policy: &Policy, task_id: &str) -> Result<Code, String> {
        let task = policy
            .tasks()
            .iter()
            .find(|t| t.id == task_id)
            .ok_or_else(|| format!("task {task_id} is no longer in the policy"))?;
        let base = policy
            .origin()
            .parent()
            .unwrap_or(std::path::Path::new("."));
        match &task.runs {
            TaskRuns::Script { path } => {
                let path = base.join(path);
                let source = std::fs::read_to_string(&path).map_err(|e| {
                    format!("{}: the task's script cannot be read: {e}", path.display())
                })?;
                Ok(Code::Script {
                    // The hash of what is run now: the broker refuses it unless the grant pins it.
                    principal: Principal::script_file(&path, source.as_bytes()),
                    what: path.display().to_string(),
                    source,
                })
            }
            TaskRuns::Plugin { component, .. } => {
                let path = base.join(component);
                let bytes = std::fs::read(&path).map_err(|e| {
                    format!("{}: the task's plugin cannot be read: {e}", path.display())
                })?;
                Ok(Code::Plugin {
                    bytes,
                    what: path.display().to_string(),
                })
            }
        }
    }
}

/// The guest arguments of `run` if the policy as it is now lets it start.
fn admit(policy: &Policy, run: &RunRecord) -> Result<Vec<String>, RunError> {
    let requester = runs::requester(run);
    let Some(task) = policy.task_for(&requester, &run.task) else {
        return Err(RunError::NotAdmitted(format!(
            "the policy no longer lets {} run task {} (the task was removed or its delegates changed)",
            requester.upn, run.task
        )));
    };
    if task.needs_approval() && run.decided_by.is_none() {
        return Err(RunError::NotAdmitted(format!(
            "task {} now needs an approval, and this run has none; ask again",
            run.task
        )));
    }
    task.check_values(&runs::values(run))
        .map_err(|errors| RunError::ValuesRefused {
            parameters: errors.iter().map(|e| e.parameter.clone()).collect(),
            detail: errors
                .iter()
                .map(|e| format!("{}: {}", e.parameter, e.message))
                .collect::<Vec<_>>()
                .join("; "),
        })
}

enum Code {
    Script {
        principal: Principal,
        source: String,
        what: String,
    },
    Plugin {
        bytes: Vec<u8>,
        what: String,
    },
}

/// The guest's output as JSON: a script's value as it is, a plugin's text parsed when it is
/// JSON, else the text.
fn output_value(output: GuestOutput) -> Value {
    match output {
        GuestOutput::Json(value) => value,
        GuestOutput::Text(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

#[derive(Debug)]
struct StoreMarker {
    store: Store,
    claim: Claim,
    marked: Arc<AtomicBool>,
}

#[async_trait]
impl WriteMarker for StoreMarker {
    async fn mark(&self) -> Result<(), String> {
        self.store
            .mark_may_have_written(&self.claim)
            .await
            .map_err(|e| e.to_string())?;
        self.marked.store(true, Ordering::Release);
        Ok(())
    }
}

#[derive(Debug)]
struct StoreObserver {
    lines: mpsc::UnboundedSender<(&'static str, String)>,
}

impl RunObserver for StoreObserver {
    fn log(&self, _source: LogSource, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        };
        let _ = self.lines.send((level, message.to_owned()));
    }

    fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        let text = match total {
            Some(total) => format!("{done}/{total} {label}"),
            None => format!("{done} {label}"),
        };
        let _ = self.lines.send(("progress", text));
    }
}
