#[cfg(feature = "registry")]
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::{
    fmt,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

#[cfg(feature = "registry")]
use crate::atomic::{AtomicHistogram, StripedCounter};
use crate::key::Key;

/// What a histogram measures, which fixes how its values are stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Unit {
    /// Durations: stored as whole microseconds, shown (Prometheus, JSON) in seconds.
    Seconds,
    /// Sizes in bytes, stored and shown as recorded.
    Bytes,
    /// Plain counts (batch sizes, rows), stored and shown as recorded.
    Count,
}

impl Unit {
    /// Factor from the stored integer to the shown value.
    #[cfg(any(feature = "registry", feature = "metrics-rs"))]
    pub(crate) fn scale(self) -> f64 {
        match self {
            Self::Seconds => 1e-6,
            Self::Bytes | Self::Count => 1.0,
        }
    }
}

/// Where the brisk crates (and services) send measurements.
///
/// Registering returns a cheap, cloneable handle; recording through a handle never looks up a
/// name again. Implementations: [`Registry`](crate::Registry) (the default, lock-free),
/// [`NoopRecorder`] (metrics off, next to no cost) and, with feature `metrics-rs`,
/// `MetricsRsRecorder` (forwards to the `metrics` facade).
///
/// # Contract
/// Registering the same key twice returns handles to the same series. Registering never fails:
/// a recorder that must refuse a series (say, beyond a cardinality cap) returns a handle to a
/// fallback series or a no-op handle, and documents which.
pub trait Recorder: Send + Sync + fmt::Debug {
    /// A histogram for `key`, measured in `unit`.
    fn histogram(&self, key: &Key, unit: Unit) -> Histogram;
    /// A monotonically increasing counter for `key`.
    fn counter(&self, key: &Key) -> Counter;
    /// A gauge (a value that goes up and down) for `key`.
    fn gauge(&self, key: &Key) -> Gauge;
    /// Says what the metric `name` measures, for people reading it: Prometheus' `# HELP`
    /// text. The first description of a name wins. Recorders that keep none ignore it (the
    /// default).
    fn describe(&self, name: &str, kind: MetricKind, help: &str) {
        let _ = (name, kind, help);
    }
}

/// The kind of a metric, as a [`Description`] states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonically increasing count; its name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of values in a unit.
    Histogram(Unit),
}

/// One metric a component exports: its name, kind and help text. Each brisk crate lists its
/// own in a `METRICS` table (for dashboards and alert rules) and describes them on the
/// recorder it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Description {
    /// The metric's name (without the `_bucket`/`_sum`/`_count` suffixes of a histogram).
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// What it measures, in one sentence.
    pub help: &'static str,
}

/// Describes each of `metrics` on `recorder` ([`Recorder::describe`]).
pub fn describe(recorder: &dyn Recorder, metrics: &[Description]) {
    for metric in metrics {
        recorder.describe(metric.name, metric.kind, metric.help);
    }
}

impl<R: Recorder + ?Sized> Recorder for Arc<R> {
    fn histogram(&self, key: &Key, unit: Unit) -> Histogram {
        (**self).histogram(key, unit)
    }
    fn counter(&self, key: &Key) -> Counter {
        (**self).counter(key)
    }
    fn gauge(&self, key: &Key) -> Gauge {
        (**self).gauge(key)
    }
    fn describe(&self, name: &str, kind: MetricKind, help: &str) {
        (**self).describe(name, kind, help);
    }
}

impl<R: Recorder + ?Sized> Recorder for &R {
    fn histogram(&self, key: &Key, unit: Unit) -> Histogram {
        (**self).histogram(key, unit)
    }
    fn counter(&self, key: &Key) -> Counter {
        (**self).counter(key)
    }
    fn gauge(&self, key: &Key) -> Gauge {
        (**self).gauge(key)
    }
    fn describe(&self, name: &str, kind: MetricKind, help: &str) {
        (**self).describe(name, kind, help);
    }
}

