use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock, atomic::AtomicI64},
    time::Duration,
};

use crate::{
    atomic::{self, AtomicHistogram, Config, Merged, StripedCounter},
    collect::Collector,
    error::{Error, Result},
    key::Key,
    recorder::{Counter, Description, Gauge, Histogram, MetricKind, Recorder, Unit},
    snapshot::{self, SampleKind, SampleSnapshot, Snapshot},
};

/// Names of the registry's own counters, exported with the rest.
const OVERFLOW_METRIC: &str = "brisk_metrics_label_overflow_total";
const CONFLICT_METRIC: &str = "brisk_metrics_kind_conflicts_total";

/// The default [`Recorder`]: lock-free hdrhistogram-compatible histograms, striped counters
/// and gauges, with bounded memory. Cloning is cheap and shares the series.
///
/// ```
/// use std::time::Duration;
/// use brisk_metrics::{Key, Recorder, Registry, Unit};
///
/// # fn main() -> Result<(), brisk_metrics::Error> {
/// let registry = Registry::new();
/// let latency = registry.histogram(&Key::new("query_seconds")?, Unit::Seconds);
/// latency.record_duration(Duration::from_millis(3));
///
/// let snapshot = registry.snapshot();
/// let q = snapshot.histogram("query_seconds", &[]).unwrap();
/// assert_eq!(q.count, 1);
/// assert!((q.p99 - 0.003).abs() < 0.003 * 0.01);
/// # Ok(())
/// # }
/// ```
///
/// # Memory
/// A histogram holds `stripes × (touched power-of-two value ranges) × 8 KiB` at most (3
/// significant digits); see `cargo xtask bench metrics` for measured figures. Each metric name
/// has at most [`max_label_sets`](RegistryBuilder::max_label_sets) series; further label sets
/// record into the series labelled `overflow="true"` and are counted in
/// `brisk_metrics_label_overflow_total`, so memory never grows without bound.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    state: RwLock<State>,
    overflowed: StripedCounter,
    conflicts: StripedCounter,
    collectors: RwLock<Vec<Arc<dyn Collector>>>,
}

#[derive(Debug, Clone)]
struct Settings {
    duration: Config,
    value: Config,
    stripes: usize,
    max_label_sets: usize,
    buckets: HashMap<Unit, Vec<f64>>,
}

#[derive(Debug, Default)]
struct State {
    series: BTreeMap<Key, Series>,
    /// Per metric name: its kind and how many label sets it has.
    names: HashMap<String, (Kind, usize)>,
    /// Per metric name: its help text, from [`Recorder::describe`].
    help: HashMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Histogram,
    Counter,
    Gauge,
}

#[derive(Debug, Clone)]
pub(crate) enum Series {
    Histogram(Unit, Arc<AtomicHistogram>),
    Counter(Arc<StripedCounter>),
    Gauge(Arc<AtomicI64>),
}

/// Configures a [`Registry`]; from [`Registry::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build()` is called"]
pub struct RegistryBuilder {
    settings: Settings,
}

impl Default for RegistryBuilder {
    fn default() -> Self {
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let bytes = [
            256.0,
            1024.0,
            4096.0,
            16384.0,
            65536.0,
            262_144.0,
            1_048_576.0,
            4_194_304.0,
        ];
        let counts = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];
        Self {
            settings: Settings {
                duration: Config {
                    low: 1,
                    high: 3_600_000_000,
                    sigfig: 2,
                },
                value: Config {
                    low: 1,
                    high: 1 << 40,
                    sigfig: 2,
                },
                stripes: atomic::default_stripes(),
                max_label_sets: crate::key::DEFAULT_MAX_LABEL_SETS,
                buckets: HashMap::from([
                    (Unit::Seconds, seconds.to_vec()),
                    (Unit::Bytes, bytes.to_vec()),
                    (Unit::Count, counts.to_vec()),
                ]),
            },
        }
    }
}

impl RegistryBuilder {
    /// The range of durations histograms track. Default: 1 µs to 1 h. Durations below 1 µs are
    /// recorded as 0; above the maximum, as the maximum (and counted as saturated).
    pub fn duration_range(mut self, min: Duration, max: Duration) -> Self {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.settings.duration.low = micros(min).max(1);
        self.settings.duration.high = micros(max);
        self
    }

    /// The range of values that [`Unit::Bytes`] and [`Unit::Count`] histograms track.
    /// Default: 1 to 2⁴⁰.
    pub fn value_range(mut self, low: u64, high: u64) -> Self {
        self.settings.value.low = low;
        self.settings.value.high = high;
        self
    }

