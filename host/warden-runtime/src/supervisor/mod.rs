//! One run's supervisor, held by both runtimes (as wasmtime-wasi's `WasiCtxView` is held by
//! any `WasiView`): a wasm run's store data and a Rhai run's session each hold one
//! [`Supervisor`], and every rule a run ends by lives here once.
//!
//! It begins the run with the broker, keeps the run's clocks (the wall-clock deadline, one
//! instant: the broker's [`Run::deadline`]; guest CPU time = time since the guest started
//! running, after its code was prepared, minus time spent in host calls and yielded to other
//! tasks), records the first reason the run was stopped for (later ones never replace it),
//! holds the one log sink ([`log`] states its rule), answers the interrupt handle, and finishes
//! the run: flushes partial log lines, writes the closing audit line ([`Broker::end`] with a
//! typed [`RunEnd`]) and makes the [`RunReport`].
//!
//! What it refuses: a second stop reason replacing the first (so the report names the limit
//! that was really reached), a host call outliving the run's deadline or its interrupt, a
//! write cut in flight (a call whose write may have been sent is let finish under the broker's
//! own timeout, bounded by the same deadline, so the trail and the report say how it ended,
//! `outcome-unknown` if no answer came), a run closed twice or never, and a guest's error
//! message of more than `max_log_line_bytes` in the report or the trail.

pub(crate) mod log;

use crate::{
    Interrupt, RunOutcome, RunReport, RunRequest, RuntimeError, RuntimeLimits, StopReason, cut,
};
use log::LogSink;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};
use warden_broker::{Broker, Run, RunEnd};
use warden_policy::{Declaration, Principal};

/// How often a stopped guest is looked at while a write of its host call settles.
const WRITE_SETTLED_POLL: Duration = Duration::from_millis(10);

/// How a host call raced the run's deadline and interrupt.
#[derive(Debug)]
pub(crate) enum HostCall<T> {
    /// It finished.
    Done(T),
    /// The run's stop came first (the deadline, or the interrupt): the call was dropped, or,
    /// if it was waiting on a write, let finish with its outcome on record.
    Stopped(StopReason),
}

/// One run's clocks, stop reason, log sink and end. Shared (`Arc`) by everything the run's
/// host side does; every method takes `&self`.
#[derive(Debug)]
pub(crate) struct Supervisor {
    broker: Broker,
    run: Arc<Run>,
    limits: RuntimeLimits,
    /// When the run began (before the broker's `begin`): elapsed time counts from here.
    started: Instant,
    /// When the guest started running (after its code was prepared): CPU counts from here.
    guest_started: OnceLock<Instant>,
    wall_clock: Duration,
    cpu: Duration,
    /// Nanoseconds not the guest's: waiting in host calls, and yielded to other tasks.
    away_nanos: AtomicU64,
    /// Of `away_nanos`, the guest's own work done inside host calls.
    guest_within_host_nanos: AtomicU64,
    /// CPU nanoseconds noted when the guest stopped running (0: not yet).
    cpu_at_end: AtomicU64,
    interrupt: Interrupt,
    stop: Mutex<Option<StopReason>>,
    /// Set with `stop`: read on every Rhai operation, where a lock would cost too much.
    stopped: AtomicBool,
    log: LogSink,
    /// Set by the first close of the run; a second is a no-op.
    closed: AtomicBool,
}

