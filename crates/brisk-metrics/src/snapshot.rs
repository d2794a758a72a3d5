use std::{
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    sync::atomic::Ordering::Relaxed,
};

use crate::{
    atomic::Merged,
    key::{Key, write_escaped},
    recorder::Unit,
    registry::Series,
};

/// A point-in-time view of every series, with values in their shown unit (seconds for
/// durations). With feature `serde` (on by default), serializes to and from JSON, for budgets
/// checked in CI.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// Every histogram series, sorted by name then labels.
    pub histograms: Vec<HistogramSnapshot>,
    /// Every counter series, sorted by name then labels.
    pub counters: Vec<CounterSnapshot>,
    /// Every gauge series, sorted by name then labels.
    pub gauges: Vec<GaugeSnapshot>,
    /// Values read when the snapshot was taken by the registry's
    /// [`Collector`](crate::Collector)s (process and runtime figures), sorted by name then
    /// labels.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub samples: Vec<SampleSnapshot>,
    /// The help text of each metric name above that was described
    /// ([`Recorder::describe`](crate::Recorder::describe)).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "BTreeMap::is_empty")
    )]
    pub help: BTreeMap<String, String>,
}

/// Summary of one histogram series. Quantiles, min, max, mean and sum are accurate to the
/// histogram's precision (1 % by default); count is exact.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HistogramSnapshot {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Unit of every value below.
    pub unit: Unit,
    /// Number of values recorded.
    pub count: u64,
    /// Sum of the values recorded.
    pub sum: f64,
    /// Smallest value (0 when empty).
    pub min: f64,
    /// Largest value (0 when empty).
    pub max: f64,
    /// Mean (0 when empty).
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Values above the highest trackable value, recorded as that value.
    pub saturated: u64,
    /// Cumulative buckets: how many values were at most `le`.
    pub buckets: Vec<Bucket>,
}

/// One cumulative histogram bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Bucket {
    /// Upper bound, in the histogram's shown unit.
    pub le: f64,
    /// Values at most `le`.
    pub count: u64,
}

/// One counter series.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CounterSnapshot {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Count.
    pub value: u64,
}

/// One gauge series.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GaugeSnapshot {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: i64,
}

/// One value a [`Collector`](crate::Collector) read at snapshot time: a float in the unit its
/// name states (`process_cpu_seconds_total` in seconds).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SampleSnapshot {
    /// Metric name.
    pub name: String,
    /// Whether it only grows (a counter) or goes up and down (a gauge).
    pub kind: SampleKind,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

impl SampleSnapshot {
    /// A sample without labels.
    pub fn new(name: impl Into<String>, kind: SampleKind, value: f64) -> Self {
        Self {
            name: name.into(),
            kind,
            labels: BTreeMap::new(),
            value,
        }
    }

    /// The sample with one more label.
    #[must_use]
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }
}

/// The kind of a [`SampleSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum SampleKind {
    /// Only grows (a total since the process or runtime started).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// `part / whole`, or `None` when `whole` is zero: a rate with no traffic is unknown, not 0.
pub fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn labels_match(have: &BTreeMap<String, String>, want: &[(&str, &str)]) -> bool {
    have.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| have.get(*k).is_some_and(|x| x == v))
}

