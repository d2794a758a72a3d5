//! brisk-batch's `Loader` beside dataloader 0.18 (the crate a user would pick instead) in one
//! process: loads/s with 100 and 1000 concurrent tasks, the mean batch size, and the latency a
//! loader adds to a lone caller. The batch function is the same for both: it sleeps 200 µs on
//! the tokio timer (which rounds up to its 1 ms tick, as a real query's wait would not) and
//! returns one value per key; max batch size 100, no cache. Prints a markdown table (median of
//! 3 runs) that `cargo xtask bench batch` writes to docs/benchmarks.md.
#![allow(
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark binary reports on stdout"
)]

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use brisk_batch::{BatchLoad, Loaded, Loader};
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;

const RUNS: usize = 3;
const MAX_BATCH: usize = 100;
const BATCH_TIME: Duration = Duration::from_micros(200);
const MEASURE: Duration = Duration::from_secs(2);
const LONE_LOADS: usize = 1000;

/// What both batch functions count: calls, keys, and time spent inside.
#[derive(Default)]
struct Tally {
    batches: AtomicU64,
    keys: AtomicU64,
    inside_ns: AtomicU64,
}

impl Tally {
    async fn batch(&self, keys: &[u64]) -> HashMap<u64, u64> {
        let start = Instant::now();
        tokio::time::sleep(BATCH_TIME).await;
        let values = keys.iter().map(|&k| (k, k + 1)).collect();
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.keys.fetch_add(keys.len() as u64, Ordering::Relaxed);
        self.inside_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        values
    }

    fn mean_batch(&self) -> f64 {
        self.keys.load(Ordering::Relaxed) as f64
            / self.batches.load(Ordering::Relaxed).max(1) as f64
    }
}

struct Brisk(Arc<Tally>);

impl BatchLoad for Brisk {
    type Key = u64;
    type Value = u64;
    type Error = Infallible;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64>, Infallible> {
        Ok(self.0.batch(keys).await.into())
    }
}

struct Peer(Arc<Tally>);

impl dataloader::BatchFn<u64, u64> for Peer {
    async fn load(&mut self, keys: &[u64]) -> HashMap<u64, u64> {
        self.0.batch(keys).await
    }
}

type PeerLoader = dataloader::non_cached::Loader<u64, u64, Peer>;

/// The two loaders behind one call shape.
#[derive(Clone)]
enum Subject {
    Brisk(Loader<Brisk>),
    Peer(PeerLoader),
}

impl Subject {
    fn new(brisk: bool, tally: &Arc<Tally>) -> Self {
        if brisk {
            Self::Brisk(
                Loader::builder(Brisk(Arc::clone(tally)))
                    .max_batch_size(MAX_BATCH)
                    .build()
                    .unwrap(),
            )
        } else {
            Self::Peer(PeerLoader::new(Peer(Arc::clone(tally))).with_max_batch_size(MAX_BATCH))
        }
    }

    async fn load(&self, key: u64) -> u64 {
        match self {
            Self::Brisk(loader) => loader.load(key).await.unwrap().unwrap(),
            Self::Peer(loader) => loader.load(key).await,
        }
    }
}

struct Load {
    loads_per_s: f64,
    mean_batch: f64,
}

/// `tasks` tasks, each loading its own keys one after another, for `MEASURE`.
fn under_load(runtime: &Runtime, brisk: bool, tasks: u64) -> Load {
    runtime.block_on(async {
        let tally = Arc::new(Tally::default());
        let subject = Subject::new(brisk, &tally);
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let (subject, stop) = (subject.clone(), stop.clone());
                tokio::spawn(async move {
                    let first = task << 32;
                    let mut key = first;
                    while !stop.load(Ordering::Relaxed) {
                        assert_eq!(subject.load(key).await, key + 1);
                        key += 1;
                    }
                    key - first
                })
            })
            .collect();
        tokio::time::sleep(MEASURE).await;
        stop.store(true, Ordering::Relaxed);
        let mut loads = 0;
        for handle in handles {
            loads += handle.await.unwrap();
        }
        Load {
            loads_per_s: loads as f64 / start.elapsed().as_secs_f64(),
            mean_batch: tally.mean_batch(),
        }
    })
}

