//! The Prometheus text, read back by an independent parser.

use std::collections::HashMap;

use brisk_metrics::{Key, Recorder, Registry, Unit};
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
    let text = registry.prometheus_text();
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
        "http_request_seconds_summary",
        &[("route", "/users/:id")],
    )
    .value
    {
        Value::Summary(quantiles) => {
            let p50 = quantiles.iter().find(|q| q.quantile == 0.5).unwrap().count;
            assert!((p50 - 0.003).abs() < 0.003 * 0.001, "{p50}");
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
    assert!((sum - 0.450).abs() < 0.450 * 0.001, "{sum}");
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
    let text = registry.prometheus_text();
    assert_eq!(text.matches("# TYPE r_seconds histogram").count(), 1);
    assert_eq!(text.matches("# TYPE r_seconds_summary summary").count(), 1);
    parse(&text);
}
