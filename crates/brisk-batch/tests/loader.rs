//! The Loader against the behaviours of facebook/dataloader's own test suite that apply to
//! Rust (each test named after the one it mirrors), then brisk's own guarantees.

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_batch::{BatchLoad, Cache, Error, Loaded, Loader};
use brisk_metrics::Registry;

/// Echoes each key as its value (`"v<key>"`) and records every batch it is called with.
/// Keys from 1000 up are missing; keys listed in `fail_keys` fail alone; `fail_batch` fails
/// whole batches; key 666 panics.
#[derive(Default)]
struct Echo {
    calls: Mutex<Vec<Vec<u64>>>,
    fail_keys: Mutex<HashSet<u64>>,
    fail_batch: AtomicBool,
    /// How long each batch takes.
    latency: Duration,
    running: AtomicUsize,
    most_running: AtomicUsize,
}

impl Echo {
    fn slow(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    fn calls(&self) -> Vec<Vec<u64>> {
        self.calls.lock().unwrap().clone()
    }
}

impl BatchLoad for Echo {
    type Key = u64;
    type Value = String;
    type Error = String;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, String, String>, String> {
        self.calls.lock().unwrap().push(keys.to_vec());
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(running, Ordering::SeqCst);
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        assert!(!keys.contains(&666), "the batch function hit key 666");
        if self.fail_batch.load(Ordering::SeqCst) {
            return Err(format!("database down while loading {keys:?}"));
        }
        let fail = self.fail_keys.lock().unwrap().clone();
        let mut loaded = Loaded::with_capacity(keys.len());
        for &key in keys.iter().filter(|&&key| key < 1000) {
            if fail.contains(&key) {
                loaded.fail(key, format!("key {key} is forbidden"));
            } else {
                loaded.insert(key, format!("v{key}"));
            }
        }
        Ok(loaded)
    }
}

fn value(key: u64) -> Option<String> {
    Some(format!("v{key}"))
}

fn cached(echo: Echo) -> Loader<Echo> {
    Loader::builder(echo).cache(HashMap::new()).build().unwrap()
}

// ---- Primary API ----

#[tokio::test]
async fn batches_multiple_requests() {
    let loader = Loader::new(Echo::default());
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap()), (value(1), value(2)));
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2]]);
}

#[tokio::test]
async fn batches_multiple_requests_with_max_batch_sizes() {
    let loader = Loader::builder(Echo::default())
        .max_batch_size(2)
        .build()
        .unwrap();
    let (a, b, c) = tokio::join!(loader.load(1), loader.load(2), loader.load(3));
    assert_eq!(
        (a.unwrap(), b.unwrap(), c.unwrap()),
        (value(1), value(2), value(3))
    );
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2], vec![3]]);
}

#[tokio::test]
async fn applies_max_batch_size_correctly_with_duplicate_keys() {
    let loader = Loader::builder(Echo::default())
        .max_batch_size(3)
        .build()
        .unwrap();
    let results = loader.load_many([1, 2, 1, 1, 1, 2, 3]).await;
    let values: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(values, [1, 2, 1, 1, 1, 2, 3].map(value));
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2, 3]]);
}

#[tokio::test]
async fn coalesces_identical_requests() {
    let loader = Loader::new(Echo::default());
    let (a, b) = tokio::join!(loader.load(1), loader.load(1));
    assert_eq!((a.unwrap(), b.unwrap()), (value(1), value(1)));
    assert_eq!(loader.batch_fn().calls(), [vec![1]]);
}

/// facebook's loader caches by default; across batches, identical keys meet through the cache
/// (without one, only keys within one open batch are collapsed).
#[tokio::test]
async fn coalesces_identical_requests_across_sized_batches() {
    let loader = Loader::builder(Echo::default())
        .max_batch_size(2)
        .cache(HashMap::new())
        .build()
        .unwrap();
    let results = loader.load_many([1, 2, 1, 3]).await;
    assert_eq!(results.len(), 4);
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2], vec![3]]);
}

#[tokio::test]
async fn caches_repeated_requests() {
    let loader = cached(Echo::default());
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap()), (value(1), value(2)));
    let (a, c) = tokio::join!(loader.load(1), loader.load(3));
    assert_eq!((a.unwrap(), c.unwrap()), (value(1), value(3)));
    let all = loader.load_many([1, 2, 3]).await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2], vec![3]]);
}

