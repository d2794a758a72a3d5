//! `get_with` / `try_get_with`: one load per key under a stampede, failures and panics reach
//! every waiter and cache nothing, a cancelled first caller hands the load over, waiters give
//! up at their timeout.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_cache::{Error, MemoryCache};
use brisk_metrics::Registry;
use tokio::sync::{Barrier, oneshot};

fn cache() -> MemoryCache<String, String> {
    MemoryCache::builder().max_entries(1000).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_misses_make_one_load() {
    let cache = cache();
    let loads = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Barrier::new(1000));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (cache, loads, started) = (cache.clone(), Arc::clone(&loads), Arc::clone(&started));
        tasks.push(tokio::spawn(async move {
            // All start together, so most of them miss while the load runs.
            started.wait().await;
            cache
                .get_with("hot".to_owned(), || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // A database round trip: long enough for the others to arrive.
                    for _ in 0..50 {
                        tokio::task::yield_now().await;
                    }
                    "value".to_owned()
                })
                .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "value");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.get(&"hot".to_owned()).as_deref(), Some("value"));
}

#[derive(Debug, PartialEq)]
struct DbDown(&'static str);

/// A cache whose misses can be counted: on a current-thread runtime a caller that has counted
/// its miss has also joined the load in flight (nothing awaits in between), so a test can wait
/// for its waiters without sleeping.
fn counted() -> (MemoryCache<String, String>, Registry) {
    let registry = Registry::new();
    let cache = MemoryCache::builder()
        .max_entries(1000)
        .metrics(&registry, "test")
        .build()
        .unwrap();
    (cache, registry)
}

async fn until_misses(registry: &Registry, misses: u64) {
    for _ in 0..10_000 {
        let seen = registry
            .snapshot()
            .counter("brisk_cache_misses_total", &[("name", "test")])
            .unwrap();
        if seen >= misses {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the callers never reached the cache");
}

#[tokio::test]
async fn a_failing_loader_gives_every_waiter_its_error_and_caches_nothing() {
    let (cache, registry) = counted();
    let (release, released) = oneshot::channel::<()>();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .try_get_with("k".to_owned(), || async move {
                    released.await.unwrap();
                    Err::<String, _>(DbDown("connection refused"))
                })
                .await
        })
    };
    until_misses(&registry, 1).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .try_get_with("k".to_owned(), || async {
                        unreachable!("joins the load in flight");
                        #[allow(unreachable_code)]
                        Ok::<String, DbDown>(String::new())
                    })
                    .await
            })
        })
        .collect();
    until_misses(&registry, 21).await;
    release.send(()).unwrap();
    let first = leader.await.unwrap().unwrap_err();
    let Error::Load { key, source } = &first else {
        panic!("{first:?}")
    };
    assert_eq!(key, "\"k\"");
    assert_eq!(**source, DbDown("connection refused"));
    assert_eq!(first.to_string(), "loading the value for key \"k\" failed");
    for waiter in waiters {
        match waiter.await.unwrap() {
            // The same error, shared.
            Err(Error::Load { source: theirs, .. }) => assert!(Arc::ptr_eq(&theirs, source)),
            other => panic!("{other:?}"),
        }
    }
    // The failure was not cached: the next call loads.
    assert_eq!(cache.get(&"k".to_owned()), None);
    let value = cache
        .try_get_with("k".to_owned(), || async {
            Ok::<_, DbDown>("loaded".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(value, "loaded");
}

#[tokio::test]
async fn a_panicking_loader_fails_every_waiter_and_the_cache_stays_usable() {
    let (cache, registry) = counted();
    let (release, released) = oneshot::channel::<()>();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with("k".to_owned(), || async move {
                    released.await.unwrap();
                    panic!("loader bug")
                })
                .await
        })
    };
    until_misses(&registry, 1).await;
    let waiters: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_with("k".to_owned(), || async { unreachable!("joins the load") })
                    .await
            })
        })
        .collect();
    until_misses(&registry, 21).await;
    release.send(()).unwrap();
    let error = leader.await.expect("the panic is caught").unwrap_err();
    assert!(
        matches!(&error, Error::LoadPanicked { key, message } if key == "\"k\"" && message == "loader bug"),
        "{error:?}"
    );
    for waiter in waiters {
        let error = waiter.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::LoadPanicked { .. }), "{error:?}");
    }
    // Nothing was cached, and the cache still loads.
    assert_eq!(cache.get(&"k".to_owned()), None);
    let value = cache
        .get_with("k".to_owned(), || async { "after".to_owned() })
        .await
        .unwrap();
    assert_eq!(value, "after");
}

#[tokio::test]
async fn a_cancelled_first_caller_hands_the_load_over() {
    let (cache, registry) = counted();
    let leader = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with("k".to_owned(), std::future::pending::<String>)
                .await
        })
    };
    until_misses(&registry, 1).await;
    let waiter = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get_with("k".to_owned(), || async { "from the waiter".to_owned() })
                .await
        })
    };
    until_misses(&registry, 2).await;
    // The request that started the load goes away (a client disconnect) while the waiter
    // waits for it.
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(waiter.await.unwrap().unwrap(), "from the waiter");
    assert_eq!(
        cache.get(&"k".to_owned()).as_deref(),
        Some("from the waiter")
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_gives_up_at_its_timeout_while_the_load_goes_on() {
    let cache: MemoryCache<u32, u32> = MemoryCache::builder()
        .max_entries(100)
        .load_wait_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let slow = cache.get_with(1, || async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        11
    });
    let impatient = async {
        tokio::task::yield_now().await;
        cache
            .get_with(1, || async { unreachable!("joins the slow load") })
            .await
    };
    let (slow, impatient) = tokio::join!(slow, impatient);
    assert_eq!(slow.unwrap(), 11);
    let error = impatient.unwrap_err();
    assert!(
        matches!(&error, Error::LoadWaitTimeout { key, waited } if key == "1" && *waited == Duration::from_secs(1)),
        "{error:?}"
    );
    assert_eq!(cache.get(&1), Some(11));
}

#[tokio::test]
async fn loaders_with_other_error_types_do_not_share_a_load() {
    let cache: MemoryCache<u32, u32> = MemoryCache::builder().max_entries(100).build().unwrap();
    let (a, b) = tokio::join!(
        cache.try_get_with(1, || async {
            tokio::task::yield_now().await;
            Err::<u32, _>(std::io::Error::other("io"))
        }),
        cache.try_get_with(1, || async {
            tokio::task::yield_now().await;
            Err::<u32, _>(std::fmt::Error)
        }),
    );
    // Each caller gets its own loader's error, of its own type.
    assert_eq!(a.unwrap_err().load_error().unwrap().to_string(), "io");
    assert!(b.unwrap_err().load_error().is_some());
}
