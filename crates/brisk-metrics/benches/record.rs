//! brisk-metrics against what a user would use instead, in one process: a raw hdrhistogram on
//! one thread, and a `Mutex<hdrhistogram::Histogram>` shared by 2 threads. Prints a markdown
//! table (median of 5 runs) that `cargo xtask bench metrics` writes to docs/benchmarks.md.
#![allow(
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark binary reports on stdout"
)]

use std::{
    hint::black_box,
    sync::{Arc, Barrier, Mutex},
    thread,
    time::{Duration, Instant},
};

use brisk_metrics::{Key, Recorder, Registry, Unit};
use hdrhistogram::Histogram as Hdr;

const OPS: usize = 5_000_000;
const RUNS: usize = 5;

/// Log-uniform latencies from 1 µs to ~100 ms, precomputed so no RNG runs in the timed loop.
fn values() -> Vec<u64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let magnitude = (x >> 58) % 17;
            (1 << magnitude) + (x >> 20) % (1 << magnitude)
        })
        .collect()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Median wall time of `RUNS` calls of `f`, in milliseconds.
fn median_ms<T>(mut f: impl FnMut() -> T) -> f64 {
    median(
        (0..RUNS)
            .map(|_| {
                let start = Instant::now();
                black_box(f());
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

/// ns per record for one thread doing `OPS` records.
fn per_op(elapsed: Duration) -> f64 {
    elapsed.as_nanos() as f64 / OPS as f64
}

/// Runs `work` on `threads` threads at once; returns the slowest thread's ns per record.
fn on_threads(threads: usize, work: impl Fn(&[u64]) + Sync) -> f64 {
    let values = values();
    let barrier = Barrier::new(threads);
    let slowest = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    work(&values);
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    });
    per_op(slowest)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let values = values();
    let mask = values.len() - 1;

    let raw_hdr = median(
        (0..RUNS)
            .map(|_| {
                let mut h = Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
                let start = Instant::now();
                for i in 0..OPS {
                    h.saturating_record(black_box(values[i & mask]));
                }
                black_box(&h);
                per_op(start.elapsed())
            })
            .collect(),
    );

    let brisk = |threads: usize| {
        median(
            (0..RUNS)
                .map(|_| {
                    let registry = Registry::new();
                    let h = registry.histogram(&Key::new("bench_seconds").unwrap(), Unit::Seconds);
                    on_threads(threads, |v| {
                        for i in 0..OPS {
                            h.record(black_box(v[i & mask]));
                        }
                    })
                })
                .collect(),
        )
    };
    let brisk_1 = brisk(1);
    let brisk_2 = brisk(2);

    let mutex_2 = median(
        (0..RUNS)
            .map(|_| {
                let h = Arc::new(Mutex::new(
                    Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
                ));
                on_threads(2, |v| {
                    for i in 0..OPS {
                        h.lock().unwrap().saturating_record(black_box(v[i & mask]));
                    }
                })
            })
            .collect(),
    );

    // Snapshot of 100 series, each with 10k latencies spread over 1 µs..100 ms.
    let registry = Registry::new();
    for s in 0..100 {
        let key = Key::new("bench_seconds")
            .unwrap()
            .with_label("series", s.to_string())
            .unwrap();
        let h = registry.histogram(&key, Unit::Seconds);
        for v in values.iter().cycle().take(10_000) {
            h.record(*v);
        }
    }
    let snapshot_ms = median_ms(|| black_box(registry.snapshot()));
    let prometheus_ms = median_ms(|| black_box(registry.prometheus_text()));
    let per_series_kib = registry.histogram_heap_bytes() as f64 / 100.0 / 1024.0;
    let hdr_kib = Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap()
        .distinct_values() as f64
        * 8.0
        / 1024.0;
    let stripes = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .next_power_of_two()
        .min(8);

    println!("| measurement | brisk-metrics | peer | brisk / peer |");
    println!("|---|---|---|---|");
    println!(
        "| record, 2 threads, one histogram (ns/op per thread) | {brisk_2:.1} | Mutex<hdrhistogram>: {mutex_2:.1} | {:.2} |",
        brisk_2 / mutex_2
    );
    println!(
        "| record, 2 threads vs raw hdrhistogram on 1 thread (ns/op) | {brisk_2:.1} | raw hdrhistogram: {raw_hdr:.1} | {:.2} |",
        brisk_2 / raw_hdr
    );
    println!(
        "| record, 1 thread (ns/op) | {brisk_1:.1} | raw hdrhistogram: {raw_hdr:.1} | {:.2} |",
        brisk_1 / raw_hdr
    );
    println!("| snapshot of 100 series (ms) | {snapshot_ms:.2} | | |");
    println!("| Prometheus text of 100 series (ms) | {prometheus_ms:.2} | | |");
    println!(
        "| memory per series, latencies over 1 µs..100 ms, {stripes} stripes (KiB) | {per_series_kib:.0} | hdrhistogram 1 µs..1 h, 3 digits: {hdr_kib:.0} | {:.2} |",
        per_series_kib / hdr_kib
    );
}