#[tokio::test]
async fn clears_single_value_in_loader() {
    let loader = cached(Echo::default());
    loader.load_many([1, 2]).await;
    loader.clear(&1);
    loader.load_many([1, 2]).await;
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2], vec![1]]);
}

#[tokio::test]
async fn clears_all_values_in_loader() {
    let loader = cached(Echo::default());
    loader.load_many([1, 2]).await;
    loader.clear_all();
    loader.load_many([1, 2]).await;
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2], vec![1, 2]]);
}

#[tokio::test]
async fn allows_priming_the_cache() {
    let loader = cached(Echo::default());
    assert!(loader.prime(1, "primed".to_owned()));
    let results = loader.load_many([1, 2]).await;
    assert_eq!(results[0].clone().unwrap().as_deref(), Some("primed"));
    assert_eq!(loader.batch_fn().calls(), [vec![2]]);
}

#[tokio::test]
async fn does_not_prime_keys_that_already_exist() {
    let loader = cached(Echo::default());
    assert!(loader.prime(1, "first".to_owned()));
    assert!(
        !loader.prime(1, "second".to_owned()),
        "priming does not overwrite"
    );
    assert_eq!(loader.load(1).await.unwrap().as_deref(), Some("first"));
    loader.load(2).await.unwrap();
    assert!(!loader.prime(2, "late".to_owned()), "nor a loaded value");
    assert_eq!(loader.load(2).await.unwrap(), value(2));
    // Clear, then prime: the way to replace.
    loader.clear(&1);
    assert!(loader.prime(1, "replaced".to_owned()));
    assert_eq!(loader.load(1).await.unwrap().as_deref(), Some("replaced"));
    assert_eq!(loader.batch_fn().calls(), [vec![2]]);
}

#[tokio::test]
async fn does_not_prime_a_key_being_loaded() {
    let loader = cached(Echo::slow(Duration::from_millis(20)));
    let load = loader.load(1);
    tokio::pin!(load);
    // Poll once so that key 1 is in a batch.
    assert!(futures_poll_once(load.as_mut()).await.is_none());
    assert!(!loader.prime(1, "primed".to_owned()));
    assert_eq!(load.await.unwrap(), value(1));
    assert_eq!(loader.load(1).await.unwrap(), value(1));
}

// ---- Represents errors ----

#[tokio::test]
async fn resolves_to_error_to_indicate_failure() {
    let echo = Echo::default();
    echo.fail_keys.lock().unwrap().insert(2);
    let loader = Loader::new(echo);
    let error = loader.load(2).await.unwrap_err();
    assert!(
        matches!(&error, Error::Key { key, error } if key == "2" && **error == "key 2 is forbidden"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "loading key 2 failed: key 2 is forbidden"
    );
    assert_eq!(
        error.source_error().map(String::as_str),
        Some("key 2 is forbidden")
    );
}

#[tokio::test]
async fn can_represent_failures_and_successes_simultaneously() {
    let echo = Echo::default();
    echo.fail_keys.lock().unwrap().insert(2);
    let loader = Loader::new(echo);
    let (one, two) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!(one.unwrap(), value(1));
    assert!(matches!(two, Err(Error::Key { .. })));
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2]]);
}

#[tokio::test]
async fn does_not_cache_errors() {
    let echo = Echo::default();
    echo.fail_keys.lock().unwrap().insert(2);
    let loader = cached(echo);
    assert!(loader.load(2).await.is_err());
    loader.batch_fn().fail_keys.lock().unwrap().clear();
    assert_eq!(loader.load(2).await.unwrap(), value(2), "tried again");
    assert_eq!(loader.load(2).await.unwrap(), value(2), "then cached");
    assert_eq!(loader.batch_fn().calls(), [vec![2], vec![2]]);
}

