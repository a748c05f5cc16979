//! Stopping a run from outside it: an operator's Ctrl-C in a REPL, a service cancelling a task.
//!
//! An [`Interrupt`] is a cloneable handle; the caller keeps one clone and passes another in the
//! [`crate::RunRequest`]. Triggering it from any thread stops the run at its next check (a wasm
//! guest at its next epoch tick, a Rhai script at its next operation) or cuts short the host
//! call it is waiting in; the run ends stopped with [`crate::StopReason::Interrupted`], its
//! closing audit line written like any other stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Notify;

/// A handle that stops the runs it was given to. Cheap to clone; every clone is the same
/// handle. Once triggered it stays triggered: make a new one for the next run.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    interrupted: AtomicBool,
    /// Wakes runs waiting in a host call, which check no flag while they wait.
    wake: Notify,
}

impl Interrupt {
    /// A handle not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops every run holding this handle at its next check. Safe from any thread, any
    /// number of times.
    pub fn interrupt(&self) {
        self.inner.interrupted.store(true, Ordering::Relaxed);
        self.inner.wake.notify_waiters();
    }

    /// Whether [`Interrupt::interrupt`] has been called.
    pub fn is_interrupted(&self) -> bool {
        self.inner.interrupted.load(Ordering::Relaxed)
    }

    /// Resolves once the handle is triggered (at once if it already was).
    pub(crate) async fn interrupted(&self) {
        loop {
            let woken = self.inner.wake.notified();
            tokio::pin!(woken);
            // Registered before the flag is read, so a trigger in between is not missed.
            woken.as_mut().enable();
            if self.is_interrupted() {
                return;
            }
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_clone_sees_the_trigger() {
        let handle = Interrupt::new();
        let held = handle.clone();
        assert!(!held.is_interrupted());
        std::thread::spawn(move || handle.interrupt())
            .join()
            .unwrap();
        assert!(held.is_interrupted());
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_triggered_from_another_thread() {
        let handle = Interrupt::new();
        let trigger = handle.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            trigger.interrupt();
        });
        tokio::time::timeout(Duration::from_secs(5), handle.interrupted())
            .await
            .expect("the waiter woke");
        // Already triggered: resolves at once.
        handle.interrupted().await;
    }
}