impl Snapshot {
    /// The histogram series with exactly these labels.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<&HistogramSnapshot> {
        self.histograms
            .iter()
            .find(|h| h.name == name && labels_match(&h.labels, labels))
    }

    /// The counter series with exactly these labels.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.counters
            .iter()
            .find(|c| c.name == name && labels_match(&c.labels, labels))
            .map(|c| c.value)
    }

    /// The gauge series with exactly these labels.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<i64> {
        self.gauges
            .iter()
            .find(|g| g.name == name && labels_match(&g.labels, labels))
            .map(|g| g.value)
    }

    /// The names of the recorded series (histograms, counters, gauges).
    pub(crate) fn recorded_names(&self) -> std::collections::HashSet<&str> {
        self.histograms
            .iter()
            .map(|h| h.name.as_str())
            .chain(self.counters.iter().map(|c| c.name.as_str()))
            .chain(self.gauges.iter().map(|g| g.name.as_str()))
            .collect()
    }

    /// The collected sample ([`samples`](Self::samples)) with exactly these labels.
    pub fn sample(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && labels_match(&s.labels, labels))
            .map(|s| s.value)
    }

    /// `counter(part) / counter(whole)` for the same labels; `None` when either is missing or
    /// `whole` is zero (e.g. an error rate: errors over requests).
    pub fn ratio(&self, part: &str, whole: &str, labels: &[(&str, &str)]) -> Option<f64> {
        ratio(self.counter(part, labels)?, self.counter(whole, labels)?)
    }

    /// `hits / (hits + misses)` for the same labels; `None` when both are missing or zero.
    pub fn hit_ratio(&self, hits: &str, misses: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let h = self.counter(hits, labels).unwrap_or(0);
        let m = self.counter(misses, labels).unwrap_or(0);
        ratio(h, h.saturating_add(m))
    }

    /// Renders the Prometheus text exposition format (version 0.0.4; serve it as
    /// [`PROMETHEUS_CONTENT_TYPE`]): each family with its `# HELP` (when described) and
    /// `# TYPE`, each histogram as cumulative `_bucket{le}`, `_sum` and `_count`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_prometheus(&mut out, false);
        out
    }

    /// [`to_prometheus`](Self::to_prometheus), and each histogram's quantiles 0.5 to 0.999
    /// (exact to the histogram's precision, where `histogram_quantile()` over buckets
    /// interpolates) as a `summary` family `<name>_quantiles`. Summaries cannot be
    /// aggregated across instances; the buckets can.
    pub fn to_prometheus_with_quantiles(&self) -> String {
        let mut out = String::new();
        let _ = self.write_prometheus(&mut out, true);
        out
    }

    fn write_prometheus(&self, out: &mut String, quantiles: bool) -> std::fmt::Result {
        // Series are sorted by name, so each family's samples are contiguous.
        let mut family = Family {
            help: &self.help,
            name: "",
            suffix: "",
        };
        // Each series' labels are escaped once, and each bucket bound is formatted once per
        // run of series that share the bounds (every series of a unit does), not per line.
        let mut labels = String::new();
        let mut bounds: Vec<(f64, String)> = Vec::new();
        for h in &self.histograms {
            family.start(out, &h.name, "", "histogram")?;
            render_labels(&mut labels, &h.labels)?;
            if bounds.len() != h.buckets.len()
                || bounds
                    .iter()
                    .zip(&h.buckets)
                    .any(|((le, _), b)| le.to_bits() != b.le.to_bits())
            {
                bounds = h.buckets.iter().map(|b| (b.le, fmt_f64(b.le))).collect();
            }
            for (b, (_, le)) in h.buckets.iter().zip(&bounds) {
                sample(out, &h.name, "_bucket", &labels, Some(("le", le)), b.count)?;
            }
            sample(
                out,
                &h.name,
                "_bucket",
                &labels,
                Some(("le", "+Inf")),
                h.count,
            )?;
            sample(out, &h.name, "_sum", &labels, None, Float(h.sum))?;
            sample(out, &h.name, "_count", &labels, None, h.count)?;
        }
        for h in self.histograms.iter().filter(|_| quantiles) {
            family.start(out, &h.name, "_quantiles", "summary")?;
            render_labels(&mut labels, &h.labels)?;
            let quantiles = [
                ("0.5", h.p50),
                ("0.9", h.p90),
                ("0.95", h.p95),
                ("0.99", h.p99),
                ("0.999", h.p999),
            ];
            for (q, v) in quantiles {
                let extra = Some(("quantile", q));
                sample(out, &h.name, "_quantiles", &labels, extra, Float(v))?;
            }
            sample(out, &h.name, "_quantiles_sum", &labels, None, Float(h.sum))?;
            sample(out, &h.name, "_quantiles_count", &labels, None, h.count)?;
        }
        for c in &self.counters {
            family.start(out, &c.name, "", "counter")?;
            render_labels(&mut labels, &c.labels)?;
            sample(out, &c.name, "", &labels, None, c.value)?;
        }
        for g in &self.gauges {
            family.start(out, &g.name, "", "gauge")?;
            render_labels(&mut labels, &g.labels)?;
            sample(out, &g.name, "", &labels, None, g.value)?;
        }
        for s in &self.samples {
            let kind = match s.kind {
                SampleKind::Counter => "counter",
                SampleKind::Gauge => "gauge",
            };
            family.start(out, &s.name, "", kind)?;
            render_labels(&mut labels, &s.labels)?;
            sample(out, &s.name, "", &labels, None, Float(s.value))?;
        }
        Ok(())
    }
}

