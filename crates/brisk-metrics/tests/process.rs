//! The process collector against this very process: one test in its own binary, so no other
//! test opens files or starts threads while it counts them.
#![cfg(all(feature = "process", target_os = "linux"))]

use brisk_metrics::{
    MetricKind, Recorder, Registry,
    process::{ProcessCollector, ProcessStats},
};

#[test]
fn this_process_reads_as_itself_and_scrapes_as_prometheus_names_it() {
    let before = ProcessStats::read().unwrap();
    assert!(before.resident_memory_bytes > 0);
    assert!(before.virtual_memory_bytes >= before.resident_memory_bytes);
    assert!(before.threads >= 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(before.start_time_seconds <= now + 1.0, "{before:?}");
    assert!(before.start_time_seconds > now - 86_400.0, "{before:?}");

    // One more open file is one more descriptor.
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let with_file = ProcessStats::read().unwrap();
    assert_eq!(with_file.open_fds, before.open_fds + 1);
    drop(file);

    // A thread more is a thread more, while it lives.
    let (started, stop) = (std::sync::Barrier::new(2), std::sync::Barrier::new(2));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            started.wait();
            stop.wait();
        });
        started.wait();
        let threads = ProcessStats::read().map(|stats| stats.threads);
        stop.wait();
        assert_eq!(threads.unwrap(), before.threads + 1);
    });

    // CPU time grows with work done (it is counted in 10 ms ticks).
    let mut spun = 0_u64;
    while ProcessStats::read().unwrap().cpu_seconds <= before.cpu_seconds {
        for i in 0..100_000_u64 {
            spun = std::hint::black_box(spun.wrapping_add(i));
        }
    }

    // Through a registry: the names, kinds and help Prometheus' own collectors use, in text
    // promtool accepts, with the recorded series beside them.
    let registry = Registry::new();
    registry.register_collector(ProcessCollector::new());
    registry.describe("requests_total", MetricKind::Counter, "Requests served.");
    registry
        .counter(&brisk_metrics::Key::new("requests_total").unwrap())
        .increment();
    let snapshot = registry.snapshot();
    let cpu = snapshot.sample("process_cpu_seconds_total", &[]).unwrap();
    assert!(cpu >= before.cpu_seconds, "{cpu} < {before:?}");
    assert_eq!(
        snapshot.sample("brisk_metrics_process_read_failures_total", &[]),
        Some(0.0)
    );
    let text = snapshot.to_prometheus();
    for line in [
        "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_threads gauge",
        "# TYPE process_start_time_seconds gauge",
        "requests_total 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    brisk_testkit::promtool_check_metrics(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
}
