//! The runtime collector against a real multi-thread runtime: workers, tasks, a global queue
//! filled while both workers are held, busy time and its ratio.
#![cfg(feature = "runtime")]

use std::{
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use brisk_metrics::{Registry, runtime::RuntimeCollector};

const LABEL: [(&str, &str); 1] = [("runtime", "app")];

#[test]
fn a_runtime_reports_workers_tasks_queue_and_busy_time() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::new();
    registry.register_collector(RuntimeCollector::new(runtime.handle().clone(), "app"));
    let value = |name: &str| registry.snapshot().sample(name, &LABEL).unwrap();
    assert_eq!(value("tokio_runtime_workers"), 2.0);
    assert_eq!(value("tokio_runtime_alive_tasks"), 0.0);

    // Both workers held: tasks spawned from outside wait in the global queue.
    let (held, release) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let (held, release) = (Arc::clone(&held), Arc::clone(&release));
            runtime.spawn(async move {
                held.wait();
                release.wait();
            })
        })
        .collect();
    held.wait();
    let queued: Vec<_> = (0..10).map(|_| runtime.spawn(async {})).collect();
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot.sample("tokio_runtime_global_queue_depth", &LABEL),
        Some(10.0)
    );
    assert_eq!(
        snapshot.sample("tokio_runtime_alive_tasks", &LABEL),
        Some(12.0)
    );
    release.wait();
    runtime.block_on(async {
        for task in holders.into_iter().chain(queued) {
            task.await.unwrap();
        }
    });
    assert_eq!(value("tokio_runtime_global_queue_depth"), 0.0);

    // Busy time grows while a worker spins, and the ratio since the last snapshot is a share.
    let busy_before = value("tokio_runtime_busy_seconds_total");
    runtime.block_on(async {
        tokio::spawn(async {
            let started = Instant::now();
            while started.elapsed() < Duration::from_millis(50) {
                std::hint::spin_loop();
            }
        })
        .await
        .unwrap();
    });
    // A worker hands its busy time to the runtime's metrics when it next parks.
    let deadline = Instant::now() + Duration::from_secs(30);
    let snapshot = loop {
        let snapshot = registry.snapshot();
        let busy_after = snapshot
            .sample("tokio_runtime_busy_seconds_total", &LABEL)
            .unwrap();
        if busy_after >= busy_before + 0.05 {
            break snapshot;
        }
        assert!(Instant::now() < deadline, "{busy_before} -> {busy_after}");
        std::thread::sleep(Duration::from_millis(1));
    };
    let ratio = snapshot.sample("tokio_runtime_busy_ratio", &LABEL).unwrap();
    assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");
    assert!(
        snapshot
            .sample("tokio_runtime_parks_total", &LABEL)
            .unwrap()
            >= 1.0
    );

    let text = snapshot.to_prometheus();
    assert!(
        text.contains("# TYPE tokio_runtime_busy_seconds_total counter"),
        "{text}"
    );
    assert!(
        text.contains("tokio_runtime_workers{runtime=\"app\"} 2\n"),
        "{text}"
    );
    brisk_testkit::promtool_check_metrics(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
}