/// The media type of the Prometheus text exposition
/// ([`Snapshot::to_prometheus`], [`Registry::prometheus_text`](crate::Registry::prometheus_text)).
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes the `# HELP` and `# TYPE` lines whenever a new metric family begins.
struct Family<'a> {
    help: &'a BTreeMap<String, String>,
    name: &'a str,
    suffix: &'static str,
}

impl<'a> Family<'a> {
    fn start(
        &mut self,
        out: &mut String,
        name: &'a str,
        suffix: &'static str,
        kind: &str,
    ) -> std::fmt::Result {
        if (self.name, self.suffix) != (name, suffix) {
            if let Some(help) = self.help.get(name) {
                write!(out, "# HELP {name}{suffix} ")?;
                for c in help.chars() {
                    match c {
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        c => out.push(c),
                    }
                }
                out.push('\n');
            }
            writeln!(out, "# TYPE {name}{suffix} {kind}")?;
            (self.name, self.suffix) = (name, suffix);
        }
        Ok(())
    }
}

/// Renders `labels` as the exposition writes them between braces, escaped: `a="1",b="2"`.
fn render_labels(out: &mut String, labels: &BTreeMap<String, String>) -> std::fmt::Result {
    out.clear();
    for (k, v) in labels {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        write_escaped(out, v)?;
        out.push('"');
    }
    Ok(())
}

/// A float in the exposition's spelling (`+Inf`, `-Inf`, `NaN`).
struct Float(f64);