    /// Significant decimal digits every histogram keeps (0 to 5). Default: 2, i.e. values are
    /// accurate to 1 %. Each digit more costs about 8× the memory per series and per snapshot
    /// (3 digits: 0.1 %, about 60 KiB for latencies over 1 µs..100 ms).
    pub fn significant_digits(mut self, digits: u8) -> Self {
        self.settings.duration.sigfig = digits;
        self.settings.value.sigfig = digits;
        self
    }

    /// At most this many label sets per metric name; further ones share the
    /// `overflow="true"` series. Default: 1000.
    pub fn max_label_sets(mut self, max: usize) -> Self {
        self.settings.max_label_sets = max;
        self
    }

    /// How many stripes each histogram and counter spreads concurrent writers over (rounded
    /// up to a power of two). Default: the machine's parallelism, at most 8. More stripes mean
    /// less contention and more memory per series. 0 is refused by [`build`](Self::build).
    pub fn stripes(mut self, stripes: usize) -> Self {
        self.settings.stripes = stripes;
        self
    }

    /// The upper bounds (in the unit's shown value, e.g. seconds) of the cumulative buckets
    /// exported for histograms of `unit`. Default for seconds: 0.5 ms to 10 s.
    pub fn buckets(mut self, unit: Unit, bounds: Vec<f64>) -> Self {
        self.settings.buckets.insert(unit, bounds);
        self
    }

    /// Validates the configuration and builds the registry.
    ///
    /// # Errors
    /// [`Error::Config`] for ranges or precision hdrhistogram cannot represent, bucket bounds
    /// that are empty, not finite or not increasing, or a label-set cap or stripe count of 0.
    pub fn build(self) -> Result<Registry> {
        let s = self.settings;
        s.duration.hdr_for("duration_range")?;
        s.value.hdr_for("value_range")?;
        let refuse = |setting, value: String, reason| {
            Err(Error::Config {
                setting,
                value,
                reason,
            })
        };
        if s.max_label_sets == 0 {
            return refuse("max_label_sets", "0".into(), "at least 1 label set");
        }
        if s.stripes == 0 {
            return refuse("stripes", "0".into(), "at least 1 stripe");
        }
        for (unit, bounds) in &s.buckets {
            let increasing = bounds.windows(2).all(|w| w[0] < w[1]);
            if bounds.is_empty() || !increasing || bounds.iter().any(|b| !b.is_finite()) {
                return refuse(
                    "buckets",
                    format!("{unit:?} {bounds:?}"),
                    "finite, strictly increasing bounds, at least one",
                );
            }
        }
        let registry = Registry {
            inner: Arc::new(Inner {
                overflowed: StripedCounter::new(1),
                conflicts: StripedCounter::new(1),
                collectors: RwLock::new(Vec::new()),
                settings: s,
                state: RwLock::default(),
            }),
        };
        crate::describe(&registry, METRICS);
        Ok(registry)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry with the default configuration.
    pub fn new() -> Self {
        RegistryBuilder::default()
            .build()
            .expect("the default configuration is valid")
    }

    /// A builder for ranges, precision, stripes, cardinality cap and exported buckets.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Returns the series for `key`, creating it if needed (within the label-set cap), or
    /// `None` when the name is already used by another kind of metric.
    fn series(&self, key: &Key, kind: Kind, create: impl FnOnce() -> Series) -> Option<Series> {
        if let Some(series) = self.read().series.get(key) {
            return self.same_kind(series, kind);
        }
        let mut state = self.write();
        let state = &mut *state;
        if let Some(series) = state.series.get(key) {
            return self.same_kind(series, kind);
        }
        let entry = state
            .names
            .entry(key.name().to_owned())
            .or_insert((kind, 0));
        if entry.0 != kind {
            self.inner.conflicts.add(1);
            return None;
        }
        let key = if entry.1 >= self.inner.settings.max_label_sets {
            self.inner.overflowed.add(1);
            key.overflow()
        } else {
            key.clone()
        };
        let series = state.series.entry(key).or_insert_with(|| {
            entry.1 += 1;
            create()
        });
        Some(series.clone())
    }

    fn same_kind(&self, series: &Series, kind: Kind) -> Option<Series> {
        if series.kind() == kind {
            Some(series.clone())
        } else {
            self.inner.conflicts.add(1);
            None
        }
    }

    /// The state, also after a thread panicked holding its lock: every change to it is
    /// complete before anything that can panic, so it is never left half-made.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The help texts described so far.
    fn help(&self) -> HashMap<String, String> {
        self.read().help.clone()
    }

    /// A point-in-time view of every series, cumulative since the registry was created.
    pub fn snapshot(&self) -> Snapshot {
        // Histograms are merged as the snapshot summarises them, one buffer for all.
        let series = self.collect(false);
        let mut snapshot = snapshot::build(
            series
                .into_iter()
                .map(|(key, series, hdr)| (key, series, hdr, None)),
            &self.inner.settings.buckets,
            self.meta_counters(),
            self.help(),
        );
        self.add_collected(&mut snapshot);
        snapshot
    }

    /// Adds `collector`'s values to every later [`snapshot`](Self::snapshot), Prometheus text
    /// and [`Interval`] snapshot (there, counter samples as their growth since the previous
    /// one). Its descriptions become `# HELP` lines.
    ///
    /// ```
    /// # #[cfg(all(feature = "process", target_os = "linux"))]
    /// # {
    /// use brisk_metrics::{Registry, process::ProcessCollector};
    ///
    /// let registry = Registry::new();
    /// registry.register_collector(ProcessCollector::new());
    /// let text = registry.prometheus_text();
    /// assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
    /// # }
    /// ```
    pub fn register_collector(&self, collector: impl Collector + 'static) {
        self.inner
            .collectors
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Arc::new(collector));
    }