#[tokio::test]
async fn propagates_batch_error_to_all_loads() {
    let echo = Echo::default();
    echo.fail_batch.store(true, Ordering::SeqCst);
    let loader = Loader::new(echo);
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    for error in [a.unwrap_err(), b.unwrap_err()] {
        assert!(matches!(&error, Error::Batch { size: 2, .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the batch function failed for a batch of 2: database down while loading [1, 2]"
        );
    }
}

#[tokio::test]
async fn batch_errors_are_not_cached() {
    let echo = Echo::default();
    echo.fail_batch.store(true, Ordering::SeqCst);
    let loader = cached(echo);
    assert!(matches!(loader.load(1).await, Err(Error::Batch { .. })));
    loader.batch_fn().fail_batch.store(false, Ordering::SeqCst);
    assert_eq!(loader.load(1).await.unwrap(), value(1));
    assert_eq!(loader.batch_fn().calls().len(), 2);
}

// ---- Accepts options ----

#[tokio::test]
async fn may_disable_batching() {
    let loader = Loader::builder(Echo::default())
        .batching(false)
        .build()
        .unwrap();
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert_eq!((a.unwrap(), b.unwrap()), (value(1), value(2)));
    let mut calls = loader.batch_fn().calls();
    calls.sort();
    assert_eq!(calls, [vec![1], vec![2]]);
}

#[tokio::test]
async fn caching_is_off_by_default_and_repeated_loads_call_again() {
    let loader = Loader::new(Echo::default());
    loader.load(1).await.unwrap();
    loader.load(1).await.unwrap();
    assert!(!loader.prime(1, "ignored".to_owned()), "no cache to prime");
    assert_eq!(loader.batch_fn().calls(), [vec![1], vec![1]]);
}

/// facebook's `cacheKeyFn` exists because JavaScript maps compare objects by identity. Rust
/// keys compare by `Eq`, so a custom cache key is a key type with its own `Eq` and `Hash`.
#[derive(Debug, Clone)]
struct Email(String);

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(&other.0)
    }
}

impl Eq for Email {}

impl Hash for Email {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.to_ascii_lowercase().hash(state);
    }
}

#[derive(Default)]
struct Accounts {
    calls: Mutex<Vec<Vec<String>>>,
}

impl BatchLoad for Accounts {
    type Key = Email;
    type Value = usize;
    type Error = std::convert::Infallible;

    async fn load(&self, keys: &[Email]) -> Result<Loaded<Email, usize>, Self::Error> {
        self.calls
            .lock()
            .unwrap()
            .push(keys.iter().map(|k| k.0.clone()).collect());
        Ok(keys.iter().map(|k| (k.clone(), k.0.len())).collect())
    }
}

#[tokio::test]
async fn accepts_a_custom_cache_key() {
    let loader = Loader::builder(Accounts::default())
        .cache(HashMap::new())
        .build()
        .unwrap();
    let (a, b) = tokio::join!(
        loader.load(Email("Ada@Example.com".into())),
        loader.load(Email("ada@example.com".into()))
    );
    assert_eq!((a.unwrap(), b.unwrap()), (Some(15), Some(15)));
    assert_eq!(
        loader.load(Email("ADA@EXAMPLE.COM".into())).await.unwrap(),
        Some(15)
    );
    assert_eq!(
        *loader.batch_fn().calls.lock().unwrap(),
        [vec!["Ada@Example.com".to_owned()]]
    );
}

/// A bounded cache that keeps the latest `capacity` keys, and counts its lookups.
struct Bounded {
    capacity: usize,
    entries: Vec<(u64, Option<String>)>,
    lookups: Arc<AtomicUsize>,
}

impl Cache<u64, Option<String>> for Bounded {
    fn get(&mut self, key: &u64) -> Option<Option<String>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    fn insert(&mut self, key: u64, value: Option<String>) {
        self.entries.retain(|(k, _)| *k != key);
        self.entries.push((key, value));
        if self.entries.len() > self.capacity {
            self.entries.remove(0);
        }
    }
    fn remove(&mut self, key: &u64) {
        self.entries.retain(|(k, _)| k != key);
    }
    fn clear(&mut self) {
        self.entries.clear();
    }
}

#[tokio::test]
async fn accepts_a_custom_cache_map_implementation() {
    let lookups = Arc::new(AtomicUsize::new(0));
    let loader = Loader::builder(Echo::default())
        .cache(Bounded {
            capacity: 2,
            entries: Vec::new(),
            lookups: Arc::clone(&lookups),
        })
        .build()
        .unwrap();
    loader.load_many([1, 2, 3]).await;
    // 1 was evicted by the bounded cache; 2 and 3 are still there.
    loader.load_many([1, 2, 3]).await;
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2, 3], vec![1]]);
    assert_eq!(lookups.load(Ordering::SeqCst), 6);
}

// ---- brisk's own guarantees ----