/// One task loading alone: the time a load takes beyond the batch function's own, in µs
/// (p50, p99).
fn added_latency(runtime: &Runtime, brisk: bool) -> (f64, f64) {
    runtime.block_on(async {
        let tally = Arc::new(Tally::default());
        let subject = Subject::new(brisk, &tally);
        let mut added = Histogram::<u64>::new(3).unwrap();
        for key in 0..LONE_LOADS as u64 {
            let inside_before = tally.inside_ns.load(Ordering::Relaxed);
            let start = Instant::now();
            subject.load(key).await;
            let total = start.elapsed().as_nanos() as u64;
            let inside = tally.inside_ns.load(Ordering::Relaxed) - inside_before;
            added.record(total.saturating_sub(inside) / 1000).unwrap();
        }
        (
            added.value_at_quantile(0.5) as f64,
            added.value_at_quantile(0.99) as f64,
        )
    })
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "Batch function: 200 µs `tokio::time::sleep` (1–2 ms on the tokio timer), max batch {MAX_BATCH}, no cache; \
         2 worker threads; each task loads its own keys one after another for {} s; median of {RUNS} runs.\n",
        MEASURE.as_secs()
    );
    println!(
        "| concurrent tasks | brisk loads/s | dataloader loads/s | brisk / dataloader | brisk mean batch | dataloader mean batch |"
    );
    println!("|---|---|---|---|---|---|");
    for tasks in [100, 1000] {
        let mut ours = (Vec::new(), Vec::new());
        let mut theirs = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            let brisk = under_load(&runtime, true, tasks);
            let peer = under_load(&runtime, false, tasks);
            ours.0.push(brisk.loads_per_s);
            ours.1.push(brisk.mean_batch);
            theirs.0.push(peer.loads_per_s);
            theirs.1.push(peer.mean_batch);
        }
        let (brisk, peer) = (median(ours.0), median(theirs.0));
        println!(
            "| {tasks} | {brisk:.0} | {peer:.0} | **{:.2}×** | {:.1} | {:.1} |",
            brisk / peer,
            median(ours.1),
            median(theirs.1),
        );
    }
    let mut ours = (Vec::new(), Vec::new());
    let mut theirs = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (p50, p99) = added_latency(&runtime, true);
        ours.0.push(p50);
        ours.1.push(p99);
        let (p50, p99) = added_latency(&runtime, false);
        theirs.0.push(p50);
        theirs.1.push(p99);
    }
    println!(
        "\nOne task loading alone ({LONE_LOADS} loads): latency added to the batch function's own time. \
         brisk closes a batch once two scheduler turns and 10 µs pass with no new key (1 ms at most while keys keep coming); dataloader yields 10 times.\n"
    );
    println!("| | p50 added | p99 added |");
    println!("|---|---|---|");
    println!(
        "| brisk (adaptive, 1 ms at most) | {:.0} µs | {:.0} µs |",
        median(ours.0),
        median(ours.1)
    );
    println!(
        "| dataloader (10 yields) | {:.0} µs | {:.0} µs |",
        median(theirs.0),
        median(theirs.1)
    );
    println!(
        "\nTargets: a lone caller's p99 ≤ 50 µs; at 1000 tasks a mean batch ≥ 90 and ≥ 10× \
         dataloader; ≥ 1.0× at 100 tasks. Across runs the lone p99 has read 45-51 µs and the \
         1000-task ratio 9.0-9.7x (mean batches 90-95): the ceiling is \
         the batch function's own time (tokio's timer turns the 200 µs sleep into 1-2 ms, so ten \
         full batches in flight pass about 1000 keys per 1.1-1.5 ms), and dataloader's rate is \
         one batch at a time. The fixed 1 ms window reached 9.7x with full batches; closing a \
         batch early (two quiet turns and 10 µs) trades a little of that for the lone caller's \
         latency. Tried: two quiet turns alone (lone p99 33 µs, batches of 82), four (43 µs, \
         86), a 20 µs quiet time (63 µs, 93); docs/batching.md has the detail."
    );
}
