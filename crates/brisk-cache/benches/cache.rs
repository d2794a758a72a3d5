//! brisk-cache's `MemoryCache` beside the caches a user would pick instead, in one process:
//! quick_cache, moka and a 64-shard `Mutex<lru::LruCache>` for speed; those and a plain LRU
//! for hit ratio, on synthetic traces and the ARC paper's OLTP trace; memory per entry in a
//! fresh process each.
//!
//! Prints the markdown that `cargo xtask bench cache` writes to docs/benchmarks.md.
#![allow(
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark binary reports on stdout"
)]

use std::{
    hash::{BuildHasher, RandomState},
    num::NonZeroUsize,
    path::Path,
    process::Command,
    sync::Mutex,
    time::Instant,
};

use brisk_cache::MemoryCache;

const RUNS: usize = 5;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// splitmix64: a small deterministic generator for key streams.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf-distributed keys over `0..n` with exponent `s`, by inverting the cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Self { cumulative }
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cumulative.partition_point(|&c| c < u) as u64
    }

    fn trace(&self, len: usize, seed: u64) -> Vec<u64> {
        let mut rng = Rng(seed);
        // Scatter ranks over the key space, so key order says nothing of popularity.
        (0..len)
            .map(|_| self.sample(&mut rng).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect()
    }
}

/// The caches under test, behind one interface.
trait Bench: Sync {
    fn get(&self, key: u64) -> bool;
    fn insert(&self, key: u64);
}

struct Brisk(MemoryCache<u64, u64>);
impl Bench for Brisk {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64) {
        self.0.insert(key, key);
    }
}

struct Quick(quick_cache::sync::Cache<u64, u64>);
impl Bench for Quick {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64) {
        self.0.insert(key, key);
    }
}

struct Moka(moka::sync::Cache<u64, u64>);
impl Bench for Moka {
    fn get(&self, key: u64) -> bool {
        self.0.get(&key).is_some()
    }
    fn insert(&self, key: u64) {
        self.0.insert(key, key);
    }
}

/// What a user writes by hand: `lru::LruCache` behind 64 mutexes.
struct ShardedLru {
    shards: Vec<Mutex<lru::LruCache<u64, u64>>>,
    hasher: RandomState,
}
impl ShardedLru {
    fn new(capacity: usize, shards: usize) -> Self {
        let per = NonZeroUsize::new((capacity / shards).max(1)).unwrap();
        Self {
            shards: (0..shards)
                .map(|_| Mutex::new(lru::LruCache::new(per)))
                .collect(),
            hasher: RandomState::new(),
        }
    }
    fn shard(&self, key: u64) -> &Mutex<lru::LruCache<u64, u64>> {
        &self.shards[(self.hasher.hash_one(key) as usize) % self.shards.len()]
    }
}
impl Bench for ShardedLru {
    fn get(&self, key: u64) -> bool {
        self.shard(key).lock().unwrap().get(&key).is_some()
    }
    fn insert(&self, key: u64) {
        self.shard(key).lock().unwrap().put(key, key);
    }
}

fn brisk(capacity: usize) -> Brisk {
    Brisk(
        MemoryCache::builder()
            .max_entries(capacity as u64)
            .build()
            .unwrap(),
    )
}
fn quick(capacity: usize) -> Quick {
    Quick(quick_cache::sync::Cache::new(capacity))
}
fn moka(capacity: usize) -> Moka {
    Moka(moka::sync::Cache::new(capacity as u64))
}

/// Million operations per second: `threads` threads each running `ops` on their slice of
/// `keys`, in a loop.
fn throughput(
    cache: &dyn Bench,
    threads: usize,
    keys: &[u64],
    ops: impl Fn(&dyn Bench, u64, u64) + Sync,
) -> f64 {
    const PER_THREAD: usize = 4_000_000;
    let started = Instant::now();
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let ops = &ops;
            scope.spawn(move || {
                let offset = thread * keys.len() / threads;
                for n in 0..PER_THREAD {
                    let key = keys[(offset + n) % keys.len()];
                    ops(cache, key, n as u64);
                }
            });
        }
    });
    (threads * PER_THREAD) as f64 / started.elapsed().as_secs_f64() / 1e6
}