    /// Runs the collectors into `snapshot`, leaving out samples that clash with recorded
    /// series or are not valid metric names.
    fn add_collected(&self, snapshot: &mut Snapshot) {
        let collectors = self
            .inner
            .collectors
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if collectors.is_empty() {
            return;
        }
        let mut samples: Vec<SampleSnapshot> = Vec::new();
        for collector in &collectors {
            collector.collect(&mut samples);
        }
        let before = samples.len();
        let valid = |sample: &SampleSnapshot| -> Result<Key> {
            sample
                .labels
                .iter()
                .try_fold(Key::new(sample.name.clone())?, |key, (k, v)| {
                    key.with_label(k.clone(), v.clone())
                })
        };
        let recorded = snapshot.recorded_names();
        samples.retain(|sample| !recorded.contains(sample.name.as_str()) && valid(sample).is_ok());
        drop(recorded);
        let refused = before - samples.len();
        samples.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        // Help for the names sampled (the recorded ones have theirs from `build`).
        for description in collectors.iter().flat_map(|collector| collector.describe()) {
            if samples
                .binary_search_by(|sample| sample.name.as_str().cmp(description.name))
                .is_ok()
            {
                snapshot
                    .help
                    .entry(description.name.to_owned())
                    .or_insert_with(|| description.help.to_owned());
            }
        }
        if refused > 0 {
            self.inner.conflicts.add(refused as u64);
            if let Some(conflicts) = snapshot
                .counters
                .iter_mut()
                .find(|c| c.name == CONFLICT_METRIC)
            {
                conflicts.value += refused as u64;
            }
        }
        snapshot.samples = samples;
    }

    /// A tracker whose [`Interval::snapshot`] returns what happened since its previous call.
    pub fn interval(&self) -> Interval {
        Interval {
            registry: self.clone(),
            previous: HashMap::new(),
            previous_samples: HashMap::new(),
        }
    }

    /// The Prometheus text exposition of [`snapshot`](Self::snapshot), ready to serve.
    pub fn prometheus_text(&self) -> String {
        self.snapshot().to_prometheus()
    }

    /// Bytes of heap held by histogram counts right now (for capacity planning).
    pub fn histogram_heap_bytes(&self) -> usize {
        let state = self.read();
        state
            .series
            .values()
            .map(|s| match s {
                Series::Histogram(_, h) => h.heap_bytes(),
                _ => 0,
            })
            .sum()
    }

    /// Every series, with each histogram's merged counts if `merge`.
    fn collect(&self, merge: bool) -> Vec<(Key, Series, Option<Merged>)> {
        let series: Vec<(Key, Series)> = {
            let state = self.read();
            state
                .series
                .iter()
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect()
        };
        series
            .into_iter()
            .map(|(key, series)| {
                let merged = match &series {
                    Series::Histogram(_, h) if merge => Some(h.merged()),
                    _ => None,
                };
                (key, series, merged)
            })
            .collect()
    }

    fn meta_counters(&self) -> [(Key, u64); 2] {
        [
            (
                Key::new(OVERFLOW_METRIC).expect("valid"),
                self.inner.overflowed.get(),
            ),
            (
                Key::new(CONFLICT_METRIC).expect("valid"),
                self.inner.conflicts.get(),
            ),
        ]
    }
}

impl Series {
    fn kind(&self) -> Kind {
        match self {
            Self::Histogram(..) => Kind::Histogram,
            Self::Counter(_) => Kind::Counter,
            Self::Gauge(_) => Kind::Gauge,
        }
    }
}