/// A recorder that records nothing: every handle it returns is a no-op costing one branch.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopRecorder;

impl Recorder for NoopRecorder {
    fn histogram(&self, _: &Key, unit: Unit) -> Histogram {
        Histogram::noop(unit)
    }
    fn counter(&self, _: &Key) -> Counter {
        Counter::noop()
    }
    fn gauge(&self, _: &Key) -> Gauge {
        Gauge::noop()
    }
}

/// Receives histogram values for a custom [`Recorder`].
pub trait HistogramFn: Send + Sync + fmt::Debug {
    /// One value in the histogram's stored unit (microseconds for [`Unit::Seconds`]).
    fn record(&self, value: u64);
}

/// Receives counter increments for a custom [`Recorder`].
pub trait CounterFn: Send + Sync + fmt::Debug {
    /// Adds `n`.
    fn increment(&self, n: u64);
}

/// Receives gauge updates for a custom [`Recorder`].
pub trait GaugeFn: Send + Sync + fmt::Debug {
    /// Sets the value.
    fn set(&self, value: i64);
    /// Adds `delta` (which may be negative).
    fn add(&self, delta: i64);
}

#[derive(Clone, Debug)]
enum HistogramInner {
    Noop,
    #[cfg(feature = "registry")]
    Local(Arc<AtomicHistogram>),
    Custom(Arc<dyn HistogramFn>),
}

/// A handle to one histogram series. Cloning is cheap; all clones record into the same series.
#[derive(Clone, Debug)]
pub struct Histogram {
    inner: HistogramInner,
    unit: Unit,
}

impl Histogram {
    /// A handle that records nothing.
    pub fn noop(unit: Unit) -> Self {
        Self {
            inner: HistogramInner::Noop,
            unit,
        }
    }

    /// Whether this handle records nothing (metrics off): a caller can skip work that only
    /// feeds it.
    pub fn is_noop(&self) -> bool {
        matches!(self.inner, HistogramInner::Noop)
    }

    /// A handle for a custom [`Recorder`] that forwards every value to `f`.
    pub fn from_fn(unit: Unit, f: Arc<dyn HistogramFn>) -> Self {
        Self {
            inner: HistogramInner::Custom(f),
            unit,
        }
    }

    #[cfg(feature = "registry")]
    pub(crate) fn local(unit: Unit, series: Arc<AtomicHistogram>) -> Self {
        Self {
            inner: HistogramInner::Local(series),
            unit,
        }
    }

    /// The unit this histogram measures.
    pub fn unit(&self) -> Unit {
        self.unit
    }

    /// Records one value in the stored unit: microseconds for [`Unit::Seconds`], else as is.
    /// Values above the histogram's highest trackable value are recorded as that value and
    /// counted in the series' `saturated` figure.
    #[inline]
    pub fn record(&self, value: u64) {
        match &self.inner {
            HistogramInner::Noop => {}
            #[cfg(feature = "registry")]
            HistogramInner::Local(series) => series.record(value),
            HistogramInner::Custom(f) => f.record(value),
        }
    }

    /// Records a duration as whole microseconds (saturating at `u64::MAX`).
    #[inline]
    pub fn record_duration(&self, duration: Duration) {
        self.record(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX));
    }

    /// Starts a timer that records the elapsed time when dropped (so also on early return,
    /// error and cancellation) or when [`Timer::stop`] is called.
    pub fn start_timer(&self) -> Timer {
        Timer {
            histogram: Some(self.clone()),
            started: Instant::now(),
        }
    }

    /// Runs `future` and records how long it took, including when it is dropped before it
    /// completes (a cancelled request still took that long).
    pub fn time<F: Future>(&self, future: F) -> impl Future<Output = F::Output> + use<F> {
        let timer = self.start_timer();
        async move {
            let _timer = timer;
            future.await
        }
    }
}

