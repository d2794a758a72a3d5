//! A panic anywhere in a Loader's batch step (the batch function before its future is polled,
//! a key's `Hash`/`Eq`, the cache's `insert`) reaches the batch's callers as
//! `Error::Panicked`, and later loads of the same keys work (issue 30, item 7).
//!
//! Every wait is wrapped in a generous guard, so a regression fails instead of hanging.

use std::{
    collections::HashMap,
    future::Future,
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_batch::{BatchLoad, Cache, Error, Loaded, Loader};

/// A hang guard, not a timing assertion: far longer than any of these loads takes.
async fn guarded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

fn ok(result: Result<Option<u64>, Error<String>>) -> Option<u64> {
    result.unwrap_or_else(|error| panic!("expected a value, got {error:?}"))
}

fn assert_panicked<T: std::fmt::Debug>(result: Result<T, Error<String>>, needle: &str) {
    match result {
        Err(Error::Panicked { message, .. }) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected Error::Panicked, got {other:?}"),
    }
}

/// Panics in `load` itself, before returning its future, when asked for key 13.
#[derive(Default)]
struct SyncPanic {
    calls: AtomicUsize,
}

impl BatchLoad for SyncPanic {
    type Key = u64;
    type Value = u64;
    type Error = String;

    #[allow(clippy::manual_async_fn)]
    fn load(
        &self,
        keys: &[u64],
    ) -> impl Future<Output = Result<Loaded<u64, u64, String>, String>> + Send {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(!keys.contains(&13), "load refused key 13 before its future");
        let keys = keys.to_vec();
        async move { Ok(keys.into_iter().map(|key| (key, key * 10)).collect()) }
    }
}

#[tokio::test]
async fn a_synchronous_panic_in_load_fails_every_caller_of_the_batch_and_later_loads_work() {
    for caching in [false, true] {
        let builder = Loader::builder(SyncPanic::default());
        let loader = if caching {
            builder.cache(HashMap::new()).build().unwrap()
        } else {
            builder.build().unwrap()
        };
        let (a, b) = guarded("the batch with key 13", async {
            tokio::join!(loader.load(12), loader.load(13))
        })
        .await;
        assert_panicked(a, "key 13");
        assert_panicked(b, "key 13");
        assert_eq!(
            ok(guarded("a later load", loader.load(12)).await),
            Some(120)
        );
        assert_panicked(guarded("key 13 again", loader.load(13)).await, "key 13");
        assert_eq!(loader.batch_fn().calls.load(Ordering::SeqCst), 3);
    }
}

/// A key whose `Hash` and `Eq` panic while its trap is armed.
#[derive(Clone, Debug)]
struct Touchy {
    id: u64,
    trap: Arc<AtomicBool>,
}

impl Touchy {
    fn new(id: u64, trap: &Arc<AtomicBool>) -> Self {
        Self {
            id,
            trap: Arc::clone(trap),
        }
    }

    fn spring(&self) {
        assert!(
            !self.trap.load(Ordering::SeqCst),
            "key {} is booby-trapped",
            self.id
        );
    }
}

impl Hash for Touchy {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.spring();
        self.id.hash(state);
    }
}

impl PartialEq for Touchy {
    fn eq(&self, other: &Self) -> bool {
        self.spring();
        self.id == other.id
    }
}

impl Eq for Touchy {}

/// Loads every key as its id; on its first call, arms `arm_during_load` (if set) before
/// answering, so that the loader's own hashing of the keys afterwards panics.
#[derive(Default)]
struct Ids {
    arm_during_load: Option<Arc<AtomicBool>>,
    calls: AtomicUsize,
}

impl BatchLoad for Ids {
    type Key = Touchy;
    type Value = u64;
    type Error = String;

    async fn load(&self, keys: &[Touchy]) -> Result<Loaded<Touchy, u64, String>, String> {
        let first = self.calls.fetch_add(1, Ordering::SeqCst) == 0;
        let loaded: Loaded<Touchy, u64, String> =
            keys.iter().map(|key| (key.clone(), key.id)).collect();
        if let Some(trap) = self.arm_during_load.as_ref().filter(|_| first) {
            trap.store(true, Ordering::SeqCst);
        }
        Ok(loaded)
    }
}

#[tokio::test]
async fn a_key_whose_hash_panics_when_asked_for_gets_an_error_and_leaves_no_batch_behind() {
    for caching in [false, true] {
        let builder = Loader::builder(Ids::default());
        let loader = if caching {
            builder.cache(HashMap::new()).build().unwrap()
        } else {
            builder.build().unwrap()
        };
        let trap = Arc::new(AtomicBool::new(true));
        let caller = tokio::spawn({
            let loader = loader.clone();
            let key = Touchy::new(13, &trap);
            async move { loader.load(key).await }
        });
        let result = guarded("the trapped load", caller)
            .await
            .expect("the caller itself must not panic");
        assert_panicked(result, "booby-trapped");
        trap.store(false, Ordering::SeqCst);
        let calm = Arc::new(AtomicBool::new(false));
        let (a, b) = guarded("later loads", async {
            tokio::join!(
                loader.load(Touchy::new(1, &calm)),
                loader.load(Touchy::new(13, &trap))
            )
        })
        .await;
        assert_eq!((ok(a), ok(b)), (Some(1), Some(13)));
    }
}

