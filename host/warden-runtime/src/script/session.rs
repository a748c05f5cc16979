//! One run's host-side state, shared by every host function the script calls: the broker and
//! the run, the wall-clock deadline, the CPU clock (time outside host calls), the memory
//! meter, the stop reason, and the log caps.
//!
//! It refuses to let a host call outlive the run: every broker future is bounded by the run's
//! deadline, and a call that hits it stops the script (uncatchably) instead of returning.
//!
//! Its limits do not depend on how many operations pass: the memory meter is read on every
//! operation (one atomic load), and the clocks are read whenever the process-wide clock thread
//! has ticked since the last reading (every [`RuntimeLimits::tick`]), so a script of few but
//! slow operations is stopped as promptly as one of many fast ones.

use super::memory::Meter;
use crate::{
    Interrupt, LogBudget, LogLevel, LogSource, RunObserver, RunRequest, RuntimeLimits, StopReason,
    cut,
};
use rhai::{Dynamic, EvalAltResult, Position};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use warden_broker::{Broker, GuestError, Run};

/// The state of one script run.
#[derive(Debug)]
pub(super) struct Session {
    pub(super) broker: Broker,
    pub(super) run: Arc<Run>,
    /// The runtime the broker's futures run on; the script thread blocks on them.
    handle: Handle,
    observer: Arc<dyn RunObserver>,
    limits: RuntimeLimits,
    started: Instant,
    deadline: Instant,
    wall_clock: Duration,
    cpu: Duration,
    /// Nanoseconds spent waiting in host calls: not the script's CPU time.
    host_nanos: AtomicU64,
    /// The clock thread's tick at the last reading of the clocks.
    seen_tick: AtomicU64,
    /// What the run holds, and the most it may.
    memory: Meter,
    memory_limit: u64,
    /// Noted by the script thread at its end: CPU nanoseconds, and the memory peak.
    cpu_at_end: AtomicU64,
    peak_at_end: AtomicU64,
    cancelled: AtomicBool,
    /// The caller's handle: stops the script at its next operation or host call.
    interrupt: Interrupt,
    stop: Mutex<Option<StopReason>>,
    log: Mutex<LogBudget>,
}

impl Session {
    pub(super) fn new(
        broker: Broker,
        run: Arc<Run>,
        handle: Handle,
        request: &RunRequest,
        limits: RuntimeLimits,
        memory: Meter,
        memory_limit: u64,
    ) -> Self {
        start_clock(limits.tick);
        let started = Instant::now();
        let budgets = run.grant().budgets();
        let (wall_clock, cpu) = (budgets.wall_clock, budgets.cpu);
        let deadline = started + run.remaining();
        let log = Mutex::new(LogBudget::new(&limits));
        Self {
            broker,
            run,
            handle,
            observer: request.observer.clone(),
            limits,
            started,
            deadline,
            wall_clock,
            cpu,
            host_nanos: AtomicU64::new(0),
            seen_tick: AtomicU64::new(TICKS.load(Ordering::Relaxed)),
            memory,
            memory_limit,
            cpu_at_end: AtomicU64::new(0),
            peak_at_end: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
            interrupt: request.interrupt.clone(),
            stop: Mutex::new(None),
            log,
        }
    }

    /// Time left before the run's wall-clock deadline.
    pub(super) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Asks the script to stop at its next operation (the host gave up waiting for it).
    pub(super) fn cancel(&self) {
        self.record_stop(StopReason::WallClock {
            limit: self.wall_clock,
        });
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// The limit that stopped the script, if one did.
    pub(super) fn stop_reason(&self) -> Option<StopReason> {
        self.stop.lock().expect("stop lock").clone()
    }

    /// The run's log allowance and what was dropped at its caps so far.
    pub(super) fn log_budget(&self) -> LogBudget {
        *self.log.lock().expect("log lock")
    }

    fn record_stop(&self, reason: StopReason) {
        // The first limit hit is the one reported.
        self.stop.lock().expect("stop lock").get_or_insert(reason);
    }

    /// Stops the script: an error `try`/`catch` cannot catch.
    fn terminate(&self, reason: StopReason) -> Box<EvalAltResult> {
        self.record_stop(reason);
        EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into()
    }

    /// The script's time so far outside host calls (what the CPU budget measures).
    pub(super) fn cpu_used(&self) -> Duration {
        let host = Duration::from_nanos(self.host_nanos.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(host)
    }

    /// The `on_progress` check: `Some` stops the script. The cancellation flag and the memory
    /// meter are read on every operation; the clocks when the clock thread has ticked, or
    /// every `every` operations.
    pub(super) fn check(&self, operations: u64, every: u64) -> Option<Dynamic> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Some(Dynamic::UNIT);
        }
        if self.interrupt.is_interrupted() {
            self.record_stop(StopReason::Interrupted);
            return Some(Dynamic::UNIT);
        }
        // The peak, not what is held now: an operation that went past the limit and let go
        // again has still used the memory.
        if self.memory.peak() > self.memory_limit {
            self.record_stop(self.memory_stop());
            return Some(Dynamic::UNIT);
        }
        let tick = TICKS.load(Ordering::Relaxed);
        if tick == self.seen_tick.load(Ordering::Relaxed) && !operations.is_multiple_of(every) {
            return None;
        }
        self.seen_tick.store(tick, Ordering::Relaxed);
        if Instant::now() >= self.deadline {
            self.record_stop(StopReason::WallClock {
                limit: self.wall_clock,
            });
            return Some(Dynamic::UNIT);
        }
        if self.cpu_used() > self.cpu {
            self.record_stop(StopReason::Cpu { limit: self.cpu });
            return Some(Dynamic::UNIT);
        }
        None
    }