/// Records the time since it started into a histogram when dropped; from
/// [`Histogram::start_timer`].
#[derive(Debug)]
#[must_use = "a timer records when dropped; bind it to a variable that lives for the timed scope"]
pub struct Timer {
    histogram: Option<Histogram>,
    started: Instant,
}

impl Timer {
    /// Records now and returns the elapsed time.
    pub fn stop(mut self) -> Duration {
        let elapsed = self.started.elapsed();
        if let Some(h) = self.histogram.take() {
            h.record_duration(elapsed);
        }
        elapsed
    }

    /// Drops the timer without recording.
    pub fn discard(mut self) {
        self.histogram = None;
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let Some(h) = self.histogram.take() {
            h.record_duration(self.started.elapsed());
        }
    }
}

#[derive(Clone, Debug)]
enum CounterInner {
    Noop,
    #[cfg(feature = "registry")]
    Local(Arc<StripedCounter>),
    Custom(Arc<dyn CounterFn>),
}

/// A handle to one counter series.
#[derive(Clone, Debug)]
pub struct Counter(CounterInner);

impl Counter {
    /// A handle that counts nothing.
    pub fn noop() -> Self {
        Self(CounterInner::Noop)
    }

    /// Whether this handle counts nothing (metrics off).
    pub fn is_noop(&self) -> bool {
        matches!(self.0, CounterInner::Noop)
    }

    /// A handle for a custom [`Recorder`].
    pub fn from_fn(f: Arc<dyn CounterFn>) -> Self {
        Self(CounterInner::Custom(f))
    }

    #[cfg(feature = "registry")]
    pub(crate) fn local(series: Arc<StripedCounter>) -> Self {
        Self(CounterInner::Local(series))
    }

    /// Adds one.
    #[inline]
    pub fn increment(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        match &self.0 {
            CounterInner::Noop => {}
            #[cfg(feature = "registry")]
            CounterInner::Local(c) => c.add(n),
            CounterInner::Custom(f) => f.increment(n),
        }
    }
}

#[derive(Clone, Debug)]
enum GaugeInner {
    Noop,
    #[cfg(feature = "registry")]
    Local(Arc<AtomicI64>),
    Custom(Arc<dyn GaugeFn>),
}

/// A handle to one gauge series: an integer that goes up and down (connections in use, queue
/// depth). Ratios are derived from counters on read instead; see
/// [`Snapshot::ratio`](crate::Snapshot::ratio).
#[derive(Clone, Debug)]
pub struct Gauge(GaugeInner);

impl Gauge {
    /// A handle that does nothing.
    pub fn noop() -> Self {
        Self(GaugeInner::Noop)
    }

    /// Whether this handle does nothing (metrics off).
    pub fn is_noop(&self) -> bool {
        matches!(self.0, GaugeInner::Noop)
    }

    /// A handle for a custom [`Recorder`].
    pub fn from_fn(f: Arc<dyn GaugeFn>) -> Self {
        Self(GaugeInner::Custom(f))
    }

    #[cfg(feature = "registry")]
    pub(crate) fn local(series: Arc<AtomicI64>) -> Self {
        Self(GaugeInner::Local(series))
    }

    /// Sets the value.
    #[inline]
    pub fn set(&self, value: i64) {
        match &self.0 {
            GaugeInner::Noop => {}
            #[cfg(feature = "registry")]
            GaugeInner::Local(g) => g.store(value, Relaxed),
            GaugeInner::Custom(f) => f.set(value),
        }
    }

    /// Adds `delta` (negative to subtract), wrapping on overflow.
    #[inline]
    pub fn add(&self, delta: i64) {
        match &self.0 {
            GaugeInner::Noop => {}
            #[cfg(feature = "registry")]
            GaugeInner::Local(g) => {
                g.fetch_add(delta, Relaxed);
            }
            GaugeInner::Custom(f) => f.add(delta),
        }
    }

    /// Adds one.
    #[inline]
    pub fn increment(&self) {
        self.add(1);
    }

    /// Subtracts one.
    #[inline]
    pub fn decrement(&self) {
        self.add(-1);
    }
}
