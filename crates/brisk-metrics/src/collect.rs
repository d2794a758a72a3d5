//! Values read when a snapshot is taken, rather than recorded as they happen.

use std::fmt;

use crate::{recorder::Description, snapshot::SampleSnapshot};

/// A source of values read at snapshot time: process figures
/// ([`ProcessCollector`](crate::process::ProcessCollector), feature `process`), a tokio
/// runtime's ([`RuntimeCollector`](crate::runtime::RuntimeCollector), feature `runtime`), or
/// your own. Register it with [`Registry::register_collector`](crate::Registry::register_collector):
/// each [`Registry::snapshot`](crate::Registry::snapshot) (so each Prometheus scrape) calls
/// it once, so its values are as fresh as the scrape and nothing samples in the background.
///
/// Values are floats ([`SampleSnapshot`]), for figures such as CPU seconds that recorded
/// integer series cannot carry. A sample whose name is also a recorded series', or is not a
/// valid metric name, is left out and counted in `brisk_metrics_kind_conflicts_total`.
pub trait Collector: Send + Sync + fmt::Debug {
    /// Appends the current values to `out`.
    fn collect(&self, out: &mut Vec<SampleSnapshot>);

    /// The metrics it reports, for `# HELP` lines.
    fn describe(&self) -> &[Description] {
        &[]
    }
}
