use std::{collections::BTreeMap, fmt, path::Path, str::FromStr};

use serde::{Deserialize, Deserializer, de};

use crate::{
    error::{Error, Result},
    snapshot::{HistogramSnapshot, Snapshot, ratio},
};

/// Performance budgets: latency ceilings per quantile and error-rate ceilings, read from TOML
/// and checked against a [`Snapshot`], so that a service's CI can fail on a regression.
///
/// ```toml
/// [[latency]]
/// metric = "http_request_seconds"
/// labels = { route = "/users/:id" }   # optional: every series with these labels
/// p95 = "50ms"                         # durations: ns, us, ms, s; or a number in seconds
/// p99 = "120ms"
///
/// [[error_rate]]
/// errors = "http_errors_total"
/// total = "http_requests_total"
/// max = 0.01
/// ```
///
/// ```
/// # fn main() -> Result<(), brisk_metrics::Error> {
/// use brisk_metrics::{Budgets, Key, Recorder, Registry, Unit};
/// let budgets: Budgets = "[[latency]]\nmetric = \"q_seconds\"\np99 = \"10ms\"\n".parse()?;
/// let registry = Registry::new();
/// let q = registry.histogram(&Key::new("q_seconds")?, Unit::Seconds);
/// q.record_duration(std::time::Duration::from_millis(25));
/// let violations = budgets.check(&registry.snapshot());
/// assert_eq!(violations.len(), 1);
/// assert_eq!(violations[0].check, "p99");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Latency (histogram quantile) ceilings.
    #[serde(default)]
    pub latency: Vec<LatencyBudget>,
    /// Error-rate ceilings.
    #[serde(default)]
    pub error_rate: Vec<ErrorRateBudget>,
}

/// Ceilings for quantiles of one histogram metric (every series whose labels include `labels`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyBudget {
    /// Histogram metric name.
    pub metric: String,
    /// Labels a series must have to be checked; empty checks every series of the metric.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ceiling on the median.
    pub p50: Option<Limit>,
    /// Ceiling on the 90th percentile.
    pub p90: Option<Limit>,
    /// Ceiling on the 95th percentile.
    pub p95: Option<Limit>,
    /// Ceiling on the 99th percentile.
    pub p99: Option<Limit>,
    /// Ceiling on the 99.9th percentile.
    pub p999: Option<Limit>,
    /// Ceiling on the maximum.
    pub max: Option<Limit>,
}

/// A ceiling on `errors / total` of two counters with the same labels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorRateBudget {
    /// Counter of failures.
    pub errors: String,
    /// Counter of all attempts.
    pub total: String,
    /// Labels both counters must have exactly.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Highest acceptable rate, from 0 to 1.
    pub max: Rate,
}

/// A latency ceiling in the metric's shown unit (seconds for durations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit(pub f64);

/// A rate between 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

/// One budget that a snapshot breaks.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The series, as `name{label="value"}`.
    pub series: String,
    /// What was checked: `p50`…`p999`, `max`, `error_rate`.
    pub check: String,
    /// The observed value; `None` when the metric is missing from the snapshot.
    pub observed: Option<f64>,
    /// The ceiling.
    pub limit: f64,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.observed {
            Some(v) => write!(
                f,
                "{} {} = {v} exceeds the budget of {}",
                self.series, self.check, self.limit
            ),
            None => write!(
                f,
                "{} has no data for {} (budget {}): missing from the snapshot, renamed, or never recorded",
                self.series, self.check, self.limit
            ),
        }
    }
}

impl FromStr for Budgets {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        Self::parse(text, "<budgets>")
    }
}

