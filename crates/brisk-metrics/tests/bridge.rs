//! MetricsRsRecorder forwards brisk series to the `metrics` facade unchanged.

use std::time::Duration;

use brisk_metrics::{Key, MetricKind, Recorder, Unit, metrics_rs::MetricsRsRecorder};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn series_reach_the_metrics_facade_with_names_labels_and_seconds() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (histogram, counter, gauge) = metrics::with_local_recorder(&recorder, || {
        let bridge = MetricsRsRecorder;
        bridge.describe(
            "db_query_seconds",
            MetricKind::Histogram(Unit::Seconds),
            "Time a query took.",
        );
        bridge.describe("db_queries_total", MetricKind::Counter, "Queries run.");
        bridge.describe("pool_in_use", MetricKind::Gauge, "Connections in use.");
        let key = Key::new("db_query_seconds")
            .unwrap()
            .with_label("query", "by_id")
            .unwrap();
        (
            bridge.histogram(&key, Unit::Seconds),
            bridge.counter(&Key::new("db_queries_total").unwrap()),
            bridge.gauge(&Key::new("pool_in_use").unwrap()),
        )
    });
    histogram.record_duration(Duration::from_millis(250));
    counter.add(3);
    gauge.set(5);
    gauge.add(-2);

    let mut seen = 0;
    for (composite, unit, help, value) in snapshotter.snapshot().into_vec() {
        let (_, key) = composite.into_parts();
        let expected = match key.name() {
            "db_query_seconds" => {
                assert_eq!(unit, Some(metrics::Unit::Seconds));
                "Time a query took."
            }
            "db_queries_total" => "Queries run.",
            _ => "Connections in use.",
        };
        assert_eq!(help.as_deref(), Some(expected), "{}", key.name());
        match (key.name(), value) {
            ("db_query_seconds", DebugValue::Histogram(values)) => {
                let labels: Vec<_> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                assert_eq!(labels, [("query".to_owned(), "by_id".to_owned())]);
                assert_eq!(values.len(), 1);
                assert!((values[0].into_inner() - 0.25).abs() < 1e-9);
                seen += 1;
            }
            ("db_queries_total", DebugValue::Counter(n)) => {
                assert_eq!(n, 3);
                seen += 1;
            }
            ("pool_in_use", DebugValue::Gauge(v)) => {
                assert_eq!(v.into_inner(), 3.0);
                seen += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, 3);
}