#[tokio::test]
async fn a_key_whose_hash_panics_inside_the_batch_step_fails_the_batch_and_later_loads_work() {
    for caching in [false, true] {
        let trap = Arc::new(AtomicBool::new(false));
        let builder = Loader::builder(Ids {
            arm_during_load: Some(Arc::clone(&trap)),
            ..Ids::default()
        });
        let loader = if caching {
            builder.cache(HashMap::new()).build().unwrap()
        } else {
            builder.build().unwrap()
        };
        let (a, b) = guarded("the batch", async {
            tokio::join!(
                loader.load(Touchy::new(1, &trap)),
                loader.load(Touchy::new(2, &trap))
            )
        })
        .await;
        assert_panicked(a, "booby-trapped");
        assert_panicked(b, "booby-trapped");
        // The same keys again, trap disarmed (and no longer re-armed): loaded afresh.
        trap.store(false, Ordering::SeqCst);
        let calm = Arc::new(AtomicBool::new(false));
        let (a, b) = guarded("later loads of the same keys", async {
            tokio::join!(
                loader.load(Touchy::new(1, &calm)),
                loader.load(Touchy::new(2, &calm))
            )
        })
        .await;
        assert_eq!((ok(a), ok(b)), (Some(1), Some(2)));
        assert_eq!(loader.batch_fn().calls.load(Ordering::SeqCst), 2);
    }
}

/// A `HashMap` whose `insert` panics while `fail` is set.
struct Brittle {
    map: HashMap<u64, Option<u64>>,
    fail: Arc<AtomicBool>,
}

impl Cache<u64, Option<u64>> for Brittle {
    fn get(&mut self, key: &u64) -> Option<Option<u64>> {
        self.map.get(key).cloned()
    }

    fn insert(&mut self, key: u64, value: Option<u64>) {
        assert!(
            !self.fail.load(Ordering::SeqCst),
            "the cache is full of itself"
        );
        self.map.insert(key, value);
    }

    fn remove(&mut self, key: &u64) {
        self.map.remove(key);
    }

    fn clear(&mut self) {
        self.map.clear();
    }
}

#[tokio::test]
async fn a_panicking_cache_insert_fails_the_batch_and_later_loads_of_its_keys_work() {
    let fail = Arc::new(AtomicBool::new(true));
    let loader = Loader::builder(SyncPanic::default())
        .cache(Brittle {
            map: HashMap::new(),
            fail: Arc::clone(&fail),
        })
        .build()
        .unwrap();
    let (a, b) = guarded("the batch", async {
        tokio::join!(loader.load(1), loader.load(2))
    })
    .await;
    assert_panicked(a, "full of itself");
    assert_panicked(b, "full of itself");
    fail.store(false, Ordering::SeqCst);
    let (a, b) = guarded("later loads of the same keys", async {
        tokio::join!(loader.load(1), loader.load(2))
    })
    .await;
    assert_eq!((ok(a), ok(b)), (Some(10), Some(20)));
    assert_eq!(ok(guarded("a cached load", loader.load(1)).await), Some(10));
    assert_eq!(loader.batch_fn().calls.load(Ordering::SeqCst), 2);
}

/// A loader over `SyncPanic` (which loads every key but 13 as key × 10), cached or not.
fn tens(caching: bool) -> Loader<SyncPanic> {
    let builder = Loader::builder(SyncPanic::default());
    if caching {
        builder.cache(HashMap::new()).build().unwrap()
    } else {
        builder.build().unwrap()
    }
}

/// Polls `future` once, with a waker that does nothing.
fn poll_once<F: Future>(future: F) {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = future.as_mut().poll(&mut cx);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Loads of key 1 (whose batch was opened before) and of key 2 (which would join an open
/// batch) complete.
fn later_loads_complete(loader: &Loader<SyncPanic>) {
    runtime().block_on(async {
        let (one, two) = guarded("later loads", async {
            tokio::join!(loader.load(1), loader.load(2))
        })
        .await;
        assert_eq!(ok(one), Some(10));
        assert_eq!(ok(two), Some(20));
        assert_eq!(loader.in_flight(), 0);
    });
}

#[test]
fn a_load_outside_a_runtime_panics_without_stranding_its_batch() {
    for caching in [false, true] {
        let loader = tens(caching);
        // `tokio::spawn` panics here, after the batch (and its in-flight slot) was opened.
        let outside = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll_once(loader.load(1));
        }));
        assert!(outside.is_err(), "a load needs a runtime");
        assert_eq!(loader.in_flight(), 0, "caching: {caching}");
        later_loads_complete(&loader);
    }
}

#[test]
fn a_batch_task_dropped_before_its_first_poll_answers_its_callers() {
    for caching in [false, true] {
        let loader = tens(caching);
        // The batch's task is spawned, then dropped with its runtime before it ran.
        let first = runtime();
        first.block_on(async { poll_once(loader.load(1)) });
        drop(first);
        assert_eq!(loader.in_flight(), 0, "caching: {caching}");
        later_loads_complete(&loader);
    }
}
