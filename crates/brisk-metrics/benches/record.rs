//! brisk-metrics against what a user would use instead, in one process: a raw hdrhistogram on
//! one thread, a `Mutex<hdrhistogram::Histogram>` shared by 2 threads, and, for scrapes,
//! metrics-exporter-prometheus rendering the same histogram series. Prints a markdown table
//! (medians of 5 runs) that `cargo xtask bench metrics` writes to docs/benchmarks.md.
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
use metrics::Recorder as _;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

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
    // `BRISK_BENCH_ONLY=scrape` prints the scrape rows alone, for quick iterations.
    if std::env::var("BRISK_BENCH_ONLY").is_ok_and(|only| only == "scrape") {
        for n in [100, 1000, 10_000] {
            let scrape = scrape(n, &values);
            println!(
                "{n} series: snapshot {:.2} ms, text {:.2} ms, metrics-exporter-prometheus {:.2} ms",
                scrape.brisk_snapshot_ms, scrape.brisk_text_ms, scrape.peer_render_ms
            );
        }
        return;
    }

    let raw_hdr = median(
        (0..RUNS)
            .map(|_| {
                let mut h = Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap();
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
                    Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 2).unwrap(),
                ));
                on_threads(2, |v| {
                    for i in 0..OPS {
                        h.lock().unwrap().saturating_record(black_box(v[i & mask]));
                    }
                })
            })
            .collect(),
    );

    // Memory of the 100-series registry of the scrape section, per series.
    let scrapes: Vec<Scrape> = [100, 1000, 10_000].map(|n| scrape(n, &values)).into();
    let per_series_kib = scrapes[0].brisk_bytes_per_series / 1024.0;
    let hdr_kib = Hdr::<u64>::new_with_bounds(1, 3_600_000_000, 2)
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
    for scrape in &scrapes {
        let n = scrape.series;
        println!(
            "| snapshot of {n} histogram series (ms) | {:.2} | metrics-exporter-prometheus render: {:.2} | {:.2} |",
            scrape.brisk_snapshot_ms,
            scrape.peer_render_ms,
            scrape.brisk_snapshot_ms / scrape.peer_render_ms
        );
        println!(
            "| Prometheus text of {n} histogram series (ms) | {:.2} | metrics-exporter-prometheus render: {:.2} | {:.2} |",
            scrape.brisk_text_ms,
            scrape.peer_render_ms,
            scrape.brisk_text_ms / scrape.peer_render_ms
        );
        println!(
            "| memory of {n} histogram series, per series (KiB, RSS growth) | {:.1} | metrics-exporter-prometheus: {:.1} | {:.2} |",
            scrape.brisk_rss_per_series / 1024.0,
            scrape.peer_rss_per_series / 1024.0,
            scrape.brisk_rss_per_series / scrape.peer_rss_per_series
        );
    }
    println!(
        "| memory per series, latencies over 1 µs..100 ms, {stripes} stripes (KiB) | {per_series_kib:.0} | hdrhistogram 1 µs..1 h, 2 digits: {hdr_kib:.0} | {:.2} |",
        per_series_kib / hdr_kib
    );
    println!();
    println!(
        "Histograms keep brisk's default 2 significant digits. Scrapes: each series holds \
         {SERIES_VALUES} latencies (log-uniform, 1 µs to about 260 ms) and gets \
         {NEW_PER_SCRAPE} new ones, untimed, before each timed scrape; median of {RUNS}. The \
         peer is metrics-exporter-prometheus 0.18 with the same bucket bounds; its `render` \
         folds the values recorded since the last render into its buckets, which is part of \
         its scrape as it is in use. Memory is the growth of the resident set while the \
         series are created and filled."
    );
}

/// Values each series holds before the timed scrapes, and values added before each one.
const SERIES_VALUES: usize = 1000;
const NEW_PER_SCRAPE: usize = 100;