fn speed() -> String {
    let mut out = String::new();
    let names = [
        "brisk-cache",
        "quick_cache 0.7",
        "moka 0.12",
        "64 × Mutex<lru>",
    ];
    out.push_str(
        "Throughput (million operations per second, higher is better; median of 5 runs):\n\n",
    );
    out.push_str(&format!(
        "| workload | {} | brisk / quick_cache | brisk / moka | brisk / Mutex<lru> |\n|---|---|---|---|---|---|---|---|\n",
        names.join(" | ")
    ));
    // All hits: 100k keys in a cache that holds them all, visited in a scattered order.
    let hit_keys: Vec<u64> = {
        let mut rng = Rng(1);
        (0..100_000).map(|_| rng.next()).collect()
    };
    let zipf_keys = Zipf::new(1_000_000, 1.0).trace(2_000_000, 2);
    for threads in [1, 2] {
        let caches: [Box<dyn Bench>; 4] = [
            Box::new(brisk(200_000)),
            Box::new(quick(200_000)),
            Box::new(moka(200_000)),
            Box::new(ShardedLru::new(200_000, 64)),
        ];
        for cache in &caches {
            for &key in &hit_keys {
                cache.insert(key);
            }
        }
        let mut samples: [Vec<f64>; 4] = Default::default();
        for _ in 0..RUNS {
            for (cache, samples) in caches.iter().zip(&mut samples) {
                samples.push(throughput(
                    cache.as_ref(),
                    threads,
                    &hit_keys,
                    |cache, key, _| {
                        assert!(cache.get(key), "all hits");
                    },
                ));
            }
        }
        row(
            &mut out,
            &format!(
                "get, all hits, 100k keys, {threads} thread{}",
                if threads == 1 { "" } else { "s" }
            ),
            samples.map(median),
        );
    }
    // 90 % get / 10 % insert on a Zipf(1.0) stream over 1M keys, capacity 100k.
    let caches: [Box<dyn Bench>; 4] = [
        Box::new(brisk(100_000)),
        Box::new(quick(100_000)),
        Box::new(moka(100_000)),
        Box::new(ShardedLru::new(100_000, 64)),
    ];
    let mut samples: [Vec<f64>; 4] = Default::default();
    for _ in 0..RUNS {
        for (cache, samples) in caches.iter().zip(&mut samples) {
            samples.push(throughput(
                cache.as_ref(),
                2,
                &zipf_keys,
                |cache, key, n| {
                    if n % 10 == 0 {
                        cache.insert(key);
                    } else {
                        std::hint::black_box(cache.get(key));
                    }
                },
            ));
        }
    }
    row(
        &mut out,
        "90 % get / 10 % insert, Zipf 1.0 over 1M keys, capacity 100k, 2 threads",
        samples.map(median),
    );
    out
}

fn row(out: &mut String, what: &str, [brisk, quick, moka, lru]: [f64; 4]) {
    out.push_str(&format!(
        "| {what} | {brisk:.1} | {quick:.1} | {moka:.1} | {lru:.1} | {:.2}× | {:.2}× | {:.2}× |\n",
        brisk / quick,
        brisk / moka,
        brisk / lru
    ));
}

/// The hit ratio of `cache` on `trace`, filling on each miss (read-through).
fn hit_ratio(cache: &dyn Bench, trace: &[u64]) -> f64 {
    let hits = trace
        .iter()
        .filter(|&&key| {
            let hit = cache.get(key);
            if !hit {
                cache.insert(key);
            }
            hit
        })
        .count();
    hits as f64 / trace.len() as f64
}

/// A single-threaded plain LRU, the baseline every policy is compared with.
struct Lru(Mutex<lru::LruCache<u64, u64>>);
impl Bench for Lru {
    fn get(&self, key: u64) -> bool {
        self.0.lock().unwrap().get(&key).is_some()
    }
    fn insert(&self, key: u64) {
        self.0.lock().unwrap().put(key, key);
    }
}

/// The ARC paper's OLTP trace: each line `start count ignored request`, each block of
/// `start .. start + count` one access.
fn oltp() -> Option<Vec<u64>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/traces/OLTP.lis.zst");
    let compressed = std::fs::read(path).ok()?;
    let text = zstd::decode_all(&compressed[..]).ok()?;
    let text = String::from_utf8(text).ok()?;
    let mut trace = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace().map(|f| f.parse::<u64>());
        let (Some(Ok(start)), Some(Ok(count))) = (fields.next(), fields.next()) else {
            continue;
        };
        trace.extend(start..start + count);
    }
    Some(trace)
}

