//! Freshness: how long a value is fresh, how long after that it may still be served stale,
//! and when to refresh it early (XFetch).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::{Error, Result};

/// A value as [`Tiered`](crate::Tiered) keeps it in each level: the value, when it stops
/// being fresh, and how long the load that produced it took (for early refresh).
///
/// The levels hold the value past its freshness (for stale-while-revalidate and fail-safe);
/// the stamp travels with the value through Redis, so every instance agrees on when it goes
/// stale. Read the value with [`value`](Self::value) or [`into_value`](Self::into_value).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "redis", derive(serde::Serialize, serde::Deserialize))]
pub struct Stamped<V> {
    value: V,
    /// Unix time in milliseconds at which the value goes stale; `u64::MAX`: never.
    fresh_until: u64,
    /// How long the load took, in milliseconds rounded up; 0 for a value inserted directly.
    cost: u32,
    /// Random, new with every store: tells whether two copies are the same write (an HTTP
    /// validator for responses built from the value).
    version: u64,
    /// Milliseconds past `fresh_until` for which this copy answers as fresh although it is
    /// stale: fail-safe's throttle, in L1 only. Its age is still counted from `fresh_until`.
    #[cfg_attr(feature = "redis", serde(skip))]
    grace: u32,
    /// The memory level's generation when this copy was filled; a backplane gap starts a new
    /// one, and copies of an older one are stale. 0: stale in any generation. L1 only.
    #[cfg_attr(feature = "redis", serde(skip))]
    generation: u32,
}

impl<V> Stamped<V> {
    pub(crate) fn new(value: V, fresh_until: u64, cost: u32) -> Self {
        Self {
            value,
            fresh_until,
            cost,
            version: crate::jitter::random(),
            grace: 0,
            generation: 0,
        }
    }

    /// A number that changes with every store of the key (random, so every instance agrees
    /// through Redis and no counter is shared): two reads with the same version read the
    /// same write. `http::EntityTag::from_version` makes an HTTP validator of it.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn generation(&self) -> u32 {
        self.generation
    }

    /// This copy, as filled in `generation`.
    pub(crate) fn in_generation(mut self, generation: u32) -> Self {
        self.generation = generation;
        self
    }

    /// This stale value, answering as fresh until `until` (Unix milliseconds); its age still
    /// counts from when it went stale.
    pub(crate) fn answering_until(mut self, until: u64) -> Self {
        self.grace = u32::try_from(until.saturating_sub(self.fresh_until)).unwrap_or(u32::MAX);
        self
    }

    /// The value.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// The value, unwrapped.
    pub fn into_value(self) -> V {
        self.value
    }

    /// When the value goes stale; `None`: never. (A stale value that fail-safe keeps
    /// answering for its throttle still went stale then.)
    pub fn fresh_until(&self) -> Option<SystemTime> {
        (self.fresh_until != u64::MAX)
            .then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(self.fresh_until))
    }

    pub(crate) fn fresh_until_ms(&self) -> u64 {
        self.fresh_until
    }

    /// Until when (Unix milliseconds) it answers as fresh: its freshness, or fail-safe's
    /// throttle past it.
    pub(crate) fn answers_until(&self) -> u64 {
        self.fresh_until.saturating_add(u64::from(self.grace))
    }

    /// Answers as fresh at `now` (Unix milliseconds).
    pub(crate) fn is_fresh(&self, now: u64) -> bool {
        now < self.answers_until()
    }

    /// How long it has been stale at `now`; zero while fresh.
    pub(crate) fn stale_for(&self, now: u64) -> Duration {
        Duration::from_millis(now.saturating_sub(self.fresh_until))
    }
}

/// Unix time in milliseconds, advancing with tokio's clock (so paused-time tests drive it)
/// from the wall clock read once at start.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_ms: u64,
    base: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            base_ms: u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX),
            base: Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.base_ms
            .saturating_add(u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX))
    }
}

/// The time, read from `clock` once and only if asked: a hit on a value that cannot go stale
/// by time reads no clock. (An atomic rather than a `Cell`, so that a future holding it stays
/// `Send`; it is read by one task.)
#[derive(Debug)]
pub(crate) struct Now<'a> {
    clock: &'a Clock,
    /// `u64::MAX` until read.
    read: std::sync::atomic::AtomicU64,
}

impl<'a> Now<'a> {
    pub(crate) fn new(clock: &'a Clock) -> Self {
        Self {
            clock,
            read: std::sync::atomic::AtomicU64::new(u64::MAX),
        }
    }

    /// A time already read: `ms`.
    #[cfg(test)]
    fn at(clock: &'a Clock, ms: u64) -> Self {
        Self {
            clock,
            read: std::sync::atomic::AtomicU64::new(ms),
        }
    }

    /// Whether `stamped` answers as fresh now, reading the clock only if it can go stale.
    pub(crate) fn fresh<V>(&self, stamped: &Stamped<V>) -> bool {
        stamped.answers_until() == u64::MAX || stamped.is_fresh(self.get())
    }

