//! The Registry as a user sees it: recording, snapshots, exposition, limits.

use std::{sync::Arc, thread, time::Duration};

use brisk_metrics::{Error, Key, NoopRecorder, Recorder, Registry, Snapshot, Unit};

fn key(name: &'static str) -> Key {
    Key::new(name).unwrap()
}

#[test]
fn concurrent_recording_loses_no_sample() {
    let registry = Registry::builder().stripes(4).build().unwrap();
    let histogram = registry.histogram(&key("work_seconds"), Unit::Seconds);
    let counter = registry.counter(&key("work_total"));
    let gauge = registry.gauge(&key("in_flight"));
    const THREADS: u64 = 8;
    const PER_THREAD: u64 = 50_000;
    thread::scope(|s| {
        for t in 0..THREADS {
            let (histogram, counter, gauge) = (histogram.clone(), counter.clone(), gauge.clone());
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    gauge.increment();
                    histogram.record(1 + (i * 7 + t) % 100_000);
                    counter.increment();
                    gauge.decrement();
                }
            });
        }
        // Snapshots taken while recording must neither block nor disturb it.
        let registry = registry.clone();
        s.spawn(move || {
            for _ in 0..20 {
                let snap = registry.snapshot();
                assert!(snap.histogram("work_seconds", &[]).unwrap().count <= THREADS * PER_THREAD);
            }
        });
    });
    let snap = registry.snapshot();
    assert_eq!(
        snap.histogram("work_seconds", &[]).unwrap().count,
        THREADS * PER_THREAD
    );
    assert_eq!(snap.counter("work_total", &[]), Some(THREADS * PER_THREAD));
    assert_eq!(snap.gauge("in_flight", &[]), Some(0));
}

#[test]
fn quantiles_agree_with_hdrhistogram() {
    let registry = Registry::new();
    let ours = registry.histogram(&key("latency_seconds"), Unit::Seconds);
    // The default precision: 2 significant digits.
    let mut theirs = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
    let mut x: u64 = 42;
    for _ in 0..200_000 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        // Log-uniform between 1 µs and ~1 s, like real latencies.
        let micros = (1u64 << ((x >> 59) % 20)) | ((x >> 40) % 1024);
        ours.record(micros);
        theirs.record(micros).unwrap();
    }
    let snap = registry.snapshot();
    let h = snap.histogram("latency_seconds", &[]).unwrap();
    assert_eq!(h.count, theirs.len());
    for (ours, q) in [
        (h.p50, 0.5),
        (h.p90, 0.9),
        (h.p95, 0.95),
        (h.p99, 0.99),
        (h.p999, 0.999),
    ] {
        let expected = theirs.value_at_quantile(q) as f64 * 1e-6;
        assert!(
            (ours - expected).abs() <= expected * 1e-9,
            "q{q}: {ours} vs {expected}"
        );
    }
    assert!((h.mean - theirs.mean() * 1e-6).abs() < 1e-9);
    assert_eq!(h.min, theirs.min() as f64 * 1e-6);
}

#[test]
fn durations_are_shown_in_seconds_and_saturate_at_the_range() {
    let registry = Registry::builder()
        .duration_range(Duration::from_micros(1), Duration::from_secs(10))
        .build()
        .unwrap();
    let h = registry.histogram(&key("d_seconds"), Unit::Seconds);
    h.record_duration(Duration::from_millis(5));
    h.record_duration(Duration::from_secs(3600));
    h.record_duration(Duration::MAX);
    let snap = registry.snapshot();
    let s = snap.histogram("d_seconds", &[]).unwrap();
    assert_eq!(s.count, 3);
    assert_eq!(s.saturated, 2);
    assert!((s.p50 - 10.0).abs() < 10.0 * 0.01, "{}", s.p50);
    assert!((s.min - 0.005).abs() < 0.005 * 0.01);
}

#[test]
fn label_sets_beyond_the_cap_go_to_the_overflow_series() {
    let registry = Registry::builder().max_label_sets(3).build().unwrap();
    for user in 0..10 {
        let k = key("req_total")
            .with_label("user", user.to_string())
            .unwrap();
        registry.counter(&k).increment();
    }
    let snap = registry.snapshot();
    let series: Vec<_> = snap
        .counters
        .iter()
        .filter(|c| c.name == "req_total")
        .collect();
    assert_eq!(series.len(), 4, "3 label sets plus overflow: {series:?}");
    assert_eq!(snap.counter("req_total", &[("overflow", "true")]), Some(7));
    assert_eq!(
        snap.counter("brisk_metrics_label_overflow_total", &[]),
        Some(7)
    );
    // Re-registering an existing label set is not an overflow.
    registry
        .counter(&key("req_total").with_label("user", "0").unwrap())
        .increment();
    assert_eq!(
        registry.snapshot().counter("req_total", &[("user", "0")]),
        Some(2)
    );
}

#[test]
fn a_name_reused_for_another_kind_gets_a_noop_handle_and_is_counted() {
    let registry = Registry::new();
    registry.counter(&key("thing")).increment();
    registry.histogram(&key("thing"), Unit::Count).record(5);
    registry
        .gauge(&key("thing").with_label("a", "b").unwrap())
        .set(3);
    let snap = registry.snapshot();
    assert!(snap.histograms.is_empty());
    assert!(snap.gauges.is_empty());
    assert_eq!(snap.counter("thing", &[]), Some(1));
    assert_eq!(
        snap.counter("brisk_metrics_kind_conflicts_total", &[]),
        Some(2)
    );
}