impl Supervisor {
    /// Begins a run with the broker (which finds its grant, or refuses it). The CPU clock
    /// starts later, with the guest ([`Supervisor::start_guest`]).
    pub(crate) fn begin(
        broker: &Broker,
        principal: Principal,
        declaration: Option<&Declaration>,
        limits: &RuntimeLimits,
        request: &RunRequest,
    ) -> Result<Arc<Self>, RuntimeError> {
        let started = Instant::now();
        let run = broker
            .begin_delegated(principal, declaration, request.delegation.clone())
            .map_err(RuntimeError::Refused)?;
        let budgets = run.grant().budgets();
        let (wall_clock, cpu) = (budgets.wall_clock, budgets.cpu);
        Ok(Arc::new(Self {
            broker: broker.clone(),
            run: Arc::new(run),
            limits: limits.clone(),
            started,
            guest_started: OnceLock::new(),
            wall_clock,
            cpu,
            away_nanos: AtomicU64::new(0),
            guest_within_host_nanos: AtomicU64::new(0),
            cpu_at_end: AtomicU64::new(0),
            interrupt: request.interrupt.clone(),
            stop: Mutex::new(None),
            stopped: AtomicBool::new(false),
            log: LogSink::new(request.observer.clone(), limits),
            closed: AtomicBool::new(false),
        }))
    }

    /// The broker the run was begun with.
    pub(crate) fn broker(&self) -> &Broker {
        &self.broker
    }

    /// The broker's run.
    pub(crate) fn run(&self) -> &Arc<Run> {
        &self.run
    }

    /// The run's one log sink.
    pub(crate) fn log(&self) -> &LogSink {
        &self.log
    }

    /// Time left before the run's wall-clock deadline.
    pub(crate) fn remaining(&self) -> Duration {
        self.run.remaining()
    }

    /// Starts the guest's CPU and wall clocks: called just before the guest's code first runs
    /// (wasm's instantiation, Rhai's evaluation), so compiling it and beginning the run are not
    /// its time (a 12 MB interpreter component takes tens of seconds to compile). Only the
    /// first call counts.
    pub(crate) fn start_guest(&self) {
        let _ = self.guest_started.set(Instant::now());
        self.run.start_clock();
    }

    /// The stop for the wall-clock deadline.
    pub(crate) fn wall_clock_stop(&self) -> StopReason {
        StopReason::WallClock {
            limit: self.wall_clock,
        }
    }

