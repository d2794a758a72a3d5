//! The Prometheus text, read back by an independent parser.

use std::collections::HashMap;

use brisk_metrics::{Description, Key, MetricKind, Recorder, Registry, Unit};
use prometheus_parse::{Scrape, Value};

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition")
}

fn find<'a>(
    scrape: &'a Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> &'a prometheus_parse::Sample {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"))
}

#[test]
fn histograms_counters_and_gauges_parse_back_with_their_values() {
    let registry = Registry::new();
    let route = Key::new("http_request_seconds")
        .unwrap()
        .with_label("route", "/users/:id")
        .unwrap();
    let h = registry.histogram(&route, Unit::Seconds);
    for ms in [1, 2, 3, 4, 40, 400] {
        h.record(ms * 1000);
    }
    registry
        .counter(&Key::new("http_requests_total").unwrap())
        .add(6);
    registry.gauge(&Key::new("pool_in_use").unwrap()).set(-2);
    let text = registry.snapshot().to_prometheus_with_quantiles();
    let scrape = parse(&text);

    match &find(&scrape, "http_request_seconds", &[("route", "/users/:id")]).value {
        Value::Histogram(buckets) => {
            let cumulative: HashMap<String, f64> = buckets
                .iter()
                .map(|b| (b.less_than.to_string(), b.count))
                .collect();
            assert_eq!(cumulative["0.001"], 1.0);
            assert_eq!(cumulative["0.005"], 4.0);
            assert_eq!(cumulative["0.05"], 5.0);
            assert_eq!(cumulative["0.5"], 6.0);
            assert_eq!(cumulative["inf"], 6.0);
        }
        other => panic!("expected a histogram, got {other:?}"),
    }
    match &find(
        &scrape,
        "http_request_seconds_quantiles",
        &[("route", "/users/:id")],
    )
    .value
    {
        Value::Summary(quantiles) => {
            let p50 = quantiles.iter().find(|q| q.quantile == 0.5).unwrap().count;
            // Within the default precision, 1 %.
            assert!((p50 - 0.003).abs() < 0.003 * 0.01, "{p50}");
            assert_eq!(quantiles.len(), 5);
        }
        other => panic!("expected a summary, got {other:?}"),
    }
    let count = find(
        &scrape,
        "http_request_seconds_count",
        &[("route", "/users/:id")],
    );
    assert!(
        matches!(count.value, Value::Untyped(6.0) | Value::Histogram(_))
            || text.contains("http_request_seconds_count{route=\"/users/:id\"} 6")
    );
    let sum_line = text
        .lines()
        .find(|l| l.starts_with("http_request_seconds_sum"))
        .unwrap();
    let sum: f64 = sum_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((sum - 0.450).abs() < 0.450 * 0.01, "{sum}");
    assert!(matches!(
        find(&scrape, "http_requests_total", &[]).value,
        Value::Counter(6.0)
    ));
    assert!(matches!(
        find(&scrape, "pool_in_use", &[]).value,
        Value::Gauge(-2.0)
    ));
}