    /// Notes the CPU time at the script's end (called on the script thread).
    pub(super) fn end_cpu(&self) {
        let used = u64::try_from(self.cpu_used().as_nanos()).unwrap_or(u64::MAX);
        self.cpu_at_end.store(used, Ordering::Relaxed);
    }

    /// Notes the memory peak at the run's end (called on the script thread).
    pub(super) fn end_memory(&self) {
        self.peak_at_end
            .store(self.memory.peak(), Ordering::Relaxed);
    }

    /// The CPU time the script used, as noted at its end (or now, if it never ended).
    pub(super) fn cpu_at_end(&self) -> Duration {
        match self.cpu_at_end.load(Ordering::Relaxed) {
            0 => self.cpu_used(),
            nanos => Duration::from_nanos(nanos),
        }
    }

    /// The most memory the run held, as noted at its end (or now, if it never ended).
    pub(super) fn peak_memory(&self) -> u64 {
        match self.peak_at_end.load(Ordering::Relaxed) {
            0 => self.memory.peak(),
            peak => peak,
        }
    }

    /// The stop for a run that went past its memory limit.
    pub(super) fn memory_stop(&self) -> StopReason {
        StopReason::Memory {
            limit_bytes: self.memory_limit,
        }
    }

    /// Whether the run has held more than its memory limit at any moment.
    pub(super) fn over_memory(&self) -> bool {
        self.memory.peak() > self.memory_limit
    }

    /// Runs a broker future to its end on the runtime, bounded by the run's deadline. A
    /// refusal or failure comes back as the catchable error map; the deadline stops the script.
    pub(super) fn call<T>(
        &self,
        future: impl Future<Output = Result<T, GuestError>>,
    ) -> Result<T, Box<EvalAltResult>> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(self.terminate(StopReason::WallClock {
                limit: self.wall_clock,
            }));
        }
        if self.interrupt.is_interrupted() {
            return Err(self.terminate(StopReason::Interrupted));
        }
        let entered = Instant::now();
        let left = self.deadline.saturating_duration_since(entered);
        if left.is_zero() {
            return Err(self.terminate(StopReason::WallClock {
                limit: self.wall_clock,
            }));
        }
        // The timer is made inside the runtime: this thread is not one of its workers.
        // `None`: interrupted while waiting.
        let result = self.handle.block_on(async {
            tokio::select! {
                timed = tokio::time::timeout(left, future) => Some(timed),
                () = self.interrupt.interrupted() => None,
            }
        });
        let waited = u64::try_from(entered.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.host_nanos.fetch_add(waited, Ordering::Relaxed);
        let Some(result) = result else {
            return Err(self.terminate(StopReason::Interrupted));
        };
        match result {
            Ok(Ok(value)) => Ok(value),
            // The broker bounds its own waits by the same deadline and may answer first with a
            // timeout or a spent wall-clock budget: past the deadline that is the run's end, not
            // an error for the script to catch.
            Ok(Err(_)) if Instant::now() >= self.deadline => {
                Err(self.terminate(StopReason::WallClock {
                    limit: self.wall_clock,
                }))
            }
            Ok(Err(error)) => Err(super::surface::thrown(&error)),
            Err(_elapsed) => Err(self.terminate(StopReason::WallClock {
                limit: self.wall_clock,
            })),
        }
    }

    /// Passes a line to the observer within the run's log caps; what does not fit is counted.
    pub(super) fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        let line = cut(message, self.limits.max_log_line_bytes);
        let admitted = self
            .log
            .lock()
            .expect("log lock")
            .admit(line.len(), message.len());
        if admitted {
            self.observer.log(source, level, line);
        }
    }

    /// Passes progress to the observer (the label cut like a log line).
    pub(super) fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        self.observer
            .progress(done, total, cut(label, self.limits.max_log_line_bytes));
    }
}

/// Ticks of the process-wide clock thread. A run reads its clocks whenever this has moved, so
/// one slow operation between two readings can overrun a budget by at most one tick plus that
/// operation.
static TICKS: AtomicU64 = AtomicU64::new(0);

/// Starts the clock thread once per process, ticking every `tick` (the first host's).
fn start_clock(tick: Duration) {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let tick = tick.max(Duration::from_millis(1));
        let spawned = std::thread::Builder::new()
            .name("warden-script-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(tick);
                    TICKS.fetch_add(1, Ordering::Relaxed);
                }
            });
        if let Err(error) = spawned {
            // Runs still read the clocks every few operations; only slow operations overrun.
            tracing::error!(%error, "could not start the script clock thread");
        }
    });
}
