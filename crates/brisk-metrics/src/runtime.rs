//! A tokio runtime's figures that stable tokio exposes: workers, alive tasks, the global
//! queue's depth, time busy and parks, read when a snapshot is taken.
//!
//! ```
//! use brisk_metrics::{Registry, runtime::RuntimeCollector};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() {
//! let registry = Registry::new();
//! registry.register_collector(RuntimeCollector::new(tokio::runtime::Handle::current(), "main"));
//! let snapshot = registry.snapshot();
//! assert_eq!(snapshot.sample("tokio_runtime_workers", &[("runtime", "main")]), Some(2.0));
//! # }
//! ```

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use tokio::runtime::Handle;

use crate::{
    collect::Collector,
    recorder::{Description, MetricKind},
    snapshot::{SampleKind, SampleSnapshot},
};

/// The metrics [`RuntimeCollector`] reports, each labelled `runtime="<name>"`.
pub const RUNTIME_METRICS: &[Description] = &[
    Description {
        name: "tokio_runtime_workers",
        kind: MetricKind::Gauge,
        help: "Worker threads of the tokio runtime.",
    },
    Description {
        name: "tokio_runtime_alive_tasks",
        kind: MetricKind::Gauge,
        help: "Tasks spawned on the runtime that have not completed.",
    },
    Description {
        name: "tokio_runtime_global_queue_depth",
        kind: MetricKind::Gauge,
        help: "Tasks waiting in the runtime's global queue (spawned from outside its workers, or overflowing a worker's local queue).",
    },
    Description {
        name: "tokio_runtime_busy_seconds_total",
        kind: MetricKind::Counter,
        help: "Time the runtime's workers spent running tasks, summed over workers, in seconds.",
    },
    Description {
        name: "tokio_runtime_busy_ratio",
        kind: MetricKind::Gauge,
        help: "Share of the workers' time spent running tasks since the previous snapshot (0 to 1).",
    },
    Description {
        name: "tokio_runtime_parks_total",
        kind: MetricKind::Counter,
        help: "Times the runtime's workers parked (went idle), summed over workers.",
    },
];

/// A [`Collector`] of one tokio runtime's figures ([`RUNTIME_METRICS`]).
///
/// `tokio_runtime_busy_ratio` is busy time over wall time × workers since the previous
/// snapshot (since the collector was made, for the first): with one scraper, the load between
/// scrapes. For any window, `rate(tokio_runtime_busy_seconds_total[1m]) /
/// tokio_runtime_workers` says the same in PromQL.
#[derive(Debug)]
pub struct RuntimeCollector {
    handle: Handle,
    name: String,
    /// When the previous snapshot was taken and the busy time then.
    previous: Mutex<(Instant, Duration)>,
}

impl RuntimeCollector {
    /// A collector for the runtime of `handle`, its series labelled `runtime="<name>"` (so
    /// several runtimes can be told apart).
    pub fn new(handle: Handle, name: impl Into<String>) -> Self {
        let busy = busy(&handle);
        Self {
            handle,
            name: name.into(),
            previous: Mutex::new((Instant::now(), busy)),
        }
    }
}

/// Busy time summed over workers.
fn busy(handle: &Handle) -> Duration {
    let metrics = handle.metrics();
    (0..metrics.num_workers())
        .map(|worker| metrics.worker_total_busy_duration(worker))
        .sum()
}

impl Collector for RuntimeCollector {
    fn collect(&self, out: &mut Vec<SampleSnapshot>) {
        let metrics = self.handle.metrics();
        let workers = metrics.num_workers();
        let busy_now = busy(&self.handle);
        let parks: u64 = (0..workers)
            .map(|worker| metrics.worker_park_count(worker))
            .sum();
        let ratio = {
            let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let (then, busy_then) = *previous;
            *previous = (now, busy_now);
            let capacity = now.duration_since(then).as_secs_f64() * workers as f64;
            if capacity > 0.0 {
                (busy_now.saturating_sub(busy_then).as_secs_f64() / capacity).clamp(0.0, 1.0)
            } else {
                0.0
            }
        };
        let sample = |name: &str, kind, value: f64| {
            SampleSnapshot::new(name, kind, value).label("runtime", self.name.clone())
        };
        out.extend([
            sample("tokio_runtime_workers", SampleKind::Gauge, workers as f64),
            sample(
                "tokio_runtime_alive_tasks",
                SampleKind::Gauge,
                metrics.num_alive_tasks() as f64,
            ),
            sample(
                "tokio_runtime_global_queue_depth",
                SampleKind::Gauge,
                metrics.global_queue_depth() as f64,
            ),
            sample(
                "tokio_runtime_busy_seconds_total",
                SampleKind::Counter,
                busy_now.as_secs_f64(),
            ),
            sample("tokio_runtime_busy_ratio", SampleKind::Gauge, ratio),
            sample(
                "tokio_runtime_parks_total",
                SampleKind::Counter,
                parks as f64,
            ),
        ]);
    }

    fn describe(&self) -> &[Description] {
        RUNTIME_METRICS
    }
}
