//! A circuit breaker for a remote level: after a run of failed calls it stops calling for a
//! while (callers fail at once instead of waiting out a timeout each), then lets one call
//! through as a probe; the probe's success closes it, its failure opens it again.

use std::{
    sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use brisk_metrics::{Counter, Gauge};
use tokio::time::Instant;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What the breaker reports.
#[derive(Debug, Clone)]
pub(crate) struct BreakerMetrics {
    /// 0 closed, 1 open, 2 half-open (one probe in flight).
    pub(crate) state: Gauge,
    /// Times it opened.
    pub(crate) opened: Counter,
}

impl BreakerMetrics {
    #[cfg(test)]
    fn noop() -> Self {
        Self {
            state: Gauge::noop(),
            opened: Counter::noop(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct Breaker {
    /// Consecutive failures that open it.
    threshold: u32,
    /// How long it stays open before a probe.
    open_for: Duration,
    state: AtomicU8,
    failures: AtomicU32,
    /// Milliseconds since `epoch` when it last opened.
    opened_at: AtomicU64,
    epoch: Instant,
    metrics: BreakerMetrics,
}

/// Leave to make one call; report how it went with [`Permit::succeeded`] or
/// [`Permit::failed`]. A probe dropped without a report (its caller was cancelled) leaves the
/// breaker open and due for the next probe, never stuck half-open.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, open_for: Duration, metrics: BreakerMetrics) -> Self {
        Self {
            threshold,
            open_for,
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            epoch: Instant::now(),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go now: always while closed; while open, one probe once `open_for`
    /// has passed; `None` otherwise.
    pub(crate) fn admit(&self) -> Option<Permit<'_>> {
        let permit = |probe| Permit {
            breaker: self,
            probe,
            reported: false,
        };
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(permit(false)),
            OPEN => {
                let opened = self.opened_at.load(Ordering::Acquire);
                let due = self.now_ms().saturating_sub(opened) >= millis(self.open_for);
                (due && self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok())
                .then(|| {
                    self.metrics.state.set(i64::from(HALF_OPEN));
                    permit(true)
                })
            }
            _ => None,
        }
    }

    /// Whether calls are being refused now (open or half-open).
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLOSED
    }

    fn open(&self) {
        self.opened_at.store(self.now_ms(), Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        self.metrics.state.set(i64::from(OPEN));
        self.metrics.opened.increment();
    }
}

impl Permit<'_> {
    /// The call succeeded: the breaker closes (if a probe) and the failure run resets.
    pub(crate) fn succeeded(mut self) {
        self.reported = true;
        let breaker = self.breaker;
        breaker.failures.store(0, Ordering::Relaxed);
        if self.probe {
            breaker.state.store(CLOSED, Ordering::Release);
            breaker.metrics.state.set(i64::from(CLOSED));
        }
    }

    /// The call failed: a failed probe opens the breaker again; a run of `threshold`
    /// failures opens a closed one.
    pub(crate) fn failed(mut self) {
        self.reported = true;
        let breaker = self.breaker;
        if self.probe {
            breaker.open();
            return;
        }
        let run = breaker.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= breaker.threshold
            && breaker
                .state
                .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            #[cfg(test)]
            tests::as_it_opens(breaker);
            breaker.failures.store(0, Ordering::Relaxed);
            breaker.open();
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            // Back to open, already due: the next caller probes.
            self.breaker.state.store(OPEN, Ordering::Release);
            self.breaker.metrics.state.set(i64::from(OPEN));
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Run by this thread at the first instant another thread can see the breaker open.
        static AS_IT_OPENS: Cell<Option<fn(&Breaker)>> = const { Cell::new(None) };
    }

    /// The test hook: what another thread does at the instant the breaker opens.
    pub(super) fn as_it_opens(breaker: &Breaker) {
        if let Some(hook) = AS_IT_OPENS.with(Cell::take) {
            hook(breaker);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_admit_at_the_instant_it_opens_is_refused() {
        // Up longer than `open_for`, so an admit that read a stale opening time would probe.
        let breaker = breaker();
        tokio::time::advance(Duration::from_secs(10)).await;
        AS_IT_OPENS.with(|hook| {
            hook.set(Some(|breaker| {
                assert!(
                    breaker.admit().is_none(),
                    "an admit as the breaker opens must be refused, not probe at once"
                );
            }));
        });
        for _ in 0..3 {
            breaker.admit().unwrap().failed();
        }
        assert!(AS_IT_OPENS.with(Cell::get).is_none(), "the hook ran");
        assert!(breaker.admit().is_none(), "open: calls refused");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(breaker.admit().is_some(), "due after open_for");
    }

    fn breaker() -> Breaker {
        Breaker::new(3, Duration::from_secs(2), BreakerMetrics::noop())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_a_run_of_failures_and_probes_once_after_the_pause() {
        let breaker = breaker();
        for _ in 0..2 {
            breaker.admit().unwrap().failed();
        }
        // A success resets the run.
        breaker.admit().unwrap().succeeded();
        for _ in 0..2 {
            breaker.admit().unwrap().failed();
        }
        assert!(!breaker.is_open());
        breaker.admit().unwrap().failed();
        assert!(breaker.is_open());
        assert!(breaker.admit().is_none(), "open: calls refused");

        tokio::time::advance(Duration::from_secs(2)).await;
        let probe = breaker.admit().expect("due: one probe");
        assert!(breaker.admit().is_none(), "one probe at a time");
        probe.failed();
        assert!(breaker.admit().is_none(), "a failed probe opens it again");

        tokio::time::advance(Duration::from_secs(2)).await;
        breaker.admit().unwrap().succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.admit().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_dropped_unreported_leaves_it_due_for_the_next() {
        let breaker = breaker();
        for _ in 0..3 {
            breaker.admit().unwrap().failed();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        drop(breaker.admit().unwrap());
        assert!(breaker.is_open());
        breaker.admit().expect("the next caller probes").succeeded();
        assert!(!breaker.is_open());
    }

    #[test]
    fn concurrent_failures_open_it_once() {
        let registry = brisk_metrics::Registry::new();
        let key = brisk_metrics::Key::new("opened").unwrap();
        let breaker = Breaker::new(
            10,
            Duration::from_secs(60),
            BreakerMetrics {
                state: Gauge::noop(),
                opened: brisk_metrics::Recorder::counter(&registry, &key),
            },
        );
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        if let Some(permit) = breaker.admit() {
                            permit.failed();
                        }
                    }
                });
            }
        });
        assert!(breaker.is_open());
        assert_eq!(registry.snapshot().counter("opened", &[]), Some(1));
    }
}