#[test]
fn label_values_are_escaped() {
    let registry = Registry::new();
    let nasty = "say \"hi\"\\ then\nnewline";
    registry
        .counter(
            &Key::new("odd_total")
                .unwrap()
                .with_label("v", nasty)
                .unwrap(),
        )
        .increment();
    let text = registry.prometheus_text();
    let line = text.lines().find(|l| l.starts_with("odd_total{")).unwrap();
    assert_eq!(line, r#"odd_total{v="say \"hi\"\\ then\nnewline"} 1"#);
    // Every sample stays on its own line and the whole text still parses.
    let scrape = parse(&text);
    assert!(scrape.samples.iter().any(|s| s.metric == "odd_total"));
}

#[test]
fn every_family_has_one_type_line() {
    let registry = Registry::new();
    for route in ["/a", "/b", "/c"] {
        let k = Key::new("r_seconds")
            .unwrap()
            .with_label("route", route)
            .unwrap();
        registry.histogram(&k, Unit::Seconds).record(10);
    }
    let text = registry.snapshot().to_prometheus_with_quantiles();
    assert_eq!(text.matches("# TYPE r_seconds histogram").count(), 1);
    assert_eq!(
        text.matches("# TYPE r_seconds_quantiles summary").count(),
        1
    );
    parse(&text);
    // Quantiles are asked for: the default exposition has the histogram only.
    let plain = registry.prometheus_text();
    assert!(!plain.contains("quantile"), "{plain}");
    assert_eq!(plain.matches("# TYPE r_seconds histogram").count(), 1);
}

#[test]
fn described_metrics_have_help_lines_escaped_and_the_first_description_wins() {
    let registry = Registry::new();
    registry.describe(
        "jobs_total",
        MetricKind::Counter,
        "Jobs run.\nA \\ backslash, then a\nnewline.",
    );
    registry.describe(
        "jobs_total",
        MetricKind::Counter,
        "Ignored: described already.",
    );
    registry.describe(
        "never_recorded",
        MetricKind::Gauge,
        "No series, so no line.",
    );
    registry.describe(
        "job_seconds",
        MetricKind::Histogram(Unit::Seconds),
        "Time a job took.",
    );
    registry
        .counter(&Key::new("jobs_total").unwrap())
        .increment();
    registry
        .histogram(&Key::new("job_seconds").unwrap(), Unit::Seconds)
        .record(5);
    registry
        .counter(&Key::new("bare_total").unwrap())
        .increment();
    let text = registry.snapshot().to_prometheus_with_quantiles();
    assert!(
        text.contains(
            "# HELP jobs_total Jobs run.\\nA \\\\ backslash, then a\\nnewline.\n# TYPE jobs_total counter\n"
        ),
        "{text}"
    );
    assert!(text.contains("# HELP job_seconds Time a job took.\n# TYPE job_seconds histogram\n"));
    assert!(text.contains(
        "# HELP job_seconds_quantiles Time a job took.\n# TYPE job_seconds_quantiles summary\n"
    ));
    assert!(!text.contains("never_recorded"));
    assert!(!text.contains("# HELP bare_total"));
    // The registry describes its own counters.
    assert!(text.contains("# HELP brisk_metrics_label_overflow_total "));
    // Help travels in the JSON snapshot too.
    let snapshot = registry.snapshot();
    let json = serde_json::to_string(&snapshot).unwrap();
    let back: brisk_metrics::Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back.help["job_seconds"], "Time a job took.");
    parse(&text);
}