impl std::fmt::Display for Float {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v.is_infinite() && v > 0.0 => f.write_str("+Inf"),
            v if v.is_infinite() => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

/// One sample line: `name{labels,extra} value`, with `labels` already rendered.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: impl SampleValue,
) -> std::fmt::Result {
    out.push_str(name);
    out.push_str(suffix);
    match (labels.is_empty(), extra) {
        (true, None) => {}
        (_, None) => {
            out.push('{');
            out.push_str(labels);
            out.push('}');
        }
        (_, Some((k, v))) => {
            out.push('{');
            out.push_str(labels);
            if !labels.is_empty() {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            out.push_str(v);
            out.push_str("\"}");
        }
    }
    out.push(' ');
    value.write_to(out)?;
    out.push('\n');
    Ok(())
}

/// A sample's value, written without the formatting machinery where it can be.
trait SampleValue {
    fn write_to(&self, out: &mut String) -> std::fmt::Result;
}

impl SampleValue for u64 {
    fn write_to(&self, out: &mut String) -> std::fmt::Result {
        let mut digits = [0_u8; 20];
        let mut at = digits.len();
        let mut rest = *self;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        // ASCII digits.
        out.extend(digits[at..].iter().map(|&digit| char::from(digit)));
        Ok(())
    }
}

impl SampleValue for i64 {
    fn write_to(&self, out: &mut String) -> std::fmt::Result {
        if *self < 0 {
            out.push('-');
        }
        self.unsigned_abs().write_to(out)
    }
}

impl SampleValue for Float {
    fn write_to(&self, out: &mut String) -> std::fmt::Result {
        write!(out, "{self}")
    }
}

fn fmt_f64(v: f64) -> String {
    Float(v).to_string()
}

fn labels_of(key: &Key) -> BTreeMap<String, String> {
    key.labels()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Summarises a histogram's merged counts, whose values are stored in `unit`.
pub(crate) fn summarize(
    key: &Key,
    unit: Unit,
    merged: &Merged,
    saturated: u64,
    bounds: &[f64],
) -> HistogramSnapshot {
    let scale = unit.scale();
    let shown = |v: u64| v as f64 * scale;
    let count = merged.len();
    let [p50, p90, p95, p99, p999] = merged
        .values_at_quantiles([0.5, 0.9, 0.95, 0.99, 0.999])
        .map(shown);
    let sum = merged.sum();
    let limits = bounds.iter().map(|&le| {
        let limit = (le / scale).floor();
        // Below 0 nothing is at most the bound; `as` saturates at u64::MAX above.
        if limit < 0.0 {
            None
        } else {
            Some(limit as u64)
        }
    });
    let counted = merged.counts_at_most(limits.clone().flatten());
    let mut counted = counted.into_iter();
    HistogramSnapshot {
        name: key.name().to_owned(),
        labels: labels_of(key),
        unit,
        count,
        sum: sum * scale,
        min: shown(merged.min()),
        max: shown(merged.max()),
        mean: if count == 0 {
            0.0
        } else {
            sum / count as f64 * scale
        },
        p50,
        p90,
        p95,
        p99,
        p999,
        saturated,
        buckets: bounds
            .iter()
            .zip(limits)
            .map(|(&le, limit)| Bucket {
                le,
                count: limit.map_or(0, |_| counted.next().unwrap_or(0)),
            })
            .collect(),
    }
}

/// Builds a snapshot from collected series. `merged` is the (possibly interval) histogram and
/// `counter` an interval counter value overriding the live one.
pub(crate) fn build(
    rows: impl Iterator<Item = (Key, Series, Option<Merged>, Option<u64>)>,
    buckets: &HashMap<Unit, Vec<f64>>,
    meta: [(Key, u64); 2],
    mut help: HashMap<String, String>,
) -> Snapshot {
    let mut snapshot = Snapshot::default();
    // One buffer for every series merged here.
    let mut scratch: Option<Merged> = None;
    for (key, series, merged, counter) in rows {
        match series {
            Series::Histogram(unit, h) => {
                let merged = match merged {
                    Some(merged) => &*scratch.insert(merged),
                    None => match &mut scratch {
                        Some(buffer) => {
                            h.merge_into(buffer);
                            &*buffer
                        }
                        None => &*scratch.insert(h.merged()),
                    },
                };
                let bounds = buckets.get(&unit).map_or(&[][..], Vec::as_slice);
                snapshot
                    .histograms
                    .push(summarize(&key, unit, merged, h.saturated(), bounds));
            }
            Series::Counter(c) => snapshot.counters.push(CounterSnapshot {
                name: key.name().to_owned(),
                labels: labels_of(&key),
                value: counter.unwrap_or_else(|| c.get()),
            }),
            Series::Gauge(g) => snapshot.gauges.push(GaugeSnapshot {
                name: key.name().to_owned(),
                labels: labels_of(&key),
                value: g.load(Relaxed),
            }),
        }
    }
    for (key, value) in meta {
        if !snapshot.counters.iter().any(|c| c.name == key.name()) {
            snapshot.counters.push(CounterSnapshot {
                name: key.name().to_owned(),
                labels: BTreeMap::new(),
                value,
            });
        }
    }
    snapshot
        .histograms
        .sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    snapshot
        .counters
        .sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    snapshot
        .gauges
        .sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
    let names = snapshot.recorded_names();
    help.retain(|name, _| names.contains(name.as_str()));
    snapshot.help = help.into_iter().collect();
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_never_divides_by_zero() {
        assert_eq!(ratio(0, 0), None);
        assert_eq!(ratio(5, 0), None);
        assert_eq!(ratio(1, 4), Some(0.25));
    }

    #[test]
    fn integers_are_written_in_full() {
        let mut out = String::new();
        for value in [0, 7, 10, 1_000_000, u64::MAX] {
            out.clear();
            value.write_to(&mut out).unwrap();
            assert_eq!(out, value.to_string());
        }
        for value in [0, -1, 42, i64::MIN, i64::MAX] {
            out.clear();
            value.write_to(&mut out).unwrap();
            assert_eq!(out, value.to_string());
        }
    }

    #[test]
    fn special_floats_use_prometheus_spelling() {
        assert_eq!(fmt_f64(f64::INFINITY), "+Inf");
        assert_eq!(fmt_f64(f64::NEG_INFINITY), "-Inf");
        assert_eq!(fmt_f64(f64::NAN), "NaN");
        assert_eq!(fmt_f64(0.005), "0.005");
    }
}
