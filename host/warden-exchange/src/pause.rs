//! The back-off every caller of one session shares: a 429's `Retry-After`, a 503's back-off or
//! a spent rate limit holds back all of them until it passes, not only the caller that was
//! answered. Both transports keep one.
//!
//! It refuses to let a caller with a deadline sleep into a pause it cannot outlast — checked
//! before each sleep, so also when another caller lengthens the pause meanwhile — and says how
//! long was left instead, so the caller can report "throttled" rather than cut a wait short.

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// When the session's callers may send again.
#[derive(Debug, Default)]
pub(crate) struct Pause {
    until: Mutex<Option<Instant>>,
}

impl Pause {
    /// Holds every caller back for `for_how_long` from now, unless already held longer.
    pub(crate) fn extend(&self, for_how_long: Duration) {
        let until = Instant::now() + for_how_long;
        let mut paused = self.until.lock().expect("pause lock");
        if paused.is_none_or(|p| p < until) {
            *paused = Some(until);
        }
    }

    /// Whether a pause holds now.
    pub(crate) fn holds(&self) -> bool {
        self.until
            .lock()
            .expect("pause lock")
            .is_some_and(|until| until > Instant::now())
    }

    /// Waits until no pause holds. With a `deadline`, gives up as soon as the pause would not
    /// end `reserve` before it, returning how much of the pause was left.
    pub(crate) async fn wait_out(
        &self,
        deadline: Option<Instant>,
        reserve: Duration,
    ) -> Result<(), Duration> {
        loop {
            let until = *self.until.lock().expect("pause lock");
            let now = Instant::now();
            match until {
                Some(until) if until > now => {
                    if deadline.is_some_and(|d| until + reserve >= d) {
                        return Err(until - now);
                    }
                    tokio::time::sleep_until(until).await;
                }
                _ => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gives_up_when_another_caller_lengthens_the_pause_past_its_deadline() {
        let pause = std::sync::Arc::new(Pause::default());
        pause.extend(Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        let started = Instant::now();
        let waiter = {
            let pause = pause.clone();
            tokio::spawn(async move { pause.wait_out(Some(deadline), Duration::ZERO).await })
        };
        // While it sleeps out the first second, someone is told to wait an hour.
        tokio::time::sleep(Duration::from_millis(500)).await;
        pause.extend(Duration::from_secs(3600));
        let left = waiter.await.unwrap().unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "it stopped at the first wake-up: {:?}",
            started.elapsed()
        );
        assert!(left > Duration::from_secs(3000), "{left:?}");
        // Without a deadline the pause is waited out; an affordable one is too.
        let pause = Pause::default();
        pause.extend(Duration::from_secs(2));
        let started = Instant::now();
        pause
            .wait_out(
                Some(Instant::now() + Duration::from_secs(3)),
                Duration::ZERO,
            )
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(2));
        pause.extend(Duration::from_secs(2));
        pause.wait_out(None, Duration::ZERO).await.unwrap();
    }
}