impl Recorder for Registry {
    /// The histogram for `key`. Its unit is fixed by the first registration of the key; a name
    /// already used by a counter or gauge gets a no-op handle (counted in
    /// `brisk_metrics_kind_conflicts_total`).
    fn histogram(&self, key: &Key, unit: Unit) -> Histogram {
        let config = match unit {
            Unit::Seconds => self.inner.settings.duration,
            Unit::Bytes | Unit::Count => self.inner.settings.value,
        };
        let stripes = self.inner.settings.stripes;
        match self.series(key, Kind::Histogram, || {
            let series = AtomicHistogram::new(config, stripes).expect("validated in build()");
            Series::Histogram(unit, Arc::new(series))
        }) {
            Some(Series::Histogram(unit, h)) => Histogram::local(unit, h),
            _ => Histogram::noop(unit),
        }
    }

    /// The counter for `key`; a name used by another kind gets a no-op handle.
    fn counter(&self, key: &Key) -> Counter {
        let stripes = self.inner.settings.stripes;
        match self.series(key, Kind::Counter, || {
            Series::Counter(Arc::new(StripedCounter::new(stripes)))
        }) {
            Some(Series::Counter(c)) => Counter::local(c),
            _ => Counter::noop(),
        }
    }

    /// The gauge for `key`; a name used by another kind gets a no-op handle.
    fn gauge(&self, key: &Key) -> Gauge {
        match self.series(key, Kind::Gauge, || Series::Gauge(Arc::default())) {
            Some(Series::Gauge(g)) => Gauge::local(g),
            _ => Gauge::noop(),
        }
    }

    /// Keeps `help` as the `# HELP` text of `name`, unless it already has one.
    fn describe(&self, name: &str, _kind: MetricKind, help: &str) {
        if self.read().help.contains_key(name) {
            return;
        }
        self.write()
            .help
            .entry(name.to_owned())
            .or_insert_with(|| help.to_owned());
    }
}

/// The metrics a [`Registry`] exports about itself.
pub const METRICS: &[Description] = &[
    Description {
        name: OVERFLOW_METRIC,
        kind: MetricKind::Counter,
        help: "Series recorded into a name's overflow=\"true\" series because the name had reached its cap on label sets.",
    },
    Description {
        name: CONFLICT_METRIC,
        kind: MetricKind::Counter,
        help: "Registrations refused because the name was already used by another kind of metric.",
    },
];

/// Interval view over a [`Registry`]: each [`snapshot`](Self::snapshot) covers what was
/// recorded since the previous one (the first covers everything so far). Gauges show their
/// current value. Collected samples ([`Registry::register_collector`]) are included the same
/// way: a counter sample as its growth since the previous snapshot, a gauge sample as its
/// value. Each consumer keeps its own `Interval`.
#[derive(Debug)]
pub struct Interval {
    registry: Registry,
    previous: HashMap<Key, Previous>,
    /// Counter samples' values at the previous snapshot (only those collected then).
    previous_samples: HashMap<(String, BTreeMap<String, String>), f64>,
}

#[derive(Debug)]
enum Previous {
    Histogram(Merged),
    Counter(u64),
}

impl Interval {
    /// What was recorded since the previous call.
    pub fn snapshot(&mut self) -> Snapshot {
        let current = self.registry.collect(true);
        let mut rows = Vec::with_capacity(current.len());
        for (key, series, merged) in current {
            let (row, keep) = match (&series, merged) {
                (Series::Histogram(..), Some(merged)) => {
                    let delta = match self.previous.get(&key) {
                        Some(Previous::Histogram(earlier)) => merged.since(earlier),
                        _ => merged.clone(),
                    };
                    (
                        (key.clone(), series, Some(delta), None),
                        Previous::Histogram(merged),
                    )
                }
                (Series::Counter(c), _) => {
                    let now = c.get();
                    let before = match self.previous.get(&key) {
                        Some(Previous::Counter(v)) => *v,
                        _ => 0,
                    };
                    let row = (key.clone(), series, None, Some(now.wrapping_sub(before)));
                    (row, Previous::Counter(now))
                }
                _ => {
                    rows.push((key, series, None, None));
                    continue;
                }
            };
            self.previous.insert(key, keep);
            rows.push(row);
        }
        let mut snapshot = snapshot::build(
            rows.into_iter(),
            &self.registry.inner.settings.buckets,
            self.registry.meta_counters(),
            self.registry.help(),
        );
        self.registry.add_collected(&mut snapshot);
        let mut previous = HashMap::new();
        for sample in &mut snapshot.samples {
            if sample.kind == SampleKind::Counter {
                let key = (sample.name.clone(), sample.labels.clone());
                let now = sample.value;
                if let Some(before) = self.previous_samples.get(&key) {
                    sample.value = (now - before).max(0.0);
                }
                previous.insert(key, now);
            }
        }
        self.previous_samples = previous;
        snapshot
    }
}