    pub(crate) fn get(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        match self.read.load(Relaxed) {
            u64::MAX => {
                let now = self.clock.now_ms();
                self.read.store(now, Relaxed);
                now
            }
            now => now,
        }
    }
}

/// Milliseconds in `duration`, rounded up, as a stamp field.
pub(crate) fn millis_up(duration: Duration) -> u64 {
    let ms = duration.as_millis() + u128::from(!duration.subsec_nanos().is_multiple_of(1_000_000));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The freshness settings of a [`Tiered`](crate::Tiered) cache, checked together.
#[derive(Debug, Clone, Default)]
pub(crate) struct Freshness {
    /// How long a loaded (or inserted) value is fresh; `None`: until it expires.
    pub(crate) fresh_for: Option<Duration>,
    /// Serve a stale value this long past its freshness while one refresh runs behind.
    pub(crate) stale_while_revalidate: Option<Duration>,
    /// Serve a stale value this long past its freshness when a load fails or times out.
    pub(crate) fail_safe: Option<Duration>,
    /// After fail-safe served a stale value, how long it is served before loading again.
    pub(crate) fail_safe_throttle: Duration,
    /// Past this, a load with a fail-safe value to serve serves it and finishes behind.
    pub(crate) soft_timeout: Option<Duration>,
    /// Past this, a load is given up on (it finishes behind and stores its value).
    pub(crate) hard_timeout: Option<Duration>,
    /// XFetch's β: refresh early with a probability that grows as expiry nears and with
    /// how long the value took to load.
    pub(crate) early_refresh: Option<f64>,
}

/// `fail_safe_throttle`'s default: FusionCache's, long enough that a failing source is not
/// asked again by every request, short enough to notice it recover.
pub(crate) const DEFAULT_THROTTLE: Duration = Duration::from_secs(30);

impl Freshness {
    /// How long past its freshness a value is kept in the levels.
    pub(crate) fn keep_stale(&self) -> Duration {
        self.stale_while_revalidate
            .unwrap_or_default()
            .max(self.fail_safe.unwrap_or_default())
    }

    /// Rejects settings that cannot work together.
    pub(crate) fn check<E>(&self) -> Result<(), Error<E>> {
        let invalid = |setting, value: String, reason| Error::Config {
            setting,
            value,
            reason,
        };
        let positive = [
            ("fresh_for", self.fresh_for),
            ("stale_while_revalidate", self.stale_while_revalidate),
            ("fail_safe", self.fail_safe),
            ("fail_safe_throttle", Some(self.fail_safe_throttle)),
            ("load_soft_timeout", self.soft_timeout),
            ("load_hard_timeout", self.hard_timeout),
        ];
        for (setting, value) in positive {
            if value.is_some_and(|value| value.is_zero()) {
                return Err(invalid(setting, "0s".into(), "must be longer than zero"));
            }
        }
        if self.fresh_for.is_none() {
            let needs = [
                ("stale_while_revalidate", self.stale_while_revalidate),
                ("fail_safe", self.fail_safe),
            ];
            for (setting, value) in needs {
                if let Some(value) = value {
                    return Err(invalid(
                        setting,
                        format!("{value:?}"),
                        "serving stale values needs `fresh_for`: without it a value never goes stale",
                    ));
                }
            }
            if let Some(beta) = self.early_refresh {
                return Err(invalid(
                    "early_refresh",
                    beta.to_string(),
                    "refreshing early needs `fresh_for`: without it a value never goes stale",
                ));
            }
        }
        if let Some(soft) = self.soft_timeout {
            if self.fail_safe.is_none() {
                return Err(invalid(
                    "load_soft_timeout",
                    format!("{soft:?}"),
                    "a soft timeout serves the fail-safe value: set `fail_safe` too",
                ));
            }
            if self.hard_timeout.is_some_and(|hard| hard <= soft) {
                return Err(invalid(
                    "load_soft_timeout",
                    format!("{soft:?}"),
                    "must be shorter than `load_hard_timeout`",
                ));
            }
        }
        if let Some(beta) = self.early_refresh
            && !(beta.is_finite() && beta > 0.0)
        {
            return Err(invalid(
                "early_refresh",
                beta.to_string(),
                "β must be a finite number above zero (1.0 is XFetch's optimum)",
            ));
        }
        Ok(())
    }

    /// XFetch (Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache Stampede
    /// Prevention", VLDB 2015): refresh when `now − cost·β·ln(u) ≥ fresh_until`, `u` uniform
    /// in (0, 1]. The more a value costs to load and the nearer it is to going stale, the
    /// likelier one reader refreshes it before anyone misses.
    ///
    /// The clock and the random draw (`unit`, uniform in [0, 1)) are read only for a value
    /// that can be refreshed early: a hit on any other reads neither.
    pub(crate) fn refresh_early<V>(
        &self,
        stamped: &Stamped<V>,
        now: &Now<'_>,
        unit: impl FnOnce() -> f64,
    ) -> bool {
        let Some(beta) = self.early_refresh else {
            return false;
        };
        if stamped.fresh_until == u64::MAX || stamped.cost == 0 {
            return false;
        }
        let gap = stamped.answers_until().saturating_sub(now.get()) as f64;
        let lead = f64::from(stamped.cost) * beta * -(1.0 - unit()).ln();
        lead >= gap
    }

    /// Whether a stale value may still be answered while one refresh runs behind it.
    pub(crate) fn revalidates<V>(&self, stamped: &Stamped<V>, now: u64) -> bool {
        self.stale_while_revalidate
            .is_some_and(|bound| stamped.stale_for(now) <= bound)
    }

    /// Whether a stale value may still answer for a failed or timed-out load.
    pub(crate) fn fails_safe<V>(&self, stamped: &Stamped<V>, now: u64) -> bool {
        self.fail_safe
            .is_some_and(|max| stamped.stale_for(now) <= max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Freshness {
        Freshness {
            fresh_for: Some(Duration::from_secs(60)),
            fail_safe_throttle: DEFAULT_THROTTLE,
            ..Freshness::default()
        }
    }

    #[test]
    fn xfetch_refreshes_more_often_near_expiry_and_for_costly_values() {
        let freshness = Freshness {
            early_refresh: Some(1.0),
            ..settings()
        };
        let clock = Clock::new();
        let now = Now::at(&clock, 1_000_000);
        let share = |cost: u32, gap: u64| {
            let stamped = Stamped::new((), 1_000_000 + gap, cost);
            let draws = 10_000;
            let hits = (0..draws)
                .filter(|&at| {
                    let unit = f64::from(at) / f64::from(draws);
                    freshness.refresh_early(&stamped, &now, || unit)
                })
                .count();
            hits as f64 / f64::from(draws)
        };
        // P(refresh) = exp(−gap / (cost·β)) over uniform u.
        assert!((share(100, 100) - (-1.0f64).exp()).abs() < 0.01);
        assert!((share(100, 10) - (-0.1f64).exp()).abs() < 0.01);
        assert!(share(100, 10_000) < 0.001, "far from expiry");
        assert!(
            share(1_000, 1_000) > share(10, 1_000),
            "costly values go first"
        );
        assert!(
            share(0, 0).abs() < f64::EPSILON,
            "inserted values have no cost"
        );
        let off = settings();
        let zero = Now::at(&clock, 0);
        assert!(!off.refresh_early(&Stamped::new((), 1, 100), &zero, || 0.99));
    }

    #[test]
    fn settings_that_cannot_work_together_are_refused() {
        let refused = |freshness: Freshness| match freshness.check::<()>() {
            Err(Error::Config { setting, .. }) => setting,
            other => panic!("accepted: {other:?}"),
        };
        let never_stale = Freshness {
            fresh_for: None,
            ..settings()
        };
        assert_eq!(
            refused(Freshness {
                fail_safe: Some(Duration::from_secs(1)),
                ..never_stale.clone()
            }),
            "fail_safe"
        );
        assert_eq!(
            refused(Freshness {
                early_refresh: Some(1.0),
                ..never_stale
            }),
            "early_refresh"
        );
        assert_eq!(
            refused(Freshness {
                soft_timeout: Some(Duration::from_millis(100)),
                ..settings()
            }),
            "load_soft_timeout"
        );
        assert_eq!(
            refused(Freshness {
                soft_timeout: Some(Duration::from_secs(2)),
                hard_timeout: Some(Duration::from_secs(1)),
                fail_safe: Some(Duration::from_secs(60)),
                ..settings()
            }),
            "load_soft_timeout"
        );
        assert_eq!(
            refused(Freshness {
                early_refresh: Some(f64::NAN),
                ..settings()
            }),
            "early_refresh"
        );
        assert_eq!(
            refused(Freshness {
                fresh_for: Some(Duration::ZERO),
                ..settings()
            }),
            "fresh_for"
        );
        assert!(settings().check::<()>().is_ok());
    }

    #[test]
    fn stamps_round_milliseconds_up() {
        assert_eq!(millis_up(Duration::from_micros(1)), 1);
        assert_eq!(millis_up(Duration::from_millis(3)), 3);
        assert_eq!(millis_up(Duration::from_micros(3_001)), 4);
        let stamped = Stamped::new(1, 5_000, 0);
        assert!(stamped.is_fresh(4_999) && !stamped.is_fresh(5_000));
        assert_eq!(stamped.stale_for(5_250), Duration::from_millis(250));
        assert_eq!(Stamped::new(1, u64::MAX, 0).fresh_until(), None);
        assert!(Stamped::new(1, u64::MAX, 0).is_fresh(u64::MAX - 1));
        // Answering past its freshness (fail-safe's throttle) does not make it younger.
        let throttled = stamped.answering_until(6_000);
        assert!(throttled.is_fresh(5_999) && !throttled.is_fresh(6_000));
        assert_eq!(throttled.stale_for(5_250), Duration::from_millis(250));
    }
}
