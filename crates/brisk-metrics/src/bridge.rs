use std::{fmt, sync::Arc};

use crate::{
    key::Key,
    recorder::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, MetricKind, Recorder, Unit,
    },
};

/// A [`Recorder`] that forwards to the `metrics` crate facade (the recorder installed with
/// `metrics::set_global_recorder`, or a local one in scope when a handle is registered), so a
/// service already exporting through metrics-exporter-prometheus gets brisk's series unchanged.
///
/// Names and labels pass through as they are; durations ([`Unit::Seconds`]) are sent in
/// seconds as `f64`, other histograms as their value.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsRsRecorder;

fn labels(key: &Key) -> Vec<metrics::Label> {
    key.labels()
        .map(|(k, v)| metrics::Label::new(k.to_owned(), v.to_owned()))
        .collect()
}

struct Forward<T>(T, f64);

impl<T> fmt::Debug for Forward<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Forward(metrics)")
    }
}

impl HistogramFn for Forward<metrics::Histogram> {
    fn record(&self, value: u64) {
        self.0.record(value as f64 * self.1);
    }
}

impl CounterFn for Forward<metrics::Counter> {
    fn increment(&self, n: u64) {
        self.0.increment(n);
    }
}

impl GaugeFn for Forward<metrics::Gauge> {
    fn set(&self, value: i64) {
        self.0.set(value as f64);
    }

    fn add(&self, delta: i64) {
        if delta >= 0 {
            self.0.increment(delta as f64);
        } else {
            self.0.decrement(delta.unsigned_abs() as f64);
        }
    }
}

impl Recorder for MetricsRsRecorder {
    fn histogram(&self, key: &Key, unit: Unit) -> Histogram {
        let h = metrics::histogram!(key.name().to_owned(), labels(key));
        Histogram::from_fn(unit, Arc::new(Forward(h, unit.scale())))
    }

    fn counter(&self, key: &Key) -> Counter {
        let c = metrics::counter!(key.name().to_owned(), labels(key));
        Counter::from_fn(Arc::new(Forward(c, 1.0)))
    }

    fn gauge(&self, key: &Key) -> Gauge {
        let g = metrics::gauge!(key.name().to_owned(), labels(key));
        Gauge::from_fn(Arc::new(Forward(g, 1.0)))
    }

    /// Forwards to `metrics::describe_counter!` / `describe_gauge!` / `describe_histogram!`
    /// (durations with `metrics::Unit::Seconds`, sizes with `Bytes`).
    fn describe(&self, name: &str, kind: MetricKind, help: &str) {
        let (name, help) = (name.to_owned(), help.to_owned());
        match kind {
            MetricKind::Counter => metrics::describe_counter!(name, help),
            MetricKind::Gauge => metrics::describe_gauge!(name, help),
            MetricKind::Histogram(Unit::Seconds) => {
                metrics::describe_histogram!(name, metrics::Unit::Seconds, help);
            }
            MetricKind::Histogram(Unit::Bytes) => {
                metrics::describe_histogram!(name, metrics::Unit::Bytes, help);
            }
            MetricKind::Histogram(_) => metrics::describe_histogram!(name, help),
        }
    }
}
