//! The pool's circuit breaker: after a run of connect failures, checkouts fail at once with
//! [`Error::Unavailable`](crate::Error::Unavailable) until a probe connects.

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use crate::config::CircuitBreaker;

/// Closed (counting connect failures in a row) or open (until a connect succeeds).
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: u32,
    probe_interval: Duration,
    /// Connect failures since the last success.
    run: AtomicU32,
    open: AtomicBool,
    /// When the next probe connects, while open.
    next_probe: Mutex<Instant>,
    /// Wakes waiting checkouts (which then fail) and the probe task when it opens.
    pub(crate) opened: Notify,
}

impl Breaker {
    pub(crate) fn new(config: CircuitBreaker) -> Self {
        Self {
            failures: config.failures,
            probe_interval: config.probe_interval,
            run: AtomicU32::new(0),
            open: AtomicBool::new(false),
            next_probe: Mutex::new(Instant::now()),
            opened: Notify::new(),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// Counts a failed connect; true if this one opened the breaker, in which case the caller
    /// wakes the waiting checkouts with [`wake`](Self::wake) once it has counted the opening.
    pub(crate) fn failed(&self) -> bool {
        let run = self.run.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if run < self.failures || self.is_open() {
            return false;
        }
        // The probe is due an interval from now, set before the breaker is seen open.
        self.schedule_probe();
        !self.open.swap(true, Ordering::AcqRel)
    }

    /// Wakes the checkouts waiting for a connection (they fail) and the probe task.
    pub(crate) fn wake(&self) {
        self.opened.notify_waiters();
    }

    /// Counts a successful connect; true if it closed the breaker.
    pub(crate) fn succeeded(&self) -> bool {
        self.run.store(0, Ordering::Release);
        self.open.swap(false, Ordering::AcqRel)
    }

    /// Sets the next probe an interval from now (when it opens, and as each probe starts).
    /// An interval past what an `Instant` holds (`Duration::MAX`) puts it about 30 years
    /// away: no probe while the process runs.
    pub(crate) fn schedule_probe(&self) {
        /// About 30 years (tokio's own "far future").
        const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
        let now = Instant::now();
        *self.lock() = now
            .checked_add(self.probe_interval)
            .or_else(|| now.checked_add(FAR))
            .unwrap_or(now);
    }

    /// When the next probe connects.
    pub(crate) fn next_probe(&self) -> Instant {
        *self.lock()
    }

    /// How long until the next probe; zero if it is due.
    pub(crate) fn retry_after(&self) -> Duration {
        self.next_probe().saturating_duration_since(Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        self.next_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn it_opens_after_a_run_of_failures_and_a_success_resets_the_run() {
        let breaker = Breaker::new(CircuitBreaker::new(3, Duration::from_secs(1)));
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(!breaker.succeeded(), "it was not open");
        assert!(!breaker.failed());
        assert!(!breaker.failed());
        assert!(!breaker.is_open(), "two in a row, not three");
        assert!(breaker.failed());
        assert!(breaker.is_open());
        assert!(!breaker.failed(), "opened once");
        assert_eq!(breaker.retry_after(), Duration::from_secs(1));
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(breaker.retry_after(), Duration::from_millis(600));
        assert!(breaker.succeeded());
        assert!(!breaker.is_open());
    }
}
