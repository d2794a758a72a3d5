//! A circuit breaker for a remote level: after a run of failed calls it stops calling for a
//! while (callers fail at once instead of waiting out a timeout each), then lets one call
//! through as a probe; the probe's success closes it, its failure opens it again.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use brisk_metrics::{Counter, Gauge};
use tokio::time::Instant;

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;

/// The state in the low two bits of the breaker's word, the time it last opened (milliseconds
/// since `epoch`) above them: one atomic word, so an admit that sees the breaker open sees
/// when it opened, in the same load.
const STATE_BITS: u32 = 2;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

fn word(state: u64, opened_at: u64) -> u64 {
    (opened_at.min(u64::MAX >> STATE_BITS) << STATE_BITS) | state
}

fn state(word: u64) -> u64 {
    word & STATE_MASK
}

fn opened_at(word: u64) -> u64 {
    word >> STATE_BITS
}

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
    /// The state and when it last opened, one word (see [`word`]): every transition is one
    /// compare-and-swap of it.
    word: AtomicU64,
    failures: AtomicU32,
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
            word: AtomicU64::new(word(CLOSED, 0)),
            failures: AtomicU32::new(0),
            epoch: Instant::now(),
            metrics,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a call may go now: always while closed; while open, one probe once `open_for`
    /// has passed since it opened; `None` otherwise.
    pub(crate) fn admit(&self) -> Option<Permit<'_>> {
        let permit = |probe| Permit {
            breaker: self,
            probe,
            reported: false,
        };
        let current = self.word.load(Ordering::Acquire);
        match state(current) {
            CLOSED => Some(permit(false)),
            OPEN => {
                let due = self.now_ms().saturating_sub(opened_at(current)) >= millis(self.open_for);
                // Only from the very word read: if it opened again since, not due.
                (due && self
                    .word
                    .compare_exchange(
                        current,
                        word(HALF_OPEN, opened_at(current)),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok())
                .then(|| {
                    self.metrics.state.set(HALF_OPEN as i64);
                    permit(true)
                })
            }
            _ => None,
        }
    }

    /// Whether calls are being refused now (open or half-open).
    #[cfg(test)]
    fn is_open(&self) -> bool {
        state(self.word.load(Ordering::Acquire)) != CLOSED
    }

    /// Moves from `from` (a state) to open as of now; false if the state was not `from`.
    fn open_from(&self, from: u64) -> bool {
        let opened = word(OPEN, self.now_ms());
        let moved = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                (state(current) == from).then_some(opened)
            })
            .is_ok();
        if moved {
            #[cfg(test)]
            tests::as_it_opens(self);
            self.metrics.state.set(OPEN as i64);
            self.metrics.opened.increment();
        }
        moved
    }
}

impl Permit<'_> {
    /// The call succeeded: the breaker closes (if a probe) and the failure run resets.
    pub(crate) fn succeeded(mut self) {
        self.reported = true;
        let breaker = self.breaker;
        breaker.failures.store(0, Ordering::Relaxed);
        if self.probe {
            breaker.word.store(word(CLOSED, 0), Ordering::Release);
            breaker.metrics.state.set(CLOSED as i64);
        }
    }

    /// The call failed: a failed probe opens the breaker again (for `open_for` from now); a
    /// run of `threshold` failures opens a closed one.
    pub(crate) fn failed(mut self) {
        self.reported = true;
        let breaker = self.breaker;
        if self.probe {
            breaker.open_from(HALF_OPEN);
            return;
        }
        let run = breaker.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if run >= breaker.threshold && breaker.open_from(CLOSED) {
            breaker.failures.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            // Back to open, keeping the time it opened (already due): the next caller probes.
            let _ =
                self.breaker
                    .word
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                        (state(current) == HALF_OPEN).then(|| word(OPEN, opened_at(current)))
                    });
            self.breaker.metrics.state.set(OPEN as i64);
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

    /// Threads admitting while one of them opens the breaker are refused until `open_for` has
    /// passed (none probes early); then, of threads admitting together, exactly one probes.
    #[tokio::test(start_paused = true)]
    async fn concurrent_admits_are_refused_until_due_then_exactly_one_probes() {
        const THREADS: usize = 8;
        let breaker = Breaker::new(1, Duration::from_secs(2), BreakerMetrics::noop());
        // Up longer than `open_for`, so an admit that read a stale opening time would probe.
        tokio::time::advance(Duration::from_secs(10)).await;
        let handle = tokio::runtime::Handle::current();
        let barrier = std::sync::Barrier::new(THREADS);
        for _ in 0..20 {
            let early = std::sync::atomic::AtomicUsize::new(0);
            std::thread::scope(|scope| {
                for thread in 0..THREADS {
                    let (breaker, handle, barrier, early) = (&breaker, &handle, &barrier, &early);
                    scope.spawn(move || {
                        let _clock = handle.enter();
                        barrier.wait();
                        for call in 0..500 {
                            match breaker.admit() {
                                Some(permit) if permit.probe => {
                                    early.fetch_add(1, Ordering::Relaxed);
                                    permit.failed();
                                }
                                Some(permit) if thread == 0 && call == 100 => permit.failed(),
                                Some(permit) => drop(permit),
                                None => {}
                            }
                        }
                    });
                }
            });
            assert_eq!(early.into_inner(), 0, "a probe before open_for passed");
            assert!(breaker.is_open());

            tokio::time::advance(Duration::from_secs(2)).await;
            let probes = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|scope| {
                for _ in 0..THREADS {
                    let (breaker, handle, barrier, probes) = (&breaker, &handle, &barrier, &probes);
                    scope.spawn(move || {
                        let _clock = handle.enter();
                        barrier.wait();
                        let admitted = breaker.admit();
                        barrier.wait();
                        if let Some(permit) = admitted {
                            probes.lock().unwrap().push(permit.probe);
                            permit.succeeded();
                        }
                    });
                }
            });
            assert_eq!(
                probes.into_inner().unwrap(),
                [true],
                "exactly one probe when due"
            );
            assert!(!breaker.is_open(), "the probe's success closed it");
        }
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