fn ratios() -> String {
    let mut out = String::new();
    out.push_str("\nHit ratio (read-through: a miss inserts; higher is better). OLTP is the trace of Megiddo and Modha, \"ARC: A Self-Tuning, Low Overhead Replacement Cache\", FAST 2003:\n\n");
    out.push_str("| trace | capacity | brisk-cache | quick_cache | moka | LRU | brisk − best peer (points) |\n|---|---|---|---|---|---|---|\n");
    let mut traces: Vec<(String, Vec<u64>, Vec<usize>)> = vec![
        (
            "Zipf 0.8, 1M keys, 2M accesses".into(),
            Zipf::new(1_000_000, 0.8).trace(2_000_000, 3),
            vec![10_000],
        ),
        (
            "Zipf 1.0, 1M keys, 2M accesses".into(),
            Zipf::new(1_000_000, 1.0).trace(2_000_000, 4),
            vec![10_000],
        ),
    ];
    match oltp() {
        Some(trace) => traces.push((
            "OLTP (ARC paper)".into(),
            trace,
            vec![1_000, 10_000, 100_000],
        )),
        None => {
            out.push_str("| OLTP | — | the trace was not found at ../shared/traces | | | | |\n")
        }
    }
    // Zipf 1.0 with a sequential scan of 20k new keys after every 100k accesses.
    let mut scanned = Vec::new();
    let zipf = Zipf::new(1_000_000, 1.0).trace(1_000_000, 5);
    for (n, chunk) in zipf.chunks(100_000).enumerate() {
        scanned.extend_from_slice(chunk);
        scanned.extend((0..20_000).map(|k| (1u64 << 62) + n as u64 * 20_000 + k));
    }
    traces.push((
        "Zipf 1.0 with a 20k-key scan every 100k".into(),
        scanned,
        vec![10_000],
    ));
    // A loop over 11k keys, 10 % larger than the cache: LRU's worst case.
    let looped: Vec<u64> = (0..50).flat_map(|_| 0..11_000u64).collect();
    traces.push((
        "a loop over 11k keys, 50 times".into(),
        looped,
        vec![10_000],
    ));
    for (name, trace, capacities) in &traces {
        for &capacity in capacities {
            let results = [
                hit_ratio(&brisk(capacity), trace),
                hit_ratio(&quick(capacity), trace),
                hit_ratio(&moka(capacity), trace),
                hit_ratio(
                    &Lru(Mutex::new(lru::LruCache::new(
                        NonZeroUsize::new(capacity).unwrap(),
                    ))),
                    trace,
                ),
            ];
            let best_peer = results[1..].iter().copied().fold(0.0, f64::max);
            out.push_str(&format!(
                "| {name} | {capacity} | {:.3} | {:.3} | {:.3} | {:.3} | {:+.1} |\n",
                results[0],
                results[1],
                results[2],
                results[3],
                (results[0] - best_peer) * 100.0
            ));
        }
    }
    out
}

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// In a fresh process: fills one cache with 1M `u64 → u64` and prints bytes per entry.
fn memory_child(which: &str) {
    const ENTRIES: usize = 1_000_000;
    let before = rss();
    let cache: Box<dyn Bench> = match which {
        "brisk" => Box::new(brisk(ENTRIES)),
        "quick" => Box::new(quick(ENTRIES)),
        "moka" => Box::new(moka(ENTRIES)),
        _ => Box::new(ShardedLru::new(ENTRIES, 64)),
    };
    for key in 0..ENTRIES as u64 {
        cache.insert(key);
    }
    let after = rss();
    println!("{}", (after.saturating_sub(before)) as f64 / ENTRIES as f64);
    std::hint::black_box(&cache);
}

fn memory() -> String {
    let per_entry = |which: &str| -> f64 {
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--memory", which])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(f64::NAN)
    };
    let [brisk, quick, moka, lru] = ["brisk", "quick", "moka", "lru"].map(per_entry);
    format!(
        "\nMemory for 1M `u64 → u64` entries (resident-set growth per entry, in a fresh process each; lower is better):\n\n| brisk-cache | quick_cache | moka | 64 × Mutex<lru> | brisk / moka |\n|---|---|---|---|---|\n| {brisk:.0} B | {quick:.0} B | {moka:.0} B | {lru:.0} B | {:.2}× |\n",
        brisk / moka
    )
}