/// Prometheus' own checker over an exposition with every kind of series, labels that need
/// escaping, a label set past the cap (the overflow series) and a kind conflict: no
/// complaint. Needs `promtool` (Debian's `prometheus`), which `cargo xtask ci` installs.
#[test]
fn promtool_finds_nothing_to_complain_of() {
    let registry = Registry::builder().max_label_sets(2).build().unwrap();
    brisk_metrics::describe(
        &registry,
        &[
            Description {
                name: "app_request_seconds",
                kind: MetricKind::Histogram(Unit::Seconds),
                help: "Time to answer a request.",
            },
            Description {
                name: "app_response_bytes",
                kind: MetricKind::Histogram(Unit::Bytes),
                help: "Size of a response body.",
            },
            Description {
                name: "app_requests_total",
                kind: MetricKind::Counter,
                help: "Requests answered, by route.",
            },
            Description {
                name: "app_in_flight",
                kind: MetricKind::Gauge,
                help: "Requests being answered.",
            },
        ],
    );
    for route in ["/a", "/b", "/c \"quoted\"\n"] {
        let key = |name| Key::new(name).unwrap().with_label("route", route).unwrap();
        registry
            .histogram(&key("app_request_seconds"), Unit::Seconds)
            .record(1500);
        registry
            .histogram(&key("app_response_bytes"), Unit::Bytes)
            .record(4096);
        registry.counter(&key("app_requests_total")).increment();
    }
    registry.gauge(&Key::new("app_in_flight").unwrap()).set(3);
    // Registered as a counter already: a no-op, counted as a conflict.
    registry
        .gauge(&Key::new("app_requests_total").unwrap())
        .set(1);
    let text = registry.prometheus_text();
    assert!(text.contains("overflow=\"true\""), "{text}");
    brisk_testkit::promtool_check_metrics(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
    let with_quantiles = registry.snapshot().to_prometheus_with_quantiles();
    brisk_testkit::promtool_check_metrics(&with_quantiles)
        .unwrap_or_else(|error| panic!("{error}\n{with_quantiles}"));
}

/// A collector of fixed values, including ones the registry must leave out.
#[derive(Debug)]
struct Fixed;

impl brisk_metrics::Collector for Fixed {
    fn collect(&self, out: &mut Vec<brisk_metrics::SampleSnapshot>) {
        use brisk_metrics::{SampleKind, SampleSnapshot};
        out.extend([
            SampleSnapshot::new("zeta_seconds_total", SampleKind::Counter, 1.25),
            SampleSnapshot::new("alpha_ratio", SampleKind::Gauge, 0.5).label("pool", "b"),
            SampleSnapshot::new("alpha_ratio", SampleKind::Gauge, 0.25).label("pool", "a"),
            // Recorded below as a counter: the recorded series wins.
            SampleSnapshot::new("jobs_total", SampleKind::Gauge, 99.0),
            // Not a metric name, and a reserved label: both left out.
            SampleSnapshot::new("9lives", SampleKind::Gauge, 1.0),
            SampleSnapshot::new("beta", SampleKind::Gauge, 1.0).label("le", "1"),
        ]);
    }

    fn describe(&self) -> &[Description] {
        const DESCRIBED: &[Description] = &[Description {
            name: "zeta_seconds_total",
            kind: MetricKind::Counter,
            help: "Seconds of zeta.",
        }];
        DESCRIBED
    }
}

#[test]
fn collected_samples_are_floats_sorted_described_and_never_clash() {
    let registry = Registry::new();
    registry.counter(&Key::new("jobs_total").unwrap()).add(3);
    let empty = registry.snapshot();
    assert!(empty.samples.is_empty(), "no collector, no samples");

    registry.register_collector(Fixed);
    let snapshot = registry.snapshot();
    let names: Vec<(&str, Option<&str>)> = snapshot
        .samples
        .iter()
        .map(|s| (s.name.as_str(), s.labels.get("pool").map(String::as_str)))
        .collect();
    assert_eq!(
        names,
        [
            ("alpha_ratio", Some("a")),
            ("alpha_ratio", Some("b")),
            ("zeta_seconds_total", None)
        ]
    );
    assert_eq!(snapshot.counter("jobs_total", &[]), Some(3));
    assert_eq!(
        snapshot.counter("brisk_metrics_kind_conflicts_total", &[]),
        Some(3)
    );
    assert_eq!(snapshot.sample("alpha_ratio", &[("pool", "a")]), Some(0.25));

    let text = snapshot.to_prometheus();
    let scrape = parse(&text);
    match find(&scrape, "zeta_seconds_total", &[]).value {
        Value::Counter(v) => assert_eq!(v, 1.25),
        ref other => panic!("{other:?}"),
    }
    assert!(
        text.contains(
            "# HELP zeta_seconds_total Seconds of zeta.\n# TYPE zeta_seconds_total counter\n"
        ),
        "{text}"
    );
    assert_eq!(
        text.matches("# TYPE alpha_ratio gauge").count(),
        1,
        "{text}"
    );
    assert!(!text.contains("jobs_total 99"), "{text}");

    #[cfg(feature = "serde")]
    {
        let json = serde_json::to_string(&snapshot).unwrap();
        let back: brisk_metrics::Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, snapshot);
        let without: brisk_metrics::Snapshot =
            serde_json::from_str(&serde_json::to_string(&empty).unwrap()).unwrap();
        assert!(!serde_json::to_string(&without).unwrap().contains("samples"));
    }
}

/// A counter sample that grows by a known amount per collection.
#[derive(Debug, Default)]
struct Ticking(std::sync::atomic::AtomicU64);

impl brisk_metrics::Collector for Ticking {
    fn collect(&self, out: &mut Vec<brisk_metrics::SampleSnapshot>) {
        use brisk_metrics::{SampleKind, SampleSnapshot};
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as f64;
        out.push(SampleSnapshot::new(
            "work_seconds_total",
            SampleKind::Counter,
            1.5 * n,
        ));
        out.push(SampleSnapshot::new(
            "queue_depth",
            SampleKind::Gauge,
            10.0 + n,
        ));
    }
}

#[test]
fn intervals_show_counter_samples_as_growth_and_gauge_samples_as_values() {
    let registry = Registry::new();
    registry.register_collector(Ticking::default());
    let mut interval = registry.interval();
    let first = interval.snapshot();
    assert_eq!(first.sample("work_seconds_total", &[]), Some(0.0));
    assert_eq!(first.sample("queue_depth", &[]), Some(10.0));
    // Three collections later (two cumulative snapshots in between): 3 × 1.5.
    let _ = registry.snapshot();
    let _ = registry.snapshot();
    let second = interval.snapshot();
    assert_eq!(second.sample("work_seconds_total", &[]), Some(4.5));
    assert_eq!(second.sample("queue_depth", &[]), Some(13.0));
    assert_eq!(
        registry.snapshot().sample("work_seconds_total", &[]),
        Some(6.0)
    );
}
