//! Leak detection: every checkout is registered with where it happened, and the housekeeper
//! reports the ones held past the threshold.

use std::{
    panic::Location,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use crate::metrics::Metrics;

/// A checkout held longer than the leak threshold, as [`Pool::suspected_leaks`] lists it.
///
/// [`Pool::suspected_leaks`]: crate::Pool::suspected_leaks
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SuspectedLeak {
    /// The source location of the `get()` call that checked the connection out.
    pub location: &'static Location<'static>,
    /// How long it has been held, to within one housekeeping period.
    pub held_for: Duration,
}

/// The open checkouts of one pool.
#[derive(Debug)]
pub(crate) struct Leaks {
    threshold_ticks: u64,
    period: Duration,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    entries: Vec<Option<Checkout>>,
    free: Vec<usize>,
}

#[derive(Debug)]
struct Checkout {
    since: u64,
    location: &'static Location<'static>,
    reported: bool,
}

impl Leaks {
    /// `threshold` and `period` are both real durations; the clock ticks once per `period`.
    pub(crate) fn new(threshold: Duration, period: Duration) -> Self {
        let threshold_ticks = threshold.as_nanos().div_ceil(period.as_nanos()).max(1);
        Self {
            threshold_ticks: u64::try_from(threshold_ticks).unwrap_or(u64::MAX),
            period,
            slots: Mutex::default(),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a checkout; the returned slot goes back to [`Leaks::check_in`].
    pub(crate) fn check_out(&self, now: u64, location: &'static Location<'static>) -> usize {
        let checkout = Checkout {
            since: now,
            location,
            reported: false,
        };
        let mut slots = self.slots();
        match slots.free.pop() {
            Some(slot) => {
                slots.entries[slot] = Some(checkout);
                slot
            }
            None => {
                slots.entries.push(Some(checkout));
                slots.entries.len() - 1
            }
        }
    }

    /// Ends a checkout. One that was reported as a leak logs that it came back after all.
    pub(crate) fn check_in(&self, slot: usize, now: u64, target: &str) {
        let checkout = {
            let mut slots = self.slots();
            let checkout = slots.entries.get_mut(slot).and_then(Option::take);
            slots.free.push(slot);
            checkout
        };
        if let Some(checkout) = checkout.filter(|c| c.reported) {
            tracing::info!(
                target: "brisk_pool::leak",
                pool = target,
                location = %checkout.location,
                held_for = ?self.held_for(checkout.since, now),
                "a connection reported as leaked was returned",
            );
        }
    }

    /// Reports each checkout that passed the threshold since the last scan, once.
    pub(crate) fn scan(&self, now: u64, target: &str, metrics: &Metrics) {
        let mut reported = Vec::new();
        {
            let mut slots = self.slots();
            for checkout in slots.entries.iter_mut().flatten() {
                if !checkout.reported && now.saturating_sub(checkout.since) >= self.threshold_ticks
                {
                    checkout.reported = true;
                    reported.push((checkout.location, checkout.since));
                }
            }
        }
        for (location, since) in reported {
            metrics.leaks.increment();
            tracing::warn!(
                target: "brisk_pool::leak",
                pool = target,
                location = %location,
                held_for = ?self.held_for(since, now),
                "a connection has been checked out for longer than the leak threshold",
            );
        }
    }

    /// The checkouts held past the threshold right now.
    pub(crate) fn suspects(&self, now: u64) -> Vec<SuspectedLeak> {
        self.slots()
            .entries
            .iter()
            .flatten()
            .filter(|c| now.saturating_sub(c.since) >= self.threshold_ticks)
            .map(|c| SuspectedLeak {
                location: c.location,
                held_for: self.held_for(c.since, now),
            })
            .collect()
    }

    fn held_for(&self, since: u64, now: u64) -> Duration {
        let ticks = u32::try_from(now.saturating_sub(since)).unwrap_or(u32::MAX);
        self.period.saturating_mul(ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_checkout_past_the_threshold_once() {
        let leaks = Leaks::new(Duration::from_millis(300), Duration::from_millis(100));
        let metrics = Metrics::noop();
        let here = Location::caller();
        let a = leaks.check_out(0, here);
        let b = leaks.check_out(2, here);
        assert!(leaks.suspects(2).is_empty());
        leaks.scan(3, "test", &metrics);
        assert_eq!(
            leaks.suspects(3),
            vec![SuspectedLeak {
                location: here,
                held_for: Duration::from_millis(300)
            }]
        );
        leaks.check_in(a, 4, "test");
        assert_eq!(
            leaks.suspects(5).len(),
            1,
            "b is now past the threshold too"
        );
        leaks.check_in(b, 6, "test");
        assert!(leaks.suspects(100).is_empty());
        let c = leaks.check_out(7, here);
        assert!(c == a || c == b, "slots are reused");
    }
}