/// One scrape comparison: `series` histogram series in a brisk `Registry` and in
/// metrics-exporter-prometheus's recorder, holding the same values with the same buckets.
struct Scrape {
    series: usize,
    brisk_snapshot_ms: f64,
    brisk_text_ms: f64,
    peer_render_ms: f64,
    brisk_bytes_per_series: f64,
    brisk_rss_per_series: f64,
    peer_rss_per_series: f64,
}

/// Resident memory of this process, in bytes (Linux; 0 elsewhere).
fn rss_bytes() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0)
}

/// Times a scrape as Prometheus makes one every few seconds: before each timed run, every
/// series gets `NEW_PER_SCRAPE` new values (untimed); then brisk's snapshot, brisk's text, and
/// the peer's render are timed. The peer drains the values recorded since its last render
/// into its buckets during `render`, so that work is part of its scrape, as it is in use.
fn scrape(series: usize, values: &[u64]) -> Scrape {
    let mask = values.len() - 1;
    let key = |s: usize| {
        Key::new("bench_seconds")
            .unwrap()
            .with_label("series", s.to_string())
            .unwrap()
    };
    let rss_before = rss_bytes();
    let registry = Registry::builder()
        .max_label_sets(series + 1)
        .build()
        .unwrap();
    let brisk: Vec<_> = (0..series)
        .map(|s| registry.histogram(&key(s), Unit::Seconds))
        .collect();
    for (s, h) in brisk.iter().enumerate() {
        for i in 0..SERIES_VALUES {
            h.record(values[(s * 7 + i) & mask]);
        }
    }
    let brisk_rss = rss_bytes() - rss_before;
    let bounds: Vec<f64> = registry.snapshot().histograms[0]
        .buckets
        .iter()
        .map(|bucket| bucket.le)
        .collect();

    let rss_before = rss_bytes();
    let recorder: PrometheusRecorder = PrometheusBuilder::new()
        .set_buckets(&bounds)
        .unwrap()
        .build_recorder();
    let handle = recorder.handle();
    let metadata = metrics::Metadata::new("bench", metrics::Level::INFO, None);
    let peer: Vec<_> = (0..series)
        .map(|s| {
            let key = metrics::Key::from_parts(
                "bench_seconds",
                vec![metrics::Label::new("series", s.to_string())],
            );
            recorder.register_histogram(&key, &metadata)
        })
        .collect();
    for (s, h) in peer.iter().enumerate() {
        for i in 0..SERIES_VALUES {
            h.record(values[(s * 7 + i) & mask] as f64 / 1e6);
        }
    }
    black_box(handle.render());
    let peer_rss = rss_bytes() - rss_before;

    let mut brisk_snapshot = Vec::new();
    let mut brisk_text = Vec::new();
    let mut peer_render = Vec::new();
    for run in 0..RUNS {
        for (s, (ours, theirs)) in brisk.iter().zip(&peer).enumerate() {
            for i in 0..NEW_PER_SCRAPE {
                let v = values[(s * 13 + run * NEW_PER_SCRAPE + i) & mask];
                ours.record(v);
                theirs.record(v as f64 / 1e6);
            }
        }
        brisk_snapshot.push(time_ms(|| registry.snapshot()));
        brisk_text.push(time_ms(|| registry.prometheus_text()));
        peer_render.push(time_ms(|| handle.render()));
    }
    // Both exposition texts carry every series.
    assert_eq!(
        registry
            .prometheus_text()
            .matches("bench_seconds_count")
            .count(),
        series
    );
    assert_eq!(
        handle.render().matches("bench_seconds_count").count(),
        series
    );
    Scrape {
        series,
        brisk_snapshot_ms: median(brisk_snapshot),
        brisk_text_ms: median(brisk_text),
        peer_render_ms: median(peer_render),
        brisk_bytes_per_series: registry.histogram_heap_bytes() as f64 / series as f64,
        brisk_rss_per_series: brisk_rss / series as f64,
        peer_rss_per_series: peer_rss / series as f64,
    }
}

/// Wall time of one call of `f`, in milliseconds.
fn time_ms<T>(f: impl FnOnce() -> T) -> f64 {
    let start = Instant::now();
    black_box(f());
    start.elapsed().as_secs_f64() * 1e3
}
