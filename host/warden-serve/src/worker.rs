//! The workers: each claims the oldest queued run from the store, checks it against the
//! policy as it is NOW (task gone, requester no longer a delegate, approver no longer an
//! approver, values no longer allowed, approval now needed: refused, with an audit line), and
//! runs the task's pinned script or plugin through the runtimes and a broker over the one
//! Exchange session, on behalf of the person who asked ([`crate::runs::delegation`], in every
//! audit line of the run). The run is marked `may_have_written` before any write is sent
//! ([`crate::marking`]); log lines and the guest's output go to the store.
//!
//! Claims: while the pool runs, a heartbeat task refreshes the claims of this instance's workers
//! every [`ClaimTiming::heartbeat_every`], and a sweep takes back the runs of any instance
//! silent for longer than [`ClaimTiming::stale_after`] (an instance that crashed and never came
//! back): queued again when they never wrote, `outcome-unknown` when they may have (never
//! re-run). The heartbeat and the sweep read the database's clock, not this host's, so the
//! instances' clocks need not agree.

use crate::marking::MarkingRunner;
use crate::run_error::RunError;
use crate::runs;
use crate::state::{AppState, GroupNames};
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
use warden_store::{Claim, RunRecord, RunStatus, Stale, Store};

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
    /// How often this instance says its claims are alive, and when another's are stale.
    pub claims: ClaimTiming,
}

/// How often an instance's heartbeat refreshes its workers' claims, and how long a claim may
/// go without one before any instance's sweep takes its run back. The sweep runs as often as
/// the heartbeat. Built checked: a claim is never called stale while its heartbeat still beats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimTiming {
    heartbeat_every: Duration,
    stale_after: Duration,
}

/// Why a [`ClaimTiming`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "claims would be called stale after {stale_after:?} while their heartbeat beats every \
     {heartbeat_every:?}: give a stale age of at least three heartbeats (and a heartbeat of at \
     least 10 ms)"
)]
pub struct BadClaimTiming {
    /// The heartbeat asked for.
    pub heartbeat_every: Duration,
    /// The stale age asked for.
    pub stale_after: Duration,
}

impl ClaimTiming {
    /// A heartbeat every 10 s; claims silent for 60 s are stale.
    pub const DEFAULT: ClaimTiming = ClaimTiming {
        heartbeat_every: Duration::from_secs(10),
        stale_after: Duration::from_secs(60),
    };

    /// A heartbeat every `heartbeat_every`; claims silent for `stale_after` are stale. At least
    /// three heartbeats must fit in `stale_after`, so one late beat never loses a live run.
    pub fn new(heartbeat_every: Duration, stale_after: Duration) -> Result<Self, BadClaimTiming> {
        if heartbeat_every < Duration::from_millis(10)
            || stale_after < heartbeat_every.saturating_mul(3)
        {
            return Err(BadClaimTiming {
                heartbeat_every,
                stale_after,
            });
        }
        Ok(Self {
            heartbeat_every,
            stale_after,
        })
    }

    /// How often the heartbeat (and the sweep) run.
    pub fn heartbeat_every(&self) -> Duration {
        self.heartbeat_every
    }

    /// How long a claim may go without a heartbeat before it is taken back.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }
}