/// The tiered cache: L1 hits through `Tiered` beside `MemoryCache` alone, and L2 hits beside
/// raw `redis` GETs over one multiplexed connection, on a throw-away redis-server.
#[cfg(feature = "redis")]
fn tiered() -> String {
    use brisk_cache::{Cache, Stamped, Tiered, redis::RedisCache};
    use brisk_testkit::RedisServer;

    const KEYS: u64 = 10_000;
    const TASKS: u64 = 32;
    const L2_GETS_PER_TASK: u64 = 2_000;
    const L1_GETS: u64 = 500_000;
    const L1_ROUNDS: usize = 20;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start().unwrap();
    let value =
        "a product description of about a hundred bytes, as a cached row would be....".to_owned();
    runtime.block_on(async {
        let client = redis::Client::open(server.url()).unwrap();
        let raw = client.get_multiplexed_async_connection().await.unwrap();
        // Both sides on a multiplexed connection of their own.
        let connection = client.get_multiplexed_async_connection().await.unwrap();
        let remote: RedisCache<u64, Stamped<String>, redis::aio::MultiplexedConnection> =
            RedisCache::builder(connection)
                .prefix("bench")
                .build()
                .await
                .unwrap();
        let entries: Vec<(u64, String)> = (0..KEYS).map(|key| (key, value.clone())).collect();
        let l2_only = Tiered::builder().remote(remote.clone()).build().unwrap();
        l2_only.insert_many(entries.clone(), None).await.unwrap();
        let memory: MemoryCache<u64, String> =
            MemoryCache::builder().max_entries(2 * KEYS).build().unwrap();
        for key in 0..KEYS {
            memory.insert(key, value.clone());
        }
        // Tiered keeps stamped values in a memory level of its own, of the same size.
        let with_l1 = Tiered::builder()
            .memory(MemoryCache::builder().max_entries(2 * KEYS).build().unwrap())
            .build()
            .unwrap();
        with_l1.insert_many(entries, None).await.unwrap();
        let namespace = remote.namespace();

        // L1 hits, one task: the async trait's cost over the sync call.
        let l1_round = || async {
            let started = Instant::now();
            for n in 0..L1_GETS {
                let key = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS;
                assert!(with_l1.get(&key).await.unwrap().is_some());
            }
            L1_GETS as f64 / 1e6 / started.elapsed().as_secs_f64()
        };
        let memory_round = || {
            let started = Instant::now();
            for n in 0..L1_GETS {
                let key = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS;
                assert!(memory.get(&key).is_some());
            }
            L1_GETS as f64 / 1e6 / started.elapsed().as_secs_f64()
        };
        // A hit costs ~100 ns, so a round of either side is a few tens of milliseconds: the
        // fastest of many alternating rounds, rather than a median of few, keeps the other
        // tenants of a shared machine out of the ratio (the medians swung 0.7–1.0×).
        let (mut l1, mut mem) = (0.0f64, 0.0f64);
        for _ in 0..L1_ROUNDS {
            l1 = l1.max(l1_round().await);
            mem = mem.max(memory_round());
        }
        // The FusionCache port a user might pick instead, memory only, String keys on both
        // sides (amalgam keys are strings).
        let names: Vec<String> = (0..KEYS).map(|key| format!("product:{key}")).collect();
        let amalgam: amalgam::Cache<String> = amalgam::Cache::builder()
            .max_capacity(2 * KEYS)
            .try_build()
            .unwrap();
        let by_name: Tiered<String, String> = Tiered::builder()
            .memory(MemoryCache::builder().max_entries(2 * KEYS).build().unwrap())
            .build()
            .unwrap();
        for name in &names {
            amalgam.set(name.as_str(), value.clone()).await.unwrap();
            by_name.insert(name.clone(), value.clone(), None).await.unwrap();
        }
        let (mut ours, mut theirs) = (0.0f64, 0.0f64);
        for _ in 0..L1_ROUNDS {
            let started = Instant::now();
            for n in 0..L1_GETS {
                let name = &names[(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS) as usize];
                assert!(by_name.get(name).await.unwrap().is_some());
            }
            ours = ours.max(L1_GETS as f64 / 1e6 / started.elapsed().as_secs_f64());
            let started = Instant::now();
            for n in 0..L1_GETS {
                let name = &names[(n.wrapping_mul(0x9E37_79B9_7F4A_7C15) % KEYS) as usize];
                assert!(amalgam.try_get(name.as_str()).await.unwrap().is_some());
            }
            theirs = theirs.max(L1_GETS as f64 / 1e6 / started.elapsed().as_secs_f64());
        }
        // L2 hits: TASKS concurrent tasks over one connection, as a service's handlers are.
        async fn concurrently<F, Fut>(get: F) -> f64
        where
            F: Fn(u64) -> Fut + Clone + Send + 'static,
            Fut: std::future::Future<Output = bool> + Send,
        {
            let started = Instant::now();
            let tasks: Vec<_> = (0..TASKS)
                .map(|task| {
                    let get = get.clone();
                    tokio::spawn(async move {
                        for n in 0..L2_GETS_PER_TASK {
                            assert!(get((task * 7919 + n * 104_729) % KEYS).await);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            (TASKS * L2_GETS_PER_TASK) as f64 / started.elapsed().as_secs_f64() / 1e3
        }
        let (mut tiered_l2, mut raw_l2) = (vec![], vec![]);
        for _ in 0..RUNS {
            let cache = l2_only.clone();
            tiered_l2.push(
                concurrently(move |key| {
                    let cache = cache.clone();
                    async move { cache.get(&key).await.unwrap().is_some() }
                })
                .await,
            );
            let raw = raw.clone();
            raw_l2.push(
                concurrently(move |key| {
                    let mut raw = raw.clone();
                    async move {
                        redis::cmd("GET")
                            .arg(format!("bench:{namespace}:{key}"))
                            .query_async::<Option<Vec<u8>>>(&mut raw)
                            .await
                            .unwrap()
                            .is_some()
                    }
                })
                .await,
            );
        }
        let [tiered_l2, raw_l2] = [tiered_l2, raw_l2].map(median);
        format!(
            "\nTiered (L1: the fastest of {L1_ROUNDS} alternating rounds of {L1_GETS} gets; L2: medians of {RUNS} runs on a local redis-server, {TASKS} tasks over one connection, 2 worker threads):\n\n| workload | brisk | peer | brisk / peer |\n|---|---|---|---|\n| L1 hit through `Tiered` vs `MemoryCache::get` alone (M gets/s, 1 task) | {l1:.1} | {mem:.1} | {:.2}× |\n| L1 hit through `Tiered` vs amalgam-cache 0.4 `try_get`, memory only, String keys (M gets/s, 1 task) | {ours:.1} | {theirs:.1} | {:.2}× |\n| L2 hit through `Tiered` (no L1) vs raw `redis` GET, each on a multiplexed connection (k gets/s) | {tiered_l2:.1} | {raw_l2:.1} | {:.2}× |\n",
            l1 / mem,
            ours / theirs,
            tiered_l2 / raw_l2
        )
    })
}

/// HTTP caching over loopback: no layer, the 304 paths, response-cache hits and misses.
#[cfg(feature = "http")]
#[path = "support/http.rs"]
mod http_bench;

/// The multi-process protocol shared with `tests/processes.rs`.
#[cfg(feature = "redis")]
#[path = "../tests/support/processes.rs"]
mod processes;

/// Write propagation through the backplane between three OS processes (this binary, started
/// again as children): the median and p99 from a write in one process until the key has left
/// the others' memory.
#[cfg(feature = "redis")]
fn propagation() -> String {
    const KEYS: usize = 300;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = brisk_testkit::RedisServer::start().unwrap();
    let report = runtime.block_on(processes::run(&server.url(), 3, 1000, KEYS, || {
        std::process::Command::new(std::env::current_exe().unwrap())
    }));
    assert_eq!(report.loads, 1, "one load across the processes");
    assert_eq!(report.missed, 0);
    format!(
        "\nAcross three OS processes on one Redis (each with memory, Redis, backplane and loads coordinated across instances):\n\n| measure | value |\n|---|---|\n| loads for 3 × 1000 concurrent gets of one cold key | {} |\n| a write in one process until the key has left the other two's memory ({} writes × 2 readers), p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |\n",
        report.loads,
        KEYS,
        report.quantile_ms(0.5),
        report.quantile_ms(0.99),
        report.quantile_ms(1.0)
    )
}

fn main() {
    #[cfg(feature = "redis")]
    if let Ok(spec) = std::env::var(processes::CHILD_ENV) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(processes::child(&spec));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|a| a == "--memory") {
        memory_child(args.get(position + 1).map_or("brisk", String::as_str));
        return;
    }
    // `BRISK_BENCH_ONLY=speed` (or `ratio`, `memory`, `tiered`, `http`) runs one part, for quick iterations.
    let only = std::env::var("BRISK_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "speed" {
        print!("{}", speed());
    }
    if only.is_empty() || only == "ratio" {
        print!("{}", ratios());
    }
    if only.is_empty() || only == "memory" {
        print!("{}", memory());
    }
    #[cfg(feature = "redis")]
    if only.is_empty() || only == "tiered" {
        print!("{}", tiered());
        print!("{}", propagation());
    }
    #[cfg(feature = "http")]
    if only.is_empty() || only == "http" {
        print!("{}", http_bench::report());
    }
}
