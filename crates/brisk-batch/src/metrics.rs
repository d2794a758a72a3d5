use brisk_metrics::{Counter, Description, Histogram, Key, MetricKind, Recorder, Unit};

/// Every metric this crate exports, each labelled `name="<name>"` of the loader or batcher.
pub const METRICS: &[Description] = &[
    Description {
        name: "brisk_batch_loads_total",
        kind: MetricKind::Counter,
        help: "Keys asked of a loader, cache hits included.",
    },
    Description {
        name: "brisk_batch_cache_hits_total",
        kind: MetricKind::Counter,
        help: "Keys a loader answered from its cache or joined to a batch already in flight.",
    },
    Description {
        name: "brisk_batch_batches_total",
        kind: MetricKind::Counter,
        help: "Calls of a loader's batch function.",
    },
    Description {
        name: "brisk_batch_batch_size",
        kind: MetricKind::Histogram(Unit::Count),
        help: "Distinct keys per call of a loader's batch function.",
    },
    Description {
        name: "brisk_batch_failures_total",
        kind: MetricKind::Counter,
        help: "Loader batches that failed whole, with an error or a panic.",
    },
    Description {
        name: "brisk_batch_write_items_total",
        kind: MetricKind::Counter,
        help: "Items submitted to a write batcher and queued.",
    },
    Description {
        name: "brisk_batch_writes_total",
        kind: MetricKind::Counter,
        help: "Calls of a write batcher's write function, retries included.",
    },
    Description {
        name: "brisk_batch_write_size",
        kind: MetricKind::Histogram(Unit::Count),
        help: "Items per batch a write batcher wrote.",
    },
    Description {
        name: "brisk_batch_write_retries_total",
        kind: MetricKind::Counter,
        help: "Writes repeated after a failure.",
    },
    Description {
        name: "brisk_batch_write_failures_total",
        kind: MetricKind::Counter,
        help: "Write batches whose failure reached their submitters.",
    },
];

/// Builds `name{label="value"}`: the names here are constants and label values may be any
/// text, so the key cannot be rejected.
fn key(name: &'static str, label: &'static str, value: &str) -> Key {
    Key::new(name)
        .and_then(|key| key.with_label(label, value.to_owned()))
        .expect("constant metric names with one label are valid")
}

/// What a [`Loader`](crate::Loader) reports, each labelled `name="<name>"`.
#[derive(Debug, Clone)]
pub(crate) struct LoadMetrics {
    /// `brisk_batch_loads_total`: keys asked for (cache hits included).
    pub(crate) loads: Counter,
    /// `brisk_batch_cache_hits_total`: keys answered from the cache, or joined to a batch
    /// already in flight.
    pub(crate) cache_hits: Counter,
    /// `brisk_batch_batches_total`: calls of the batch function.
    pub(crate) batches: Counter,
    /// `brisk_batch_batch_size`: distinct keys per call.
    pub(crate) batch_size: Histogram,
    /// `brisk_batch_failures_total`: batches that failed whole (an error or a panic).
    pub(crate) failures: Counter,
}

impl LoadMetrics {
    pub(crate) fn noop() -> Self {
        Self {
            loads: Counter::noop(),
            cache_hits: Counter::noop(),
            batches: Counter::noop(),
            batch_size: Histogram::noop(Unit::Count),
            failures: Counter::noop(),
        }
    }

    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        brisk_metrics::describe(recorder, METRICS);
        let counter = |metric| recorder.counter(&key(metric, "name", name));
        Self {
            loads: counter("brisk_batch_loads_total"),
            cache_hits: counter("brisk_batch_cache_hits_total"),
            batches: counter("brisk_batch_batches_total"),
            batch_size: recorder
                .histogram(&key("brisk_batch_batch_size", "name", name), Unit::Count),
            failures: counter("brisk_batch_failures_total"),
        }
    }
}

/// What a [`WriteBatcher`](crate::WriteBatcher) reports, each labelled `name="<name>"`.
#[derive(Debug, Clone)]
pub(crate) struct WriteMetrics {
    /// `brisk_batch_write_items_total`: items submitted and queued.
    pub(crate) items: Counter,
    /// `brisk_batch_writes_total`: calls of the write function (retries included).
    pub(crate) writes: Counter,
    /// `brisk_batch_write_size`: items per batch.
    pub(crate) write_size: Histogram,
    /// `brisk_batch_write_retries_total`: writes repeated after a failure.
    pub(crate) retries: Counter,
    /// `brisk_batch_write_failures_total`: batches whose failure reached their submitters.
    pub(crate) failures: Counter,
}

impl WriteMetrics {
    pub(crate) fn noop() -> Self {
        Self {
            items: Counter::noop(),
            writes: Counter::noop(),
            write_size: Histogram::noop(Unit::Count),
            retries: Counter::noop(),
            failures: Counter::noop(),
        }
    }

    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        brisk_metrics::describe(recorder, METRICS);
        let counter = |metric| recorder.counter(&key(metric, "name", name));
        Self {
            items: counter("brisk_batch_write_items_total"),
            writes: counter("brisk_batch_writes_total"),
            write_size: recorder
                .histogram(&key("brisk_batch_write_size", "name", name), Unit::Count),
            retries: counter("brisk_batch_write_retries_total"),
            failures: counter("brisk_batch_write_failures_total"),
        }
    }
}
