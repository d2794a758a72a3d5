//! Measure first: latency histograms, counters and gauges that cost a few nanoseconds to
//! record, exported as Prometheus text or JSON, and checked against performance budgets in CI.
//!
//! ```
//! use std::time::Duration;
//! use brisk_metrics::{Key, Recorder, Registry, Unit};
//!
//! # fn main() -> Result<(), brisk_metrics::Error> {
//! let registry = Registry::new();
//! let latency = registry.histogram(&Key::new("http_request_seconds")?.with_label("route", "/users/:id")?, Unit::Seconds);
//! let errors = registry.counter(&Key::new("http_errors_total")?);
//!
//! latency.record_duration(Duration::from_micros(1800));
//! {
//!     let _timer = latency.start_timer(); // records on drop, also on `?` and cancellation
//! }
//! errors.increment();
//!
//! let text = registry.prometheus_text(); // serve it at /metrics
//! assert!(text.contains("http_request_seconds_count{route=\"/users/:id\"} 2"));
//! let p99 = registry.snapshot().histogram("http_request_seconds", &[("route", "/users/:id")]).unwrap().p99;
//! assert!(p99 < 0.002);
//! # Ok(())
//! # }
//! ```
//!
//! # The parts
//! - [`Recorder`]: the small trait every brisk crate records through. [`Registry`] is the
//!   default; [`NoopRecorder`] turns metrics off at the cost of a branch.
//! - [`Registry`]: histograms whose buckets are hdrhistogram's (default 1 µs to 1 h, 3
//!   significant digits), striped so that threads record without a lock; counters; gauges.
//! - [`Snapshot`]: count, min, max, mean, p50/p90/p95/p99/p99.9 per histogram, cumulative or
//!   per interval ([`Registry::interval`]); ratios with no division by zero; Prometheus text
//!   ([`Snapshot::to_prometheus`]) and JSON (serde).
//! - [`Budgets`]: per-metric quantile and error-rate ceilings from TOML;
//!   [`Budgets::check`] lists what a snapshot violates, for a CI step to fail on.
//!
//! # Feature flags
//! - `registry` (default): [`Registry`], [`Snapshot`] and the Prometheus text (hdrhistogram).
//!   Off, the crate is the [`Recorder`] trait, its handles, [`NoopRecorder`] and the metric
//!   descriptions: what a library that only records needs (the other brisk crates depend on
//!   it so), with no serde, toml or hdrhistogram to build.
//! - `serde` (default): `Serialize`/`Deserialize` for [`Snapshot`] (JSON) and [`Unit`].
//! - `budgets` (default): [`Budgets`] from TOML (needs `registry` and `serde`).
//! - `tower`: [`tower::LatencyLayer`], recording request latency by route and status class,
//!   and (with `registry`) `tower::PrometheusService`, serving the exposition.
//! - `metrics-rs`: `metrics_rs::MetricsRsRecorder`, forwarding to the `metrics` crate facade so
//!   that an existing metrics-exporter-prometheus setup exports brisk's series unchanged.
//!
//! # Guarantees
//! - Recording never blocks, allocates only the first time a range of values is seen, and never
//!   panics: values above a histogram's range are recorded as its maximum and counted
//!   (`saturated`).
//! - Counts are exact under any concurrency; a snapshot taken during recording includes each
//!   concurrent value or not, and never loses one.
//! - Memory per series is bounded, and so is the number of series per metric name
//!   ([`RegistryBuilder::max_label_sets`]); invalid names are a typed [`Error`] when the
//!   [`Key`] is built.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

#[cfg(feature = "registry")]
mod atomic;
#[cfg(feature = "metrics-rs")]
mod bridge;
#[cfg(feature = "budgets")]
mod budget;
#[cfg(feature = "registry")]
mod collect;
mod duration;
mod error;
mod key;
#[cfg(feature = "process")]
#[cfg_attr(docsrs, doc(cfg(feature = "process")))]
pub mod process;
mod recorder;
#[cfg(feature = "registry")]
mod registry;
#[cfg(all(feature = "runtime", target_has_atomic = "64"))]
#[cfg_attr(docsrs, doc(cfg(feature = "runtime")))]
pub mod runtime;
#[cfg(feature = "registry")]
mod snapshot;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

/// A [`Recorder`] that forwards to the `metrics` crate facade (feature `metrics-rs`).
#[cfg(feature = "metrics-rs")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics-rs")))]
pub mod metrics_rs {
    pub use crate::bridge::MetricsRsRecorder;
}
#[cfg(feature = "budgets")]
#[cfg_attr(docsrs, doc(cfg(feature = "budgets")))]
pub use crate::budget::{Budgets, ErrorRateBudget, LatencyBudget, Limit, Rate, Violation};
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
pub use crate::{
    collect::Collector,
    registry::{Interval, METRICS, Registry, RegistryBuilder},
    snapshot::{
        Bucket, CounterSnapshot, GaugeSnapshot, HistogramSnapshot, PROMETHEUS_CONTENT_TYPE,
        SampleKind, SampleSnapshot, Snapshot, ratio,
    },
};
pub use crate::{
    duration::{DURATION_GRAMMAR, parse_duration},
    error::{BoxError, Error, Result},
    key::Key,
    recorder::{
        Counter, CounterFn, Description, Gauge, GaugeFn, Histogram, HistogramFn, MetricKind,
        NoopRecorder, Recorder, Timer, Unit, describe,
    },
};