impl Default for ClaimTiming {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A running run's handle for shutdown and the heartbeat: its claim, its interrupt, whether
/// shutdown cut it, and whether it was stopped because its claim was lost.
#[derive(Debug, Clone)]
struct Active {
    claim: Claim,
    interrupt: Interrupt,
    cut: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
}

impl Active {
    /// Stops a run whose claim is no longer this worker's: another instance's sweep took it
    /// back (or may soon). Its store steps are fenced anyway; this ends its reads too.
    fn lose(&self) {
        self.lost.store(true, Ordering::Release);
        self.interrupt.interrupt();
    }
}

/// The runs this instance's workers are running.
type ActiveRuns = Arc<std::sync::Mutex<Vec<Active>>>;

/// The pool.
#[derive(Debug)]
pub struct Workers {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Refreshes this instance's claims until every worker has ended.
    heartbeat: tokio::task::JoinHandle<()>,
    /// Takes back the runs of silent instances; stops when shutdown begins.
    sweep: tokio::task::JoinHandle<()>,
    active: ActiveRuns,
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
}

impl Workers {
    /// Starts `config.workers` workers, the heartbeat of their claims and the sweep of stale
    /// claims.
    pub fn start(state: AppState, config: WorkerConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let active: ActiveRuns = Arc::default();
        let scripts = Arc::new(ScriptHost::new(config.limits.clone()));
        let config = Arc::new(config);
        let names: Vec<String> = (0..config.workers)
            .map(|n| format!("{}/{n}", config.instance))
            .collect();
        let heartbeat = tokio::spawn(heartbeat(
            state.store.clone(),
            names.clone(),
            active.clone(),
            config.claims,
        ));
        let sweep = tokio::spawn(sweep(state.clone(), config.claims));
        let tasks = names
            .into_iter()
            .map(|name| {
                let worker = Worker {
                    name,
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
            heartbeat,
            sweep,
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
        self.sweep.abort();
        // One future for both waits: polling a finished JoinHandle again (a second join_all
        // over the same handles) panics, and the cut runs would then never be marked.
        let mut all = std::pin::pin!(futures::future::join_all(self.tasks));
        if tokio::time::timeout(grace, &mut all).await.is_err() {
            for active in self.active.lock().expect("active runs lock").iter() {
                active.cut.store(true, Ordering::Release);
                active.interrupt.interrupt();
            }
            all.await;
        }
        // The claims stay alive until their runs ended or were marked.
        self.heartbeat.abort();
        // An aborted task drops what it holds (the state, and with it the audit trail's lock)
        // only when the runtime drops its future: wait for that, so a new instance can start.
        let _ = self.sweep.await;
        let _ = self.heartbeat.await;
    }
}

/// Says every heartbeat that this instance's workers are alive, and stops the runs whose
/// claims they no longer hold: a run missing from its worker's held claims was taken back by
/// another instance's sweep. When no heartbeat has gone through for `stale_after -
/// heartbeat_every`, the sweeps elsewhere may take every claim at the next beat: all runs stop.
async fn heartbeat(store: Store, workers: Vec<String>, active: ActiveRuns, timing: ClaimTiming) {
    let mut ticks = tokio::time::interval(timing.heartbeat_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let give_up_after = timing.stale_after() - timing.heartbeat_every();
    let mut last_beat = tokio::time::Instant::now();
    loop {
        ticks.tick().await;
        // Taken before the beat: a run claimed after it is not judged by this beat's answer.
        let running: Vec<Active> = active.lock().expect("active runs lock").clone();
        let mut held = std::collections::HashSet::new();
        let mut failed = false;
        for worker in &workers {
            match store.heartbeat(worker).await {
                Ok(claims) => held.extend(claims),
                Err(error) => {
                    failed = true;
                    tracing::error!(%error, %worker, "could not refresh a worker's claims");
                }
            }
        }
        if failed {
            if last_beat.elapsed() >= give_up_after {
                for run in &running {
                    tracing::error!(run = %run.claim.id, "no heartbeat for {give_up_after:?}: stopping the run before another instance takes it");
                    run.lose();
                }
            }
            continue;
        }
        last_beat = tokio::time::Instant::now();
        for run in running.iter().filter(|run| !held.contains(&run.claim)) {
            tracing::warn!(run = %run.claim.id, "the run's claim was taken back: stopping it");
            run.lose();
        }
    }
}

/// Takes back, every heartbeat, the runs whose claims went silent for longer than the stale
/// age: their instance died. Runs that never wrote are queued again (and a worker woken);
/// runs that may have written become `outcome-unknown`.
async fn sweep(state: AppState, timing: ClaimTiming) {
    let mut ticks = tokio::time::interval(timing.heartbeat_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match state
            .store
            .recover(Stale::SilentFor(timing.stale_after()))
            .await
        {
            Ok(recovery) => {
                if !recovery.requeued.is_empty() || !recovery.outcome_unknown.is_empty() {
                    tracing::warn!(
                        requeued = ?recovery.requeued,
                        outcome_unknown = ?recovery.outcome_unknown,
                        "took back the runs of an instance silent for {:?}",
                        timing.stale_after()
                    );
                }
                state.audit_recovery(&recovery).await;
                if !recovery.requeued.is_empty() {
                    state.wake.notify_waiters();
                }
            }
            Err(error) => tracing::error!(%error, "sweeping stale claims failed"),
        }
    }
}

struct Worker {
    name: String,
    state: AppState,
    config: Arc<WorkerConfig>,
    scripts: Arc<ScriptHost>,
    stop: Arc<AtomicBool>,
    active: ActiveRuns,
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
            Ok(policy) => admit(&policy, &run, &self.state.group_names).map(|args| (policy, args)),
            Err(error) => Err(RunError::PolicyUnavailable(error)),
        };
        let delegation = runs::delegation(&run);
        let (policy, args) = match checked {
            Ok(ok) => ok,
            Err(error) => {
                if error.status() == RunStatus::Refused {
                    self.state
                        .audit_refused_at_start(&delegation, &error.detail());
                }
                return self.fail(&run, &claim, error).await;
            }
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
        let marker = Arc::new(crate::marking::StoreMarker {
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
            claim: claim.clone(),
            interrupt: Interrupt::new(),
            cut: Arc::new(AtomicBool::new(false)),
            lost: Arc::new(AtomicBool::new(false)),
        };
        self.active
            .lock()
            .expect("active runs lock")
            .push(active.clone());
        let request = RunRequest {
            args,
            observer: Arc::new(StoreObserver { lines }),
            interrupt: active.interrupt.clone(),
            delegation: Some(delegation),
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
            Ok(report) if !report.trail_closed => {
                RunError::Unrecorded(marked.load(Ordering::Acquire))
            }
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
                RunOutcome::Stopped { .. } if active.lost.load(Ordering::Acquire) => {
                    // Left to whoever holds the run now (or to the sweep, when this instance
                    // lost its heartbeat): this worker's store steps would be refused.
                    tracing::warn!(run = %id, "stopped a run whose claim was taken back");
                    return;
                }
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

/// The guest arguments of `run` if the policy as it is now lets it start: the requester is
/// still a delegate of the task, and when the task needs an approval, the approver is still an
/// approver of it (and not the requester). Both are judged with the standing (groups, roles)
/// they had when they acted (the service cannot read Entra again), their groups named by
/// `group_names` as they are now. The refusal says which.
fn admit(
    policy: &Policy,
    run: &RunRecord,
    group_names: &GroupNames,
) -> Result<Vec<String>, RunError> {
    let requester = runs::requester(run, group_names);
    let Some(task) = policy.task_for(&requester, &run.task) else {
        return Err(RunError::NotAdmitted(format!(
            "the policy no longer lets {} run task {} (the task was removed or its delegates changed)",
            requester.upn, run.task
        )));
    };
    if task.needs_approval() {
        let Some(approver) = runs::approver(run, group_names) else {
            return Err(RunError::NotAdmitted(format!(
                "task {} now needs an approval, and this run has none; ask again",
                run.task
            )));
        };
        if !policy.may_approve_run(&approver, task, &requester.oid) {
            return Err(RunError::NotAdmitted(format!(
                "{} is no longer an approver of task {} (its approvers changed since the \
                 approval); ask again",
                approver.upn, run.task
            )));
        }
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
pub fn output_value(output: GuestOutput) -> Value {
    match output {
        GuestOutput::Json(value) => value,
        GuestOutput::Text(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_age_must_hold_three_heartbeats() {
        let secs = Duration::from_secs;
        assert!(ClaimTiming::new(secs(10), secs(30)).is_ok());
        let error = ClaimTiming::new(secs(10), secs(29)).unwrap_err();
        assert!(
            error.to_string().contains("at least three heartbeats"),
            "{error}"
        );
        assert!(ClaimTiming::new(Duration::ZERO, secs(1)).is_err());
        let default = ClaimTiming::default();
        assert!(ClaimTiming::new(default.heartbeat_every(), default.stale_after()).is_ok());
    }
}