    /// Records `reason` unless the run was already stopped, and returns the reason that
    /// stands (the first one).
    pub(crate) fn stop(&self, reason: StopReason) -> StopReason {
        let first = self
            .stop
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason)
            .clone();
        self.stopped.store(true, Ordering::Relaxed);
        first
    }

    /// The cheap part of [`Supervisor::check`], for every operation: whether the run is
    /// stopped already or its interrupt was triggered (then recorded).
    pub(crate) fn stopped_or_interrupted(&self) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return true;
        }
        if self.interrupt.is_interrupted() {
            self.stop(StopReason::Interrupted);
            return true;
        }
        false
    }

    /// The reason the run was stopped for, if it was.
    pub(crate) fn stop_reason(&self) -> Option<StopReason> {
        self.stop.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The guest's time so far: since it started running, minus time away in host calls or
    /// yielded (nothing before it started).
    pub(crate) fn cpu_used(&self) -> Duration {
        let Some(guest_started) = self.guest_started.get() else {
            return Duration::ZERO;
        };
        let away = self.away_nanos.load(Ordering::Relaxed);
        let within = self.guest_within_host_nanos.load(Ordering::Relaxed);
        guest_started
            .elapsed()
            .saturating_sub(Duration::from_nanos(away.saturating_sub(within)))
    }

    /// Books `time` as not the guest's (a host call, a yield).
    pub(crate) fn book_away(&self, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.away_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Books `time` spent inside a host call as the guest's own work after all (a script's
    /// parameters written as JSON when the policy reads them: a wasm guest writes its own).
    pub(crate) fn book_guest_within_host(&self, time: Duration) {
        let nanos = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        self.guest_within_host_nanos
            .fetch_add(nanos, Ordering::Relaxed);
    }

    /// The check both runtimes make at their safe points (wasm's epoch tick, Rhai's progress
    /// callback): the interrupt, the deadline, the CPU budget. `Some` is the reason the run
    /// stands stopped for (the first one recorded).
    pub(crate) fn check(&self) -> Option<StopReason> {
        if self.stopped_or_interrupted() {
            return self.stop_reason();
        }
        let reason = if Instant::now() >= self.run.deadline() {
            self.wall_clock_stop()
        } else if self.cpu_used() > self.cpu {
            StopReason::Cpu { limit: self.cpu }
        } else {
            return None;
        };
        Some(self.stop(reason))
    }

    /// Runs a host call with its time booked as not the guest's, cut short by the run's
    /// deadline or its interrupt (whichever comes first is recorded as the run's stop). A run
    /// with no time left stops before calling. A call waiting on a write that may have been
    /// sent ([`Run::write_in_flight`]) is never cut: it is let finish under the broker's own
    /// timeout (bounded by the same deadline), which records how it ended, and the run stops
    /// after it.
    pub(crate) async fn host_call<F: Future>(&self, call: F) -> HostCall<F::Output> {
        if self.stopped_or_interrupted()
            && let Some(reason) = self.stop_reason()
        {
            return HostCall::Stopped(reason);
        }
        // One clock read for both: a refused call is a few microseconds, and each read counts.
        let entered = Instant::now();
        if self.run.deadline() <= entered {
            return HostCall::Stopped(self.stop(self.wall_clock_stop()));
        }
        let mut call = std::pin::pin!(call);
        let ended = match self.until_stopped(call.as_mut()).await {
            Ok(value) => HostCall::Done(value),
            Err(reason) => {
                if self.run.write_in_flight() {
                    // Its outcome (an answer, or outcome-unknown) is on record; the run stops.
                    let _ = call.await;
                }
                HostCall::Stopped(reason)
            }
        };
        self.book_away(entered.elapsed());
        ended
    }

    /// Runs the whole guest call (`call`), cut short by the run's deadline or its interrupt;
    /// `Err` is the stop that came first. A guest waiting in a host call on a write in flight
    /// is polled until that write is settled (the host call then stops it), never dropped
    /// with the write.
    pub(crate) async fn guest_call<F: Future>(&self, call: F) -> Result<F::Output, StopReason> {
        let mut call = std::pin::pin!(call);
        let reason = match self.until_stopped(call.as_mut()).await {
            Ok(value) => return Ok(value),
            Err(reason) => reason,
        };
        while self.run.write_in_flight() {
            tokio::select! {
                biased;
                _ = call.as_mut() => break,
                () = tokio::time::sleep(WRITE_SETTLED_POLL) => {}
            }
        }
        Err(reason)
    }

    /// Polls `call` until it ends, or the run's deadline passes or its interrupt is triggered
    /// (recorded as the run's stop and returned; `call` is left as it was, not dropped).
    async fn until_stopped<F: Future>(
        &self,
        mut call: Pin<&mut F>,
    ) -> Result<F::Output, StopReason> {
        // A call that never waits (a refusal) ends at its first poll: no timer is made for it.
        let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
        if let Poll::Ready(value) = first {
            return Ok(value);
        }
        tokio::select! {
            // The call first: a call that never waits never registers with the interrupt.
            biased;
            value = call => Ok(value),
            () = tokio::time::sleep_until(self.run.deadline().into()) => {
                Err(self.stop(self.wall_clock_stop()))
            }
            () = self.interrupt.interrupted() => Err(self.stop(StopReason::Interrupted)),
        }
    }

    /// A future that yields once to the executor and books the time it was away (another
    /// task's turn is not this guest's CPU).
    pub(crate) fn yield_now(self: &Arc<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let supervisor = self.clone();
        Box::pin(async move {
            let away = Instant::now();
            tokio::task::yield_now().await;
            supervisor.book_away(away.elapsed());
        })
    }

    /// Notes the guest's CPU time where it stopped running (before the host's own end work).
    pub(crate) fn end_cpu(&self) {
        let used = u64::try_from(self.cpu_used().as_nanos()).unwrap_or(u64::MAX);
        // Only the first note counts; 0 stays "not noted" (a run cannot use 0 ns).
        let _ =
            self.cpu_at_end
                .compare_exchange(0, used.max(1), Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The CPU time noted at the guest's end (or now, if none was noted).
    fn cpu_at_end(&self) -> Duration {
        match self.cpu_at_end.load(Ordering::Relaxed) {
            0 => self.cpu_used(),
            nanos => Duration::from_nanos(nanos),
        }
    }

    /// Ends the run: flushes partial log lines, lets the first recorded stop stand over a
    /// later one, cuts a guest's error message to a log line, writes the closing audit line,
    /// and reports. Both runtimes end here, so the trail and the report read the same
    /// whichever ran the guest.
    pub(crate) fn finish(&self, outcome: RunOutcome) -> RunReport {
        self.end_cpu();
        self.log.finish();
        let outcome = match outcome {
            RunOutcome::Stopped { reason } => RunOutcome::Stopped {
                reason: self.stop(reason),
            },
            RunOutcome::Failed { message } => RunOutcome::Failed {
                message: cut_message(message, self.limits.max_log_line_bytes),
            },
            completed => completed,
        };
        let trail_closed = self.close(&outcome.run_end());
        let log = self.log.budget();
        RunReport {
            run_id: self.run.id().to_owned(),
            grant_id: self.run.grant().id().to_owned(),
            outcome,
            usage: self.run.usage(),
            elapsed: self.started.elapsed(),
            log_bytes_dropped: log.bytes_dropped,
            log_lines_dropped: log.lines_dropped,
            cpu_used: Some(self.cpu_at_end()),
            peak_memory_bytes: None,
            trail_closed,
        }
    }

    /// Ends a run that began but whose guest never ran (its code could not be prepared).
    pub(crate) fn abandon(&self, message: &str) {
        let _ = self.close(&RunEnd::Failed {
            message: message.to_owned(),
        });
    }

    /// Writes the run's closing audit line, once: a second close is a no-op. `false` if the
    /// line could not be written (the report says so; the run is over either way).
    fn close(&self, end: &RunEnd) -> bool {
        if self.closed.swap(true, Ordering::AcqRel) {
            return true;
        }
        match self.broker.end(&self.run, end) {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(run = %self.run.id(), error = %error, "could not record the end of a run");
                false
            }
        }
    }
}

impl Drop for Supervisor {
    /// A run whose host side went away without finishing it (a panic, a cancelled caller) is
    /// still closed in the trail, as failed.
    fn drop(&mut self) {
        let _ = self.close(&RunEnd::Failed {
            message: "host error: the run ended without being finished".to_owned(),
        });
    }
}

/// A guest's error message cut to `max` bytes, saying how much was cut: it is shown to the
/// operator and written to the trail, so it is bounded like a log line, not like output.
fn cut_message(message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let kept = cut(&message, max);
    format!("{kept}… [{} more bytes cut]", message.len() - kept.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GuestOutput, TracingObserver};
    use warden_audit::{AuditKey, AuditTrail};
    use warden_exchange::{CmdletRunner, Invocation, PageStream};
    use warden_policy::Policy;

    /// The supervisor makes no cmdlet call of its own.
    #[derive(Debug)]
    struct NoCalls;

    impl CmdletRunner for NoCalls {
        fn start(&self, invocation: Invocation) -> Box<dyn PageStream> {
            unreachable!("the supervisor called {}", invocation.cmdlet)
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        audit_path: std::path::PathBuf,
        supervisor: Arc<Supervisor>,
    }

    impl Fixture {
        fn last_audit_line(&self) -> serde_json::Value {
            let text = std::fs::read_to_string(&self.audit_path).unwrap();
            serde_json::from_str(text.lines().last().unwrap()).unwrap()
        }
    }

    fn begin(budgets: &str, limits: RuntimeLimits, request: &RunRequest) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let principal = Principal::inline_script("1");
        let policy = format!(
            "version = 1\n[roles.none]\n[[roles.none.cmdlet]]\nname = \"Get-Mailbox\"\n\n[[grant]]\nid = \"g\"\nscript_inline_sha256 = \"{}\"\nroles = [\"none\"]\n[grant.budgets]\n{budgets}\n",
            principal.sha256()
        );
        let policy = Policy::parse(&policy, &dir.path().join("policy.toml")).unwrap();
        let audit_path = dir.path().join("audit.jsonl");
        let audit = AuditTrail::open(&audit_path, AuditKey::from_bytes([5; 32])).unwrap();
        let broker = Broker::new(
            Arc::new(policy),
            Arc::new(NoCalls),
            Arc::new(audit),
            Duration::from_secs(30),
        );
        let supervisor = Supervisor::begin(&broker, principal, None, &limits, request).unwrap();
        Fixture {
            _dir: dir,
            audit_path,
            supervisor,
        }
    }

    fn request() -> RunRequest {
        RunRequest {
            args: Vec::new(),
            observer: Arc::new(TracingObserver),
            interrupt: Interrupt::new(),
            delegation: None,
        }
    }

    #[tokio::test]
    async fn the_first_stop_reason_stands_in_the_report_and_the_trail() {
        let f = begin("", RuntimeLimits::default(), &request());
        let cpu = StopReason::Cpu {
            limit: Duration::from_secs(1),
        };
        assert_eq!(f.supervisor.stop(cpu.clone()), cpu);
        assert_eq!(f.supervisor.stop(StopReason::Interrupted), cpu);
        // A runtime that saw only the later limit still reports the first.
        let report = f.supervisor.finish(RunOutcome::Stopped {
            reason: f.supervisor.wall_clock_stop(),
        });
        assert_eq!(report.outcome, RunOutcome::Stopped { reason: cpu });
        let end = f.last_audit_line();
        assert_eq!(end["rule"], "run-end:stopped");
        assert_eq!(end["reason"], "stopped: CPU limit of 1000 ms reached");
    }

    #[tokio::test]
    async fn check_names_the_interrupt_and_the_stop_stays() {
        let request = request();
        let f = begin("", RuntimeLimits::default(), &request);
        assert_eq!(f.supervisor.check(), None);
        request.interrupt.interrupt();
        assert_eq!(f.supervisor.check(), Some(StopReason::Interrupted));
        assert!(f.supervisor.stopped_or_interrupted());
        assert_eq!(f.supervisor.stop_reason(), Some(StopReason::Interrupted));
    }

    #[tokio::test]
    async fn check_stops_at_the_cpu_budget_and_time_in_host_calls_is_not_cpu() {
        let f = begin("cpu_secs = 1", RuntimeLimits::default(), &request());
        f.supervisor.start_guest();
        let call = f
            .supervisor
            .host_call(tokio::time::sleep(Duration::from_millis(1100)))
            .await;
        assert!(matches!(call, HostCall::Done(())));
        assert!(f.supervisor.cpu_used() < Duration::from_millis(500));
        assert_eq!(f.supervisor.check(), None);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            f.supervisor.check(),
            Some(StopReason::Cpu {
                limit: Duration::from_secs(1)
            })
        );
    }

    #[tokio::test]
    async fn the_cpu_clock_starts_with_the_guest_not_with_the_run() {
        let f = begin("cpu_secs = 1", RuntimeLimits::default(), &request());
        // What a cold cache costs before the guest runs: compiling it is not its CPU time.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(f.supervisor.cpu_used(), Duration::ZERO);
        assert_eq!(f.supervisor.check(), None);
        f.supervisor.start_guest();
        assert!(f.supervisor.cpu_used() < Duration::from_secs(1));
        assert_eq!(f.supervisor.check(), None);
    }

    #[tokio::test]
    async fn the_wall_clock_starts_with_the_guest_not_with_the_run() {
        let f = begin("wall_clock_secs = 1", RuntimeLimits::default(), &request());
        // Compiling a large interpreter component before the guest runs is not its time.
        std::thread::sleep(Duration::from_millis(1100));
        f.supervisor.start_guest();
        assert_eq!(f.supervisor.check(), None);
        let call = f
            .supervisor
            .guest_call(tokio::time::sleep(Duration::from_millis(300)))
            .await;
        assert!(call.is_ok(), "{call:?}");
        // The clock did start: a guest that outlives its budget from its start is stopped.
        let call = f
            .supervisor
            .guest_call(tokio::time::sleep(Duration::from_secs(30)))
            .await;
        assert!(
            matches!(call, Err(StopReason::WallClock { .. })),
            "{call:?}"
        );
    }

    #[tokio::test]
    async fn a_run_is_closed_once_and_a_dropped_unfinished_run_is_closed_failed() {
        let f = begin("", RuntimeLimits::default(), &request());
        let report = f.supervisor.finish(RunOutcome::Failed {
            message: "first".into(),
        });
        assert!(report.trail_closed);
        f.supervisor.abandon("second");
        drop(f.supervisor);
        let text = std::fs::read_to_string(&f.audit_path).unwrap();
        assert_eq!(text.matches("run-end:").count(), 1, "{text}");

        let f = begin("", RuntimeLimits::default(), &request());
        drop(f.supervisor);
        let text = std::fs::read_to_string(&f.audit_path).unwrap();
        let end: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(end["rule"], "run-end:failed");
        assert!(end["reason"].as_str().unwrap().starts_with("host error"));
    }

    #[tokio::test]
    async fn a_host_call_is_cut_short_by_the_deadline_or_the_interrupt() {
        let f = begin("wall_clock_secs = 1", RuntimeLimits::default(), &request());
        let started = Instant::now();
        let call = f
            .supervisor
            .host_call(tokio::time::sleep(Duration::from_secs(30)))
            .await;
        assert!(
            matches!(call, HostCall::Stopped(StopReason::WallClock { .. })),
            "{call:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        let request = request();
        let f = begin("", RuntimeLimits::default(), &request);
        let trigger = request.interrupt.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            trigger.interrupt();
        });
        let call = f
            .supervisor
            .host_call(tokio::time::sleep(Duration::from_secs(30)))
            .await;
        assert!(
            matches!(call, HostCall::Stopped(StopReason::Interrupted)),
            "{call:?}"
        );
        // Stopped: the next call does not start.
        let next = f.supervisor.host_call(async {}).await;
        assert!(matches!(next, HostCall::Stopped(StopReason::Interrupted)));
    }

    #[tokio::test]
    async fn a_long_guest_error_is_cut_like_a_log_line_and_ends_the_run_failed() {
        let limits = RuntimeLimits {
            max_log_line_bytes: 10,
            ..RuntimeLimits::default()
        };
        let f = begin("", limits, &request());
        let report = f.supervisor.finish(RunOutcome::Failed {
            message: "e".repeat(25),
        });
        let cut = format!("{}… [15 more bytes cut]", "e".repeat(10));
        assert_eq!(
            report.outcome,
            RunOutcome::Failed {
                message: cut.clone()
            }
        );
        assert!(report.cpu_used.is_some());
        let end = f.last_audit_line();
        assert_eq!(end["rule"], "run-end:failed");
        assert_eq!(end["reason"], cut.as_str());
    }

    #[tokio::test]
    async fn a_completed_run_records_its_output_size_whatever_the_runtime() {
        for (output, bytes) in [
            (GuestOutput::Text("done".into()), 4),
            // A script's string counts by its text, as a plugin's does (not quoted JSON).
            (GuestOutput::Json(serde_json::json!("done")), 4),
            (GuestOutput::Json(serde_json::json!({"a": 1})), 7),
        ] {
            let f = begin("", RuntimeLimits::default(), &request());
            f.supervisor.finish(RunOutcome::Completed { output });
            let end = f.last_audit_line();
            assert_eq!(end["rule"], "run-end:completed");
            assert_eq!(end["reason"], format!("returned {bytes} bytes"));
        }
    }
}