impl Budgets {
    /// Reads budgets from a TOML file.
    ///
    /// # Errors
    /// [`Error::BudgetIo`] when the file cannot be read, [`Error::BudgetSyntax`] naming the
    /// file, line and column of anything invalid (syntax, unknown keys, bad durations).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::BudgetIo {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            Error::BudgetSyntax {
                origin: origin.to_owned(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })
    }

    /// Every violation in `snapshot`; empty when all budgets hold. A budget whose metric is
    /// missing is a violation (a renamed metric must not pass silently); an error rate with no
    /// traffic (total 0) is not.
    pub fn check(&self, snapshot: &Snapshot) -> Vec<Violation> {
        let mut violations = Vec::new();
        for budget in &self.latency {
            let series: Vec<&HistogramSnapshot> = snapshot
                .histograms
                .iter()
                .filter(|h| {
                    h.name == budget.metric
                        && budget
                            .labels
                            .iter()
                            .all(|(k, v)| h.labels.get(k) == Some(v))
                })
                .collect();
            let checks: [QuantileCheck; 6] = [
                ("p50", budget.p50, |h| h.p50),
                ("p90", budget.p90, |h| h.p90),
                ("p95", budget.p95, |h| h.p95),
                ("p99", budget.p99, |h| h.p99),
                ("p999", budget.p999, |h| h.p999),
                ("max", budget.max, |h| h.max),
            ];
            for (check, limit, observe) in checks {
                let Some(Limit(limit)) = limit else { continue };
                if series.is_empty() {
                    violations.push(Violation {
                        series: display_series(&budget.metric, &budget.labels),
                        check: check.to_owned(),
                        observed: None,
                        limit,
                    });
                }
                for h in &series {
                    let observed = observe(h);
                    if observed > limit {
                        violations.push(Violation {
                            series: display_series(&h.name, &h.labels),
                            check: check.to_owned(),
                            observed: Some(observed),
                            limit,
                        });
                    }
                }
            }
        }
        for budget in &self.error_rate {
            let labels: Vec<(&str, &str)> = budget
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let Rate(limit) = budget.max;
            match (
                snapshot.counter(&budget.errors, &labels),
                snapshot.counter(&budget.total, &labels),
            ) {
                (Some(errors), Some(total)) => {
                    if let Some(rate) = ratio(errors, total).filter(|&r| r > limit) {
                        violations.push(Violation {
                            series: display_series(&budget.errors, &budget.labels),
                            check: "error_rate".to_owned(),
                            observed: Some(rate),
                            limit,
                        });
                    }
                }
                (errors, _) => {
                    let missing = if errors.is_none() {
                        &budget.errors
                    } else {
                        &budget.total
                    };
                    violations.push(Violation {
                        series: display_series(missing, &budget.labels),
                        check: "error_rate".to_owned(),
                        observed: None,
                        limit,
                    });
                }
            }
        }
        violations
    }
}

/// A quantile name, its ceiling, and how to read it from a histogram snapshot.
type QuantileCheck = (&'static str, Option<Limit>, fn(&HistogramSnapshot) -> f64);

fn display_series(name: &str, labels: &BTreeMap<String, String>) -> String {
    let mut key = match crate::Key::new(name.to_owned()) {
        Ok(key) => key,
        Err(_) => return name.to_owned(),
    };
    for (k, v) in labels {
        key = match key.clone().with_label(k.clone(), v.clone()) {
            Ok(k) => k,
            Err(_) => return format!("{name}{labels:?}"),
        };
    }
    key.to_string()
}

/// A duration in the shared grammar ([`crate::parse_duration`]), in seconds.
fn parse_duration(text: &str) -> Option<f64> {
    crate::parse_duration(text.trim()).map(|duration| duration.as_secs_f64())
}

struct NumberVisitor {
    what: &'static str,
    durations: bool,
    max: f64,
}

impl de::Visitor<'_> for NumberVisitor {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if v.is_finite() && (0.0..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(format!("{v} is not {}", self.what)))
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
        if !self.durations {
            return Err(E::custom(format!("{v:?} is not {}", self.what)));
        }
        match parse_duration(v) {
            Some(seconds) => self.visit_f64(seconds),
            None => Err(E::custom(format!(
                "{v:?} is not a duration: write a number with ns, us, ms or s, such as \"20ms\""
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberVisitor {
            what: "a non-negative number or a duration such as \"20ms\"",
            durations: true,
            max: f64::MAX,
        })
        .map(Limit)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumberVisitor {
            what: "a rate between 0 and 1",
            durations: false,
            max: 1.0,
        })
        .map(Rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("20ms"), Some(0.02));
        assert_eq!(parse_duration("1.5s"), Some(1.5));
        assert_eq!(parse_duration("250us"), Some(0.000_25));
        assert_eq!(parse_duration("250µs"), Some(0.000_25));
        assert_eq!(parse_duration("20"), None);
        assert_eq!(parse_duration("20 parsecs"), None);
        assert_eq!(parse_duration("ms"), None);
    }
}