#[tokio::test]
async fn a_missing_key_loads_as_none_and_is_cached_as_absent() {
    let loader = cached(Echo::default());
    let (found, missing) = tokio::join!(loader.load(1), loader.load(1001));
    assert_eq!((found.unwrap(), missing.unwrap()), (value(1), None));
    assert_eq!(loader.load(1001).await.unwrap(), None);
    assert_eq!(loader.batch_fn().calls(), [vec![1, 1001]]);
}

#[tokio::test]
async fn a_panicking_batch_reaches_its_callers_as_an_error_and_the_loader_goes_on() {
    let loader = cached(Echo::default());
    let (a, b) = tokio::join!(loader.load(1), loader.load(666));
    for error in [a.unwrap_err(), b.unwrap_err()] {
        assert!(
            matches!(&error, Error::Panicked { size: 2, message } if message.contains("key 666")),
            "{error:?}"
        );
    }
    assert_eq!(
        loader.load(1).await.unwrap(),
        value(1),
        "not cached, loaded again"
    );
}

#[tokio::test]
async fn a_cancelled_caller_does_not_cancel_the_batch_for_the_others() {
    let loader = cached(Echo::slow(Duration::from_millis(20)));
    let other = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(7).await }
    });
    // This caller gives up while the batch runs.
    let gave_up = tokio::time::timeout(Duration::from_millis(5), loader.load(7)).await;
    assert!(gave_up.is_err());
    assert_eq!(other.await.unwrap().unwrap(), value(7));
    assert_eq!(
        loader.load(7).await.unwrap(),
        value(7),
        "and the value was cached"
    );
    assert_eq!(loader.batch_fn().calls(), [vec![7]]);
}

