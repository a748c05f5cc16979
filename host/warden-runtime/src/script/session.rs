//! One run's host-side state, shared by every host function the script calls: the broker and
//! the run, the wall-clock deadline, the CPU clock (time outside host calls), the stop reason,
//! and the log caps.
//!
//! It refuses to let a host call outlive the run: every broker future is bounded by the run's
//! deadline, and a call that hits it stops the script (uncatchably) instead of returning.

use crate::{LogBudget, LogLevel, LogSource, RunObserver, RuntimeLimits, StopReason, cut};
use rhai::{Dynamic, EvalAltResult, Position};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    cancelled: AtomicBool,
    stop: Mutex<Option<StopReason>>,
    log: Mutex<LogBudget>,
}

impl Session {
    pub(super) fn new(
        broker: Broker,
        run: Arc<Run>,
        handle: Handle,
        observer: Arc<dyn RunObserver>,
        limits: RuntimeLimits,
    ) -> Self {
        let started = Instant::now();
        let budgets = run.grant().budgets();
        let (wall_clock, cpu) = (budgets.wall_clock, budgets.cpu);
        let deadline = started + run.remaining();
        let log = Mutex::new(LogBudget::new(&limits));
        Self {
            broker,
            run,
            handle,
            observer,
            limits,
            started,
            deadline,
            wall_clock,
            cpu,
            host_nanos: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
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

    /// The `on_progress` check: `Some` stops the script. Cheap on most operations; the clocks
    /// are read every `every` operations.
    pub(super) fn check(&self, operations: u64, every: u64) -> Option<Dynamic> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Some(Dynamic::UNIT);
        }
        if !operations.is_multiple_of(every) {
            return None;
        }
        let now = Instant::now();
        if now >= self.deadline {
            self.record_stop(StopReason::WallClock {
                limit: self.wall_clock,
            });
            return Some(Dynamic::UNIT);
        }
        let host = Duration::from_nanos(self.host_nanos.load(Ordering::Relaxed));
        let cpu = now.duration_since(self.started).saturating_sub(host);
        if cpu > self.cpu {
            self.record_stop(StopReason::Cpu { limit: self.cpu });
            return Some(Dynamic::UNIT);
        }
        None
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
        let entered = Instant::now();
        let left = self.deadline.saturating_duration_since(entered);
        if left.is_zero() {
            return Err(self.terminate(StopReason::WallClock {
                limit: self.wall_clock,
            }));
        }
        // The timer is made inside the runtime: this thread is not one of its workers.
        let result = self
            .handle
            .block_on(async { tokio::time::timeout(left, future).await });
        let waited = u64::try_from(entered.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.host_nanos.fetch_add(waited, Ordering::Relaxed);
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
