//! Performance budgets: violations found, malformed files rejected with their line.

use std::time::Duration;

use brisk_metrics::{Budgets, Error, Key, Recorder, Registry, Unit};

fn snapshot_with(latency_ms: &[u64], errors: u64, total: u64) -> brisk_metrics::Snapshot {
    let registry = Registry::new();
    let h = registry.histogram(
        &Key::new("http_request_seconds")
            .unwrap()
            .with_label("route", "/users")
            .unwrap(),
        Unit::Seconds,
    );
    for &ms in latency_ms {
        h.record_duration(Duration::from_millis(ms));
    }
    registry
        .counter(&Key::new("http_errors_total").unwrap())
        .add(errors);
    registry
        .counter(&Key::new("http_requests_total").unwrap())
        .add(total);
    registry.snapshot()
}

const BUDGETS: &str = r#"
[[latency]]
metric = "http_request_seconds"
labels = { route = "/users" }
p50 = "20ms"
p99 = 0.1

[[error_rate]]
errors = "http_errors_total"
total = "http_requests_total"
max = 0.01
"#;

#[test]
fn budgets_that_hold_report_nothing() {
    let budgets: Budgets = BUDGETS.parse().unwrap();
    assert_eq!(budgets.check(&snapshot_with(&[5, 10, 15], 0, 100)), vec![]);
    // No traffic: an unknown error rate is not a violation.
    assert_eq!(budgets.check(&snapshot_with(&[5], 0, 0)), vec![]);
}

#[test]
fn every_violation_is_reported_with_observed_and_limit() {
    let budgets: Budgets = BUDGETS.parse().unwrap();
    let violations = budgets.check(&snapshot_with(&[30, 30, 500], 5, 100));
    let checks: Vec<&str> = violations.iter().map(|v| v.check.as_str()).collect();
    assert_eq!(checks, ["p50", "p99", "error_rate"]);
    let p50 = &violations[0];
    assert_eq!(p50.series, r#"http_request_seconds{route="/users"}"#);
    assert!((p50.observed.unwrap() - 0.030).abs() < 0.0001);
    assert_eq!(p50.limit, 0.02);
    assert_eq!(violations[2].observed, Some(0.05));
    assert!(
        violations[2]
            .to_string()
            .contains("exceeds the budget of 0.01")
    );
}

#[test]
fn a_missing_metric_is_a_violation() {
    let budgets: Budgets = "[[latency]]\nmetric = \"renamed_seconds\"\np99 = \"5ms\"\n"
        .parse()
        .unwrap();
    let violations = budgets.check(&snapshot_with(&[1], 0, 1));
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].observed, None);
    assert!(violations[0].to_string().contains("missing"));
}

fn syntax_error(text: &str) -> (usize, String) {
    match text.parse::<Budgets>() {
        Err(Error::BudgetSyntax { line, message, .. }) => (line, message),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn malformed_budget_files_name_the_line() {
    let (line, message) = syntax_error("[[latency]]\nmetric = \"m\"\np99 = \"20 parsecs\"\n");
    assert_eq!(line, 3, "{message}");
    assert!(message.contains("not a duration"), "{message}");

    let (line, message) = syntax_error("[[latency]]\nmetric = \"m\"\n\np98 = \"20ms\"\n");
    assert_eq!(line, 4, "{message}");
    assert!(message.contains("p98"), "{message}");

    let (line, _) = syntax_error("[[error_rate]]\nerrors = \"e\"\ntotal = \"t\"\nmax = 1.5\n");
    assert_eq!(line, 4);

    let (line, _) = syntax_error("[[latency]]\nmetric = \"m\"\np99 = -1\n");
    assert_eq!(line, 3);

    let (line, _) = syntax_error("[[latency]\nmetric = \"m\"\n");
    assert_eq!(line, 1);

    let (line, message) = syntax_error("[[latency]]\np99 = \"1s\"\n");
    assert!(message.contains("metric"), "{line}: {message}");
}

#[test]
fn unreadable_budget_file_is_an_io_error_naming_the_path() {
    let err = Budgets::from_file("/nonexistent/budgets.toml").unwrap_err();
    assert!(matches!(err, Error::BudgetIo { .. }));
    assert!(err.to_string().contains("/nonexistent/budgets.toml"));
}
