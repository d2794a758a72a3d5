//! What a [`MemoryCache`](crate::MemoryCache) reports to brisk-metrics, each series labelled
//! `name="<name>"`.

use brisk_metrics::{Counter, Description, Gauge, Histogram, Key, MetricKind, Recorder, Unit};

use crate::Cause;

/// Every metric this crate exports, each labelled `name="<name>"` of the cache or layer.
pub const METRICS: &[Description] = &[
    Description {
        name: "brisk_cache_hits_total",
        kind: MetricKind::Counter,
        help: "Memory cache lookups that found a live value.",
    },
    Description {
        name: "brisk_cache_misses_total",
        kind: MetricKind::Counter,
        help: "Memory cache lookups that found none.",
    },
    Description {
        name: "brisk_cache_inserts_total",
        kind: MetricKind::Counter,
        help: "Values offered to a memory cache, inserts and loads.",
    },
    Description {
        name: "brisk_cache_admissions_rejected_total",
        kind: MetricKind::Counter,
        help: "Newcomers a memory cache refused: less popular than what they would displace, or heavier than a shard.",
    },
    Description {
        name: "brisk_cache_evictions_total",
        kind: MetricKind::Counter,
        help: "Entries that left a memory cache, by cause (expired, size, replaced, removed).",
    },
    Description {
        name: "brisk_cache_load_duration_seconds",
        kind: MetricKind::Histogram(Unit::Seconds),
        help: "Time a memory cache's get_with or try_get_with load took, failed ones included.",
    },
    Description {
        name: "brisk_cache_load_failures_total",
        kind: MetricKind::Counter,
        help: "Memory cache loads that returned an error or panicked.",
    },
    Description {
        name: "brisk_cache_entries",
        kind: MetricKind::Gauge,
        help: "Entries a memory cache holds, expired ones not yet removed included.",
    },
    Description {
        name: "brisk_cache_weight",
        kind: MetricKind::Gauge,
        help: "Weight a memory cache holds (its entry count without a weigher).",
    },
    Description {
        name: "brisk_cache_tiered_hits_total",
        kind: MetricKind::Counter,
        help: "Tiered cache lookups answered fresh, by level (l1 memory, l2 remote).",
    },
    Description {
        name: "brisk_cache_tiered_misses_total",
        kind: MetricKind::Counter,
        help: "Tiered cache lookups neither level answered fresh.",
    },
    Description {
        name: "brisk_cache_tiered_load_duration_seconds",
        kind: MetricKind::Histogram(Unit::Seconds),
        help: "Time a tiered cache's load took, for loads that returned.",
    },
    Description {
        name: "brisk_cache_tiered_load_failures_total",
        kind: MetricKind::Counter,
        help: "Tiered cache loads that failed or panicked.",
    },
    Description {
        name: "brisk_cache_tiered_load_timeouts_total",
        kind: MetricKind::Counter,
        help: "Tiered cache loads past their soft or hard timeout.",
    },
    Description {
        name: "brisk_cache_tiered_remote_errors_total",
        kind: MetricKind::Counter,
        help: "Errors of a tiered cache's remote level that a load went past.",
    },
    Description {
        name: "brisk_cache_tiered_stale_served_total",
        kind: MetricKind::Counter,
        help: "Stale values a tiered cache answered with, by reason (stale_while_revalidate, load_failed, load_timeout).",
    },
    Description {
        name: "brisk_cache_tiered_early_refreshes_total",
        kind: MetricKind::Counter,
        help: "Values a tiered cache refreshed before they went stale.",
    },
    Description {
        name: "brisk_cache_redis_hits_total",
        kind: MetricKind::Counter,
        help: "Redis cache reads that found a value.",
    },
    Description {
        name: "brisk_cache_tiered_recovery_queued_total",
        kind: MetricKind::Counter,
        help: "Writes whose remote (L2) part failed in an outage and was queued for replay.",
    },
    Description {
        name: "brisk_cache_tiered_recovery_replayed_total",
        kind: MetricKind::Counter,
        help: "Queued remote (L2) writes replayed once the remote level answered again.",
    },
    Description {
        name: "brisk_cache_tiered_recovery_dropped_total",
        kind: MetricKind::Counter,
        help: "Queued remote (L2) writes given up: the queue was full, or the remote level refused the replay for good.",
    },
    Description {
        name: "brisk_cache_tiered_recovery_pending",
        kind: MetricKind::Gauge,
        help: "Remote (L2) writes waiting for the remote level to answer again.",
    },
    Description {
        name: "brisk_cache_redis_misses_total",
        kind: MetricKind::Counter,
        help: "Redis cache reads that found none.",
    },
    Description {
        name: "brisk_cache_redis_errors_total",
        kind: MetricKind::Counter,
        help: "Redis cache calls that failed or timed out.",
    },
    Description {
        name: "brisk_cache_redis_rejected_total",
        kind: MetricKind::Counter,
        help: "Redis cache calls refused by the open circuit breaker.",
    },
    Description {
        name: "brisk_cache_redis_circuit_state",
        kind: MetricKind::Gauge,
        help: "The Redis cache's circuit breaker: 0 closed, 1 open, 2 probing.",
    },
    Description {
        name: "brisk_cache_redis_circuit_opened_total",
        kind: MetricKind::Counter,
        help: "Times the Redis cache's circuit breaker opened.",
    },
    Description {
        name: "brisk_cache_backplane_messages_total",
        kind: MetricKind::Counter,
        help: "Invalidation messages on the backplane, by direction (sent, received from other instances).",
    },
    Description {
        name: "brisk_cache_backplane_gaps_total",
        kind: MetricKind::Counter,
        help: "Times the backplane may have missed messages (a sender's sequence skipped, or the subscription restarted); every value in the memory level is then treated as stale.",
    },
    Description {
        name: "brisk_cache_backplane_errors_total",
        kind: MetricKind::Counter,
        help: "Backplane messages not published (failed, refused by the breaker, not encodable, dropped from a full queue), messages that could not be decoded, and messages whose application panicked.",
    },
    Description {
        name: "brisk_cache_backplane_subscribed",
        kind: MetricKind::Gauge,
        help: "1 while the backplane's subscription is up, else 0.",
    },
    Description {
        name: "brisk_cache_http_not_modified_total",
        kind: MetricKind::Counter,
        help: "304 Not Modified responses sent.",
    },
    Description {
        name: "brisk_cache_http_precondition_failed_total",
        kind: MetricKind::Counter,
        help: "412 Precondition Failed responses sent.",
    },
    Description {
        name: "brisk_cache_http_bodies_hashed_total",
        kind: MetricKind::Counter,
        help: "Response bodies hashed for an entity tag.",
    },
    Description {
        name: "brisk_cache_http_bytes_saved_total",
        kind: MetricKind::Counter,
        help: "Body bytes that 304 responses did not send.",
    },
    Description {
        name: "brisk_cache_http_handler_calls_saved_total",
        kind: MetricKind::Counter,
        help: "Requests answered without running the handler.",
    },
    Description {
        name: "brisk_cache_http_responses_total",
        kind: MetricKind::Counter,
        help: "Requests through the response cache, by result (hit, miss, stale, pass).",
    },
    Description {
        name: "brisk_cache_write_behind_queued_total",
        kind: MetricKind::Counter,
        help: "Rows a write-behind acknowledged (cached and queued for its source).",
    },
    Description {
        name: "brisk_cache_write_behind_written_total",
        kind: MetricKind::Counter,
        help: "Rows a write-behind's source took, after repeated keys were coalesced.",
    },
    Description {
        name: "brisk_cache_write_behind_retries_total",
        kind: MetricKind::Counter,
        help: "Write-behind batches tried again after the source refused them.",
    },
    Description {
        name: "brisk_cache_write_behind_failed_batches_total",
        kind: MetricKind::Counter,
        help: "Write-behind batches that failed after every retry (or panicked), handed to the failure callback.",
    },
    Description {
        name: "brisk_cache_write_behind_failed_rows_total",
        kind: MetricKind::Counter,
        help: "Rows of the write-behind batches that failed.",
    },
    Description {
        name: "brisk_cache_write_behind_rejected_total",
        kind: MetricKind::Counter,
        help: "Write-behind puts refused because the queue stayed full.",
    },
];

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
        brisk_metrics::describe(recorder, METRICS);
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
