//! Cancellation stress (issue 30): loads and submits dropped at random points under load, on a
//! multi-thread runtime, then the invariants: no batch left in flight, every later call
//! completes, flush and shutdown complete, and no queued item written twice or lost unless its
//! batch really failed.
//!
//! "Random" is a seeded xorshift, so a failure replays. Every wait is wrapped in a generous
//! hang guard.

use std::{
    collections::HashMap,
    future::{Future, poll_fn},
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::Poll,
    time::Duration,
};

use brisk_batch::{BatchLoad, BatchWrite, Error, Loaded, Loader, Retry, WriteBatcher};

/// A hang guard, not a timing assertion: far longer than any of these steps takes.
async fn guarded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

/// xorshift64*: small, seeded, good enough to pick drop points.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Shared randomness for the batch functions (they run on any thread).
fn shared_below(state: &AtomicU64, n: u64) -> u64 {
    let mut rng = Rng(state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) | 1);
    rng.below(n)
}

/// How a caller gives up on a call.
enum Drop {
    /// Polls it this many times (yielding in between), then drops it: each await point.
    AfterPolls(u64),
    /// Under `tokio::time::timeout` of this many microseconds.
    Timeout(u64),
    /// In a spawned task, aborted after this many yields.
    Abort(u64),
    /// Not at all.
    Never,
}

impl Drop {
    fn pick(rng: &mut Rng) -> Self {
        match rng.below(4) {
            0 => Self::AfterPolls(rng.below(8)),
            1 => Self::Timeout(rng.below(300)),
            2 => Self::Abort(rng.below(8)),
            _ => Self::Never,
        }
    }
}

/// Runs `future` as `how` says: `Some(output)` if it finished, `None` if it was dropped.
async fn maybe_drop<F>(how: Drop, future: F) -> Option<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match how {
        Drop::AfterPolls(polls) => {
            let mut future = pin!(future);
            for _ in 0..polls {
                if let Poll::Ready(output) =
                    poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
                {
                    return Some(output);
                }
                tokio::task::yield_now().await;
            }
            None
        }
        Drop::Timeout(micros) => tokio::time::timeout(Duration::from_micros(micros), future)
            .await
            .ok(),
        Drop::Abort(yields) => {
            let task = tokio::spawn(future);
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            task.abort();
            task.await.ok()
        }
        Drop::Never => Some(future.await),
    }
}

/// Loads `key * 10`, yielding a random number of times; fails a batch now and then while
/// `flaky` is set.
struct Tens {
    rng: AtomicU64,
    flaky: AtomicBool,
}