#[test]
fn interval_snapshots_cover_only_what_happened_since_the_last() {
    let registry = Registry::new();
    let h = registry.histogram(&key("i_seconds"), Unit::Seconds);
    let c = registry.counter(&key("i_total"));
    let mut interval = registry.interval();
    h.record(1000);
    c.add(3);
    let first = interval.snapshot();
    assert_eq!(first.histogram("i_seconds", &[]).unwrap().count, 1);
    assert_eq!(first.counter("i_total", &[]), Some(3));
    h.record(50_000);
    h.record(50_000);
    c.add(2);
    let second = interval.snapshot();
    let hs = second.histogram("i_seconds", &[]).unwrap();
    assert_eq!(hs.count, 2);
    assert!((hs.p50 - 0.05).abs() < 0.05 * 0.01, "{}", hs.p50);
    assert_eq!(second.counter("i_total", &[]), Some(2));
    let cumulative = registry.snapshot();
    assert_eq!(cumulative.histogram("i_seconds", &[]).unwrap().count, 3);
    assert_eq!(interval.snapshot().counter("i_total", &[]), Some(0));
}

#[test]
fn empty_series_and_rates_have_no_division_by_zero() {
    let registry = Registry::new();
    registry.histogram(&key("e_seconds"), Unit::Seconds);
    registry.counter(&key("hits_total"));
    registry.counter(&key("misses_total"));
    let snap = registry.snapshot();
    let h = snap.histogram("e_seconds", &[]).unwrap();
    assert_eq!((h.count, h.mean, h.p99, h.sum), (0, 0.0, 0.0, 0.0));
    assert_eq!(snap.hit_ratio("hits_total", "misses_total", &[]), None);
    assert_eq!(snap.ratio("hits_total", "misses_total", &[]), None);
    registry.counter(&key("hits_total")).add(3);
    registry.counter(&key("misses_total")).add(1);
    assert_eq!(
        registry
            .snapshot()
            .hit_ratio("hits_total", "misses_total", &[]),
        Some(0.75)
    );
}

#[test]
fn timers_record_on_drop_stop_and_cancellation_but_not_discard() {
    let registry = Registry::new();
    let h = registry.histogram(&key("t_seconds"), Unit::Seconds);
    {
        let _timer = h.start_timer();
    }
    let elapsed = h.start_timer().stop();
    h.start_timer().discard();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(h.time(async { 7 }).await, 7);
        // A timed future dropped before completion still records.
        let pending = h.time(std::future::pending::<()>());
        let _ = tokio::time::timeout(Duration::from_millis(1), pending).await;
    });
    let snap = registry.snapshot();
    let t = snap.histogram("t_seconds", &[]).unwrap();
    assert_eq!(t.count, 4);
    assert!(
        t.max >= 0.001,
        "the cancelled future ran at least 1 ms: {}",
        t.max
    );
    assert!(elapsed < Duration::from_secs(60));
}

#[test]
fn noop_recorder_records_nothing() {
    let noop = NoopRecorder;
    let (histogram, counter, gauge) = (
        noop.histogram(&key("n"), Unit::Seconds),
        noop.counter(&key("n")),
        noop.gauge(&key("n")),
    );
    histogram.record(5);
    counter.increment();
    gauge.set(1);
    assert!(histogram.is_noop() && counter.is_noop() && gauge.is_noop());
    // A registry behind `dyn Recorder` records, and its handles say so.
    let registry = Arc::new(Registry::new());
    let shared: Arc<dyn Recorder> = registry.clone();
    let counter = shared.counter(&key("via_dyn_total"));
    counter.increment();
    assert!(!counter.is_noop());
    assert!(!shared.histogram(&key("h_seconds"), Unit::Seconds).is_noop());
    assert!(!shared.gauge(&key("g")).is_noop());
    assert_eq!(registry.snapshot().counter("via_dyn_total", &[]), Some(1));
}

#[test]
fn invalid_configuration_is_a_typed_error_naming_the_setting() {
    let refused = |builder: brisk_metrics::RegistryBuilder| match builder.build() {
        Err(Error::Config { setting, .. }) => setting,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refused(Registry::builder().significant_digits(6)),
        "significant_digits"
    );
    assert_eq!(
        refused(Registry::builder().value_range(10, 15)),
        "value_range"
    );
    assert_eq!(
        refused(Registry::builder().value_range(0, 15)),
        "value_range"
    );
    assert_eq!(
        refused(
            Registry::builder().duration_range(Duration::from_secs(10), Duration::from_secs(15))
        ),
        "duration_range"
    );
    assert_eq!(
        refused(Registry::builder().buckets(Unit::Seconds, vec![1.0, 0.5])),
        "buckets"
    );
    assert_eq!(
        refused(Registry::builder().buckets(Unit::Count, vec![f64::NAN])),
        "buckets"
    );
    assert_eq!(
        refused(Registry::builder().buckets(Unit::Count, vec![])),
        "buckets"
    );
    assert_eq!(
        refused(Registry::builder().max_label_sets(0)),
        "max_label_sets"
    );
    assert_eq!(refused(Registry::builder().stripes(0)), "stripes");
    assert!(Registry::builder().stripes(1).build().is_ok());
}

#[test]
fn json_snapshot_round_trips() {
    let registry = Registry::new();
    registry
        .histogram(
            &key("j_seconds").with_label("route", "/a").unwrap(),
            Unit::Seconds,
        )
        .record(1234);
    registry.counter(&key("j_total")).add(9);
    registry.gauge(&key("j_gauge")).set(-4);
    let snap = registry.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, snap);
    assert!(json.contains("\"unit\":\"seconds\""), "{json}");
}
