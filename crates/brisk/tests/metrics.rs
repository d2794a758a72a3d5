//! Every metric the brisk crates export, as Prometheus' own checker sees it.
#![cfg(all(
    feature = "batch",
    feature = "cache",
    feature = "compress",
    feature = "dedup",
    feature = "metrics",
    feature = "pool",
    feature = "stream"
))]

use std::collections::HashSet;

use brisk::metrics::{Description, Key, MetricKind, Recorder, Registry};

fn tables() -> [(&'static str, &'static [Description]); 7] {
    [
        ("batch", brisk::batch::METRICS),
        ("cache", brisk::cache::METRICS),
        ("compress", brisk::compress::METRICS),
        ("dedup", brisk::dedup::METRICS),
        ("metrics", brisk::metrics::METRICS),
        ("pool", brisk::pool::METRICS),
        ("stream", brisk::stream::METRICS),
    ]
}

/// A series of each metric every crate lists (a tidy test keeps each list complete), each
/// described as its crate describes it: promtool has no complaint (help text, `_total` on
/// counters and only on counters, no type in a name, base units), and no two crates share a
/// name.
#[test]
fn every_brisk_metric_has_help_and_promtool_finds_nothing_to_complain_of() {
    let registry = Registry::new();
    let mut names = HashSet::new();
    for (krate, metrics) in tables() {
        brisk::metrics::describe(&registry, metrics);
        for metric in metrics {
            assert!(
                metric.name.starts_with(&format!("brisk_{krate}_")),
                "{}",
                metric.name
            );
            assert!(names.insert(metric.name), "{} twice", metric.name);
            assert!(
                metric.help.ends_with('.') && metric.help.len() > 10,
                "{}: {:?}",
                metric.name,
                metric.help
            );
            let key = Key::new(metric.name)
                .and_then(|key| key.with_label("name", "checked"))
                .unwrap();
            match metric.kind {
                MetricKind::Counter => registry.counter(&key).increment(),
                MetricKind::Gauge => registry.gauge(&key).set(1),
                MetricKind::Histogram(unit) => registry.histogram(&key, unit).record(3),
                other => panic!("{}: a kind this test does not know: {other:?}", metric.name),
            }
        }
    }
    let text = registry.prometheus_text();
    for name in &names {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
    }
    brisk_testkit::promtool_check_metrics(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
}
