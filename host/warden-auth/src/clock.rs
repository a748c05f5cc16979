//! The clock the token cache and retry loop read, injectable so tests can move time.
//!
//! It refuses nothing; it exists so that no code in this crate calls `SystemTime::now()` or
//! `tokio::time::sleep` directly.

use async_trait::async_trait;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Wall-clock time and sleeping.
#[async_trait]
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// Waits `duration` (a test clock may return at once).
    async fn sleep(&self, duration: Duration);
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A clock that only moves when told to; `sleep` advances it instead of waiting.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
    slept: Mutex<Vec<Duration>>,
}

impl ManualClock {
    /// A manual clock starting at the real current time.
    pub fn new() -> Self {
        Self {
            now: Mutex::new(SystemTime::now()),
            slept: Mutex::new(Vec::new()),
        }
    }
    /// A manual clock starting at `start`.
    pub fn at(start: SystemTime) -> Self {
        Self {
            now: Mutex::new(start),
            slept: Mutex::new(Vec::new()),
        }
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().expect("clock lock") += by;
    }
    /// Every sleep requested so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().expect("clock lock").clone()
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().expect("clock lock")
    }
    async fn sleep(&self, duration: Duration) {
        self.slept.lock().expect("clock lock").push(duration);
        self.advance(duration);
        tokio::task::yield_now().await;
    }
}
