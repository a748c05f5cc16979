//! One run's script-side state, shared by every host function the script calls: the run's
//! [`Supervisor`] (clocks, deadline, stop reason, log sink, interrupt), the memory meter, and
//! the bridge from the script thread to the async broker.
//!
//! It refuses to let a host call outlive the run: every broker future is bounded by the run's
//! deadline and interrupt, and a call that hits either stops the script (uncatchably) instead
//! of returning.
//!
//! Its limits do not depend on how many operations pass: the memory meter, the stop flag and
//! the interrupt are read on every operation (atomic loads), and the clocks whenever the
//! process-wide clock thread has ticked since the last reading (every
//! [`RuntimeLimits::tick`]), so a script of few but slow operations is stopped as promptly as
//! one of many fast ones.

use super::memory::Meter;
use crate::supervisor::{HostCall, Supervisor};
use crate::{LogLevel, LogSource, RuntimeLimits, StopReason};
use rhai::{Dynamic, EvalAltResult, Position};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::runtime::Handle;
use warden_broker::{Broker, GuestError, Run};

/// The state of one script run.
#[derive(Debug)]
pub(super) struct Session {
    supervisor: Arc<Supervisor>,
    /// The runtime the broker's futures run on; the script thread blocks on them.
    handle: Handle,
    /// The clock thread's tick at the last reading of the clocks.
    seen_tick: AtomicU64,
    /// What the run holds, and the most it may.
    memory: Meter,
    memory_limit: u64,
    /// The memory peak, noted by the script thread at its end.
    peak_at_end: AtomicU64,
    /// The last broker error thrown and its map: a script that keeps making a refused call
    /// gets a copy instead of the error's map and message built again.
    last_thrown: Mutex<Option<(GuestError, Dynamic)>>,
}

impl Session {
    pub(super) fn new(
        supervisor: Arc<Supervisor>,
        handle: Handle,
        limits: &RuntimeLimits,
        memory: Meter,
        memory_limit: u64,
    ) -> Self {
        start_clock(limits.tick);
        Self {
            supervisor,
            handle,
            seen_tick: AtomicU64::new(TICKS.load(Ordering::Relaxed)),
            memory,
            memory_limit,
            peak_at_end: AtomicU64::new(0),
            last_thrown: Mutex::new(None),
        }
    }

    /// The broker the run was begun with (the supervisor's).
    pub(super) fn broker(&self) -> &Broker {
        self.supervisor.broker()
    }

    /// The broker's run (the supervisor's).
    pub(super) fn run(&self) -> &Run {
        self.supervisor.run()
    }

    /// Starts the guest's CPU clock (just before the script is evaluated).
    pub(super) fn start_guest(&self) {
        self.supervisor.start_guest();
    }

    /// The limit that stopped the script, if one did.
    pub(super) fn stop_reason(&self) -> Option<StopReason> {
        self.supervisor.stop_reason()
    }

    /// Stops the script: an error `try`/`catch` cannot catch.
    fn terminate(&self, reason: StopReason) -> Box<EvalAltResult> {
        self.supervisor.stop(reason);
        EvalAltResult::ErrorTerminated(Dynamic::UNIT, Position::NONE).into()
    }

    /// The `on_progress` check: `Some` stops the script. The stop flag, the interrupt and the
    /// memory meter are read on every operation; the clocks when the clock thread has ticked,
    /// or every `every` operations.
    pub(super) fn check(&self, operations: u64, every: u64) -> Option<Dynamic> {
        if self.supervisor.stopped_or_interrupted() {
            return Some(Dynamic::UNIT);
        }
        // The peak, not what is held now: an operation that went past the limit and let go
        // again has still used the memory.
        if self.memory.peak() > self.memory_limit {
            self.supervisor.stop(self.memory_stop());
            return Some(Dynamic::UNIT);
        }
        let tick = TICKS.load(Ordering::Relaxed);
        if tick == self.seen_tick.load(Ordering::Relaxed) && !operations.is_multiple_of(every) {
            return None;
        }
        self.seen_tick.store(tick, Ordering::Relaxed);
        self.supervisor.check().map(|_| Dynamic::UNIT)
    }

    /// Notes the CPU time at the script's end (called on the script thread).
    pub(super) fn end_cpu(&self) {
        self.supervisor.end_cpu();
    }

    /// Notes the memory peak at the run's end (called on the script thread).
    pub(super) fn end_memory(&self) {
        self.peak_at_end
            .store(self.memory.peak(), Ordering::Relaxed);
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

    /// Runs a broker future to its end on the runtime, bounded by the run's deadline and
    /// interrupt. A refusal or failure comes back as the catchable error map; the deadline or
    /// the interrupt stops the script.
    pub(super) fn call<T>(
        &self,
        future: impl Future<Output = Result<T, GuestError>>,
    ) -> Result<T, Box<EvalAltResult>> {
        let result = self.run_to_end(self.supervisor.host_call(future));
        match result {
            HostCall::Done(Ok(value)) => Ok(value),
            // The broker bounds its own waits by the same deadline and may answer first with a
            // timeout or a spent wall-clock budget: past the deadline that is the run's end, not
            // an error for the script to catch.
            HostCall::Done(Err(_)) if self.supervisor.remaining().is_zero() => {
                Err(self.terminate(self.supervisor.wall_clock_stop()))
            }
            HostCall::Done(Err(error)) => Err(self.thrown(error)),
            HostCall::Stopped(reason) => Err(self.terminate(reason)),
        }
    }

    /// Runs `future` to its end on this (script) thread, inside the runtime (its timers and
    /// spawns need it: this thread is not one of its workers). A future that ends at its first
    /// poll (a refusal) ends there; one that waits is handed to `block_on`, which polls it
    /// again with a waker that parks this thread.
    fn run_to_end<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        {
            let _entered = self.handle.enter();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
        }
        self.handle.block_on(future)
    }

    /// Books `time` spent inside a host call as the script's own (see
    /// [`Supervisor::book_guest_within_host`]).
    pub(super) fn book_guest_within_host(&self, time: std::time::Duration) {
        self.supervisor.book_guest_within_host(time);
    }

    /// A broker error as the script catches it; the same error as the last one thrown is a
    /// copy of its map.
    fn thrown(&self, error: GuestError) -> Box<EvalAltResult> {
        let mut last = self.last_thrown.lock().unwrap_or_else(|p| p.into_inner());
        let map = match last.as_ref() {
            Some((before, map)) if *before == error => map.clone(),
            _ => {
                let map = super::surface::error_map(&error);
                *last = Some((error, map.clone()));
                map
            }
        };
        EvalAltResult::ErrorRuntime(map, Position::NONE).into()
    }

    /// A line to the run's log sink: `log::*` lines whole; `print`/`debug` text as a wasm
    /// guest's stdout/stderr is taken (cut into lines at `\n`), so both runtimes log alike.
    pub(super) fn log(&self, source: LogSource, level: LogLevel, message: &str) {
        let log = self.supervisor.log();
        match source {
            LogSource::Guest => log.line(source, level, message),
            LogSource::Stdout | LogSource::Stderr => {
                log.write(source, level, message.as_bytes());
                log.write(source, level, b"\n");
            }
        }
    }

    /// Passes progress to the observer (the label cut like a log line).
    pub(super) fn progress(&self, done: u64, total: Option<u64>, label: &str) {
        self.supervisor.log().progress(done, total, label);
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
