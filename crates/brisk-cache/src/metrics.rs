//! What a [`MemoryCache`](crate::MemoryCache) reports to brisk-metrics, each series labelled
//! `name="<name>"`.

use brisk_metrics::{Counter, Gauge, Histogram, Key, Recorder, Unit};

use crate::Cause;

/// Makes one instance's handles: each series labelled `name="<name>"`, and optionally with one
/// more label. The metric and label names are valid constants and label values may be any
/// text, so a key cannot fail; if one did, its series would be missing (tested), not a panic.
#[derive(Clone, Copy)]
pub(crate) struct Series<'a> {
    recorder: &'a dyn Recorder,
    name: &'a str,
}

impl<'a> Series<'a> {
    pub(crate) fn new(recorder: &'a dyn Recorder, name: &'a str) -> Self {
        Self { recorder, name }
    }

    fn key(self, metric: &'static str, label: Option<(&'static str, &'static str)>) -> Option<Key> {
        let key = Key::new(metric).and_then(|key| key.with_label("name", self.name.to_owned()));
        match label {
            Some((label, value)) => key.and_then(|key| key.with_label(label, value)),
            None => key,
        }
        .ok()
    }

    pub(crate) fn counter(self, metric: &'static str) -> Counter {
        self.counter_with(metric, None)
    }

    /// A counter with one more label, `label=value`.
    pub(crate) fn counter_with(
        self,
        metric: &'static str,
        label: Option<(&'static str, &'static str)>,
    ) -> Counter {
        self.key(metric, label)
            .map_or_else(Counter::noop, |key| self.recorder.counter(&key))
    }

    pub(crate) fn gauge(self, metric: &'static str) -> Gauge {
        self.key(metric, None)
            .map_or_else(Gauge::noop, |key| self.recorder.gauge(&key))
    }

    pub(crate) fn seconds(self, metric: &'static str) -> Histogram {
        self.key(metric, None).map_or_else(
            || Histogram::noop(Unit::Seconds),
            |key| self.recorder.histogram(&key, Unit::Seconds),
        )
    }
}

/// The handles, all no-ops until [`MemoryCacheBuilder::metrics`](crate::MemoryCacheBuilder::metrics)
/// is called.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// Whether any handle records: the hit path skips its counting when none does.
    pub(crate) enabled: bool,
    /// `brisk_cache_hits_total`: lookups that found a live value.
    pub(crate) hits: Counter,
    /// `brisk_cache_misses_total`: lookups that found none.
    pub(crate) misses: Counter,
    /// `brisk_cache_inserts_total`: values offered to the cache (inserts and loads).
    pub(crate) inserts: Counter,
    /// `brisk_cache_admissions_rejected_total`: newcomers refused (less popular than what they
    /// would displace, or heavier than a shard); also counted as evictions with cause `size`.
    pub(crate) rejected: Counter,
    /// `brisk_cache_evictions_total{cause}`: entries that left, by [`Cause`], as the eviction
    /// listener is told.
    evictions: [Counter; 4],
    /// `brisk_cache_load_duration_seconds`: loads run by `get_with`/`try_get_with`, failed
    /// ones included.
    pub(crate) load: Histogram,
    /// `brisk_cache_load_failures_total`: loads that returned an error or panicked.
    pub(crate) load_failures: Counter,
    /// `brisk_cache_entries`: entries held (expired ones not yet removed included).
    pub(crate) entries: Gauge,
    /// `brisk_cache_weight`: weight held (the entry count without a weigher).
    pub(crate) weight: Gauge,
}

/// `Cause` to its label value and slot.
const CAUSES: [(Cause, &str); 4] = [
    (Cause::Expired, "expired"),
    (Cause::Size, "size"),
    (Cause::Replaced, "replaced"),
    (Cause::Removed, "removed"),
];

impl Metrics {
    pub(crate) fn noop() -> Self {
        Self {
            enabled: false,
            hits: Counter::noop(),
            misses: Counter::noop(),
            inserts: Counter::noop(),
            rejected: Counter::noop(),
            evictions: [(); 4].map(|()| Counter::noop()),
            load: Histogram::noop(Unit::Seconds),
            load_failures: Counter::noop(),
            entries: Gauge::noop(),
            weight: Gauge::noop(),
        }
    }

    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        Self {
            enabled: true,
            hits: series.counter("brisk_cache_hits_total"),
            misses: series.counter("brisk_cache_misses_total"),
            inserts: series.counter("brisk_cache_inserts_total"),
            rejected: series.counter("brisk_cache_admissions_rejected_total"),
            evictions: CAUSES.map(|(_, cause)| {
                series.counter_with("brisk_cache_evictions_total", Some(("cause", cause)))
            }),
            load: series.seconds("brisk_cache_load_duration_seconds"),
            load_failures: series.counter("brisk_cache_load_failures_total"),
            entries: series.gauge("brisk_cache_entries"),
            weight: series.gauge("brisk_cache_weight"),
        }
    }

    pub(crate) fn evicted(&self, cause: Cause) {
        if let Some(slot) = CAUSES.iter().position(|(known, _)| *known == cause) {
            self.evictions[slot].increment();
        }
    }
}