#[tokio::test]
async fn every_caller_giving_up_still_lets_the_batch_finish_and_cache() {
    let loader = cached(Echo::slow(Duration::from_millis(10)));
    assert!(
        tokio::time::timeout(Duration::from_millis(2), loader.load(3))
            .await
            .is_err()
    );
    // Joins the running batch (in flight), does not start another.
    assert_eq!(loader.load(3).await.unwrap(), value(3));
    assert_eq!(loader.batch_fn().calls(), [vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn a_fixed_window_batch_closes_after_the_delay() {
    let loader = Loader::builder(Echo::default())
        .max_delay(Duration::from_millis(10))
        .fixed_window(true)
        .build()
        .unwrap();
    let first = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(1).await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = tokio::spawn({
        let loader = loader.clone();
        async move { loader.load(2).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let third = loader.load(3).await;
    assert!(first.await.unwrap().is_ok() && second.await.unwrap().is_ok() && third.is_ok());
    assert_eq!(loader.batch_fn().calls(), [vec![1, 2], vec![3]]);
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_runs_without_waiting_for_the_delay() {
    let loader = Loader::builder(Echo::default())
        .max_delay(Duration::from_secs(3600))
        .max_batch_size(2)
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let (a, b) = tokio::join!(loader.load(1), loader.load(2));
    assert!(a.is_ok() && b.is_ok());
    assert_eq!(start.elapsed(), Duration::ZERO, "paused clock did not move");
}

#[tokio::test(start_paused = true)]
async fn batches_run_concurrently_up_to_the_limit() {
    let loader = Loader::builder(Echo::slow(Duration::from_millis(50)))
        .max_batch_size(1)
        .max_concurrent_batches(3)
        .build()
        .unwrap();
    let results = loader.load_many(0..10).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(loader.batch_fn().most_running.load(Ordering::SeqCst), 3);
    assert_eq!(loader.batch_fn().calls().len(), 10);
}

#[tokio::test]
async fn load_many_keeps_the_order_of_its_keys() {
    let echo = Echo::default();
    echo.fail_keys.lock().unwrap().insert(5);
    let loader = Loader::builder(echo).max_batch_size(2).build().unwrap();
    let results = loader.load_many([9, 1001, 5, 9, 4]).await;
    assert_eq!(results[0].clone().unwrap(), value(9));
    assert_eq!(results[1].clone().unwrap(), None);
    assert!(matches!(&results[2], Err(Error::Key { key, .. }) if key == "5"));
    assert_eq!(results[3].clone().unwrap(), value(9));
    assert_eq!(results[4].clone().unwrap(), value(4));
}

#[tokio::test]
async fn metrics_count_loads_hits_batches_and_failures() {
    let registry = Registry::new();
    let loader = Loader::builder(Echo::default())
        .cache(HashMap::new())
        .metrics(&registry, "users")
        .build()
        .unwrap();
    loader.load_many([1, 2, 2, 3]).await;
    loader.load(1).await.unwrap();
    loader.batch_fn().fail_batch.store(true, Ordering::SeqCst);
    assert!(loader.load(4).await.is_err());
    let snapshot = registry.snapshot();
    let counter = |name| snapshot.counter(name, &[("name", "users")]);
    assert_eq!(counter("brisk_batch_loads_total"), Some(6));
    assert_eq!(
        counter("brisk_batch_cache_hits_total"),
        Some(2),
        "2 joined, 1 cached"
    );
    assert_eq!(counter("brisk_batch_batches_total"), Some(2));
    assert_eq!(counter("brisk_batch_failures_total"), Some(1));
    let sizes = snapshot
        .histogram("brisk_batch_batch_size", &[("name", "users")])
        .unwrap();
    assert_eq!((sizes.count, sizes.max), (2, 3.0));
}

/// Many tasks loading overlapping keys through small batches: everyone gets their own key's
/// value, every batch holds distinct keys within the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_many_tasks_get_their_own_values() {
    let loader = Loader::builder(Echo::slow(Duration::from_micros(100)))
        .max_batch_size(16)
        .max_concurrent_batches(4)
        .max_delay(Duration::ZERO)
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..200u64 {
        let loader = loader.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..50u64 {
                let key = (task * 7 + round * 13) % 300;
                assert_eq!(loader.load(key).await.unwrap(), value(key));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let calls = loader.batch_fn().calls();
    let keys: usize = calls.iter().map(Vec::len).sum();
    assert!(keys <= 200 * 50);
    for batch in &calls {
        assert!(!batch.is_empty() && batch.len() <= 16, "{batch:?}");
        assert_eq!(batch.iter().collect::<HashSet<_>>().len(), batch.len());
    }
    assert!(loader.batch_fn().most_running.load(Ordering::SeqCst) <= 4);
}

/// Polls `future` once; `Some` if it finished.
async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
    let mut future = future;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// Out-of-range settings are refused by `build()`, naming the setting, never clamped.
#[test]
fn zero_sizes_are_refused_not_clamped() {
    for (builder, setting) in [
        (
            Loader::builder(Echo::default()).max_batch_size(0),
            "max_batch_size",
        ),
        (
            Loader::builder(Echo::default()).max_concurrent_batches(0),
            "max_concurrent_batches",
        ),
    ] {
        match builder.build() {
            Err(brisk_batch::Error::Config {
                setting: got,
                value,
                ..
            }) => {
                assert_eq!((got, value.as_str()), (setting, "0"));
            }
            other => panic!("{setting}: {other:?}"),
        }
    }
    assert!(
        Loader::builder(Echo::default())
            .max_batch_size(1)
            .build()
            .is_ok()
    );
}

/// A lone caller does not wait out the window: once two scheduler turns bring no other key,
/// its batch runs (on paused time, a batch waiting on its timer would jump the clock an hour).
#[tokio::test(start_paused = true)]
async fn a_lone_load_runs_without_waiting_for_the_window() {
    let loader = Loader::builder(Echo::default())
        .max_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    for key in 1..=3 {
        assert!(loader.load(key).await.is_ok());
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(loader.batch_fn().calls(), [vec![1], vec![2], vec![3]]);
}

/// Loads that arrive turn after turn keep the batch open (up to its window): a fan-out of
/// tasks and a caller that keeps asking, one key per scheduler turn, make one batch.
#[tokio::test(start_paused = true)]
async fn keys_that_keep_arriving_keep_the_batch_open() {
    let loader = Loader::builder(Echo::default())
        .max_delay(Duration::from_secs(3600))
        .max_batch_size(1000)
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut loads = Vec::new();
    // More turns than the batch watches (64): it then waits on its window.
    for key in 0..100_u64 {
        loads.push(tokio::spawn({
            let loader = loader.clone();
            async move { loader.load(key).await }
        }));
        // One key per turn: the batch never sees two quiet turns in a row.
        tokio::task::yield_now().await;
    }
    for load in loads {
        assert!(load.await.unwrap().is_ok());
    }
    assert_eq!(loader.batch_fn().calls(), [(0..100).collect::<Vec<_>>()]);
    // Still arriving after the watched turns: the batch waited on its window.
    assert!(
        started.elapsed() >= Duration::from_secs(3599),
        "{:?}",
        started.elapsed()
    );
}