impl BatchLoad for Tens {
    type Key = u64;
    type Value = u64;
    type Error = String;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64, String>, String> {
        for _ in 0..shared_below(&self.rng, 6) {
            tokio::task::yield_now().await;
        }
        if self.flaky.load(Ordering::SeqCst) && shared_below(&self.rng, 10) == 0 {
            return Err("a flaky batch".to_owned());
        }
        Ok(keys.iter().map(|&key| (key, key * 10)).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn loads_dropped_at_random_points_leave_no_batch_in_flight_and_later_loads_complete() {
    for (round, caching) in [(1u64, false), (2, true), (3, true)] {
        let builder = Loader::builder(Tens {
            rng: AtomicU64::new(round),
            flaky: AtomicBool::new(true),
        })
        .max_batch_size(8)
        .max_concurrent_batches(3);
        let loader = if caching {
            builder.cache(HashMap::new()).build().unwrap()
        } else {
            builder.build().unwrap()
        };
        let tasks: Vec<_> = (0..64u64)
            .map(|task| {
                let loader = loader.clone();
                tokio::spawn(async move {
                    let mut rng = Rng::new(round * 1000 + task);
                    for _ in 0..40 {
                        let key = rng.below(50);
                        let how = Drop::pick(&mut rng);
                        let many = rng.below(4) == 0;
                        let loader = loader.clone();
                        if many {
                            let keys = [key, (key + 1) % 50, key];
                            let results =
                                maybe_drop(how, async move { loader.load_many(keys).await }).await;
                            for (result, key) in results.into_iter().flatten().zip(keys) {
                                check(key, result);
                            }
                        } else if let Some(result) =
                            maybe_drop(how, async move { loader.load(key).await }).await
                        {
                            check(key, result);
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            guarded("a caller task", task).await.unwrap();
        }
        // Batches whose callers all left still run to the end: wait for them.
        settled(&loader).await;
        // Every later load completes, with the right value (with a cache, a key left in
        // flight by a dropped batch would answer its old error here).
        loader.batch_fn().flaky.store(false, Ordering::SeqCst);
        let results = guarded("later loads", loader.load_many(0..50)).await;
        for (key, result) in (0..50).zip(results) {
            assert_eq!(result.unwrap(), Some(key * 10), "key {key} (round {round})");
        }
        // A batch answers its callers just before its task ends.
        settled(&loader).await;
    }
}

/// Waits until no batch of `loader` is in flight: fails (as a hang) if one leaked.
async fn settled(loader: &Loader<Tens>) {
    guarded("the batches in flight", async {
        while loader.in_flight() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

fn check(key: u64, result: Result<Option<u64>, Error<String>>) {
    match result {
        Ok(value) => assert_eq!(value, Some(key * 10)),
        Err(Error::Batch { error, .. }) => assert_eq!(*error, "a flaky batch"),
        Err(other) => panic!("key {key}: {other:?}"),
    }
}

/// Records every attempt (items, whether it was written): item `n`'s output is `n`. Fails
/// attempts at random while `flaky` is set; each attempt is all-or-nothing.
#[derive(Default)]
struct Log {
    rng: AtomicU64,
    flaky: AtomicBool,
    attempts: Mutex<Vec<(Vec<u64>, bool)>>,
}

impl BatchWrite for Log {
    type Item = u64;
    type Output = u64;
    type Error = String;

    async fn write(&self, items: &[u64]) -> Result<Vec<u64>, String> {
        for _ in 0..shared_below(&self.rng, 4) {
            tokio::task::yield_now().await;
        }
        let fail = self.flaky.load(Ordering::SeqCst) && shared_below(&self.rng, 3) == 0;
        self.attempts.lock().unwrap().push((items.to_vec(), !fail));
        if fail {
            Err("a flaky write".to_owned())
        } else {
            Ok(items.to_vec())
        }
    }
}

/// What a caller learnt about its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Told {
    Written,
    Failed,
    Queued,
    Nothing,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn submits_dropped_at_random_points_lose_or_double_no_item_and_shutdown_completes() {
    const RETRIES: u32 = 2;
    let batcher = WriteBatcher::builder(Log {
        rng: AtomicU64::new(7),
        flaky: AtomicBool::new(true),
        ..Log::default()
    })
    .max_batch_size(16)
    .max_delay(Duration::from_micros(200))
    .queue_capacity(32)
    .retry(Retry::times(RETRIES).backoff(Duration::ZERO, Duration::ZERO))
    .build()
    .unwrap();
    let told: Arc<Mutex<HashMap<u64, Told>>> = Arc::default();
    let tasks: Vec<_> = (0..64u64)
        .map(|task| {
            let batcher = batcher.clone();
            let told = Arc::clone(&told);
            tokio::spawn(async move {
                let mut rng = Rng::new(task + 77);
                for n in 0..50 {
                    let item = task * 1000 + n;
                    let how = Drop::pick(&mut rng);
                    let batcher = batcher.clone();
                    let outcome = if rng.below(3) == 0 {
                        maybe_drop(
                            how,
                            async move { batcher.enqueue(item).await.map(|()| None) },
                        )
                        .await
                    } else {
                        maybe_drop(how, async move { batcher.submit(item).await.map(Some) }).await
                    };
                    let what = match outcome {
                        None => Told::Nothing,
                        Some(Ok(None)) => Told::Queued,
                        Some(Ok(Some(output))) => {
                            assert_eq!(output, item, "another item's output");
                            Told::Written
                        }
                        Some(Err(Error::Batch { .. })) => Told::Failed,
                        Some(Err(other)) => panic!("item {item}: {other:?}"),
                    };
                    told.lock().unwrap().insert(item, what);
                }
            })
        })
        .collect();
    for task in tasks {
        guarded("a submitter task", task).await.unwrap();
    }
    guarded("flush", batcher.flush()).await;
    // Later calls complete and are written.
    batcher.write_fn().flaky.store(false, Ordering::SeqCst);
    assert_eq!(
        guarded("a later submit", batcher.submit(1_000_000))
            .await
            .unwrap(),
        1_000_000
    );
    guarded("shutdown", batcher.shutdown()).await;
    assert!(matches!(batcher.submit(1).await, Err(Error::Closed)));

    let attempts = batcher.write_fn().attempts.lock().unwrap().clone();
    let mut written: HashMap<u64, usize> = HashMap::new();
    let mut tried: HashMap<u64, (usize, usize)> = HashMap::new(); // (attempts, failed)
    for (items, ok) in &attempts {
        for &item in items {
            let entry = tried.entry(item).or_default();
            entry.0 += 1;
            if *ok {
                *written.entry(item).or_default() += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    let told = told.lock().unwrap();
    let mut outcomes: HashMap<Told, usize> = HashMap::new();
    for (&item, &what) in told.iter() {
        *outcomes.entry(what).or_default() += 1;
        let written = written.get(&item).copied().unwrap_or(0);
        let (attempts, failed) = tried.get(&item).copied().unwrap_or((0, 0));
        assert!(written <= 1, "item {item} written {written} times");
        // Failed for good: tried 1 + RETRIES times, every attempt refused.
        let failed_for_good =
            written == 0 && attempts == 1 + RETRIES as usize && failed == attempts;
        match what {
            Told::Written => assert_eq!(written, 1, "item {item} acknowledged, not written"),
            Told::Failed => assert!(
                failed_for_good,
                "item {item}: told failed, tried {attempts}"
            ),
            // Queued: written once, or its batch failed for good (counted in the metrics).
            Told::Queued => assert!(
                written == 1 || failed_for_good,
                "item {item} queued, then lost (tried {attempts}, failed {failed})"
            ),
            // Dropped: never queued, or queued and then written once or failed for good.
            Told::Nothing => assert!(
                attempts == 0 || written == 1 || failed_for_good,
                "item {item}: tried {attempts}, failed {failed}, written {written}"
            ),
        }
    }
    // The storm did exercise every path.
    for what in [Told::Written, Told::Failed, Told::Queued, Told::Nothing] {
        assert!(
            outcomes.get(&what).copied().unwrap_or(0) > 0,
            "no {what:?} in {outcomes:?}"
        );
    }
}
