//! `Tiered` over memory alone (the embedded default): the trait, loading, negative caching,
//! and a builder without levels.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_cache::{Cache, Error, MemoryCache, NoRemote, Stamped, Tiered};

fn memory() -> MemoryCache<u64, Stamped<String>> {
    MemoryCache::builder().max_entries(1000).build().unwrap()
}

#[tokio::test]
async fn memory_alone_reads_writes_and_loads_once() {
    let cache = Tiered::builder().memory(memory()).build().unwrap();
    assert_eq!(cache.get(&1).await.unwrap(), None);
    cache.insert(1, "one".into(), None).await.unwrap();
    assert_eq!(cache.get(&1).await.unwrap().as_deref(), Some("one"));
    cache
        .insert_many(vec![(2, "two".into()), (3, "three".into())], None)
        .await
        .unwrap();
    assert_eq!(
        cache.get_many(&[1, 2, 4]).await.unwrap(),
        vec![Some("one".into()), Some("two".into()), None]
    );
    cache.remove(&1).await.unwrap();
    assert_eq!(cache.get(&1).await.unwrap(), None);

    let loads = Arc::new(AtomicUsize::new(0));
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let (cache, loads) = (cache.clone(), Arc::clone(&loads));
            tokio::spawn(async move {
                cache
                    .get_with(9, move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                        "nine".to_owned()
                    })
                    .await
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.await.unwrap().unwrap(), "nine");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        cache
            .memory()
            .unwrap()
            .get(&9)
            .map(Stamped::into_value)
            .as_deref(),
        Some("nine"),
        "the loaded value is kept in memory"
    );

    let failed = cache
        .try_get_with(10, || async { Err::<String, _>(std::fmt::Error) })
        .await;
    assert!(matches!(failed, Err(Error::Load { .. })), "{failed:?}");
    assert_eq!(
        cache.get(&10).await.unwrap(),
        None,
        "a failure caches nothing"
    );
}

#[test]
fn a_tiered_cache_needs_a_level() {
    let built = Tiered::<u64, String, NoRemote>::builder().build();
    assert!(
        matches!(
            built,
            Err(Error::Config {
                setting: "memory",
                ..
            })
        ),
        "{built:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn absences_are_cached_for_the_negative_ttl() {
    let memory: MemoryCache<u64, Stamped<Option<String>>> = MemoryCache::builder()
        .max_entries(1000)
        .ttl(Duration::from_secs(600))
        .build()
        .unwrap();
    let cache = Tiered::builder()
        .memory(memory)
        .negative_ttl(Duration::from_secs(5))
        .build()
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let lookup = |found: Option<&'static str>| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::fmt::Error>(found.map(str::to_owned))
        }
    };
    // A missing row: loaded once, then answered from the cache until the negative TTL ends.
    assert_eq!(
        cache.try_get_optional_with(1, lookup(None)).await.unwrap(),
        None
    );
    assert_eq!(
        cache.try_get_optional_with(1, lookup(None)).await.unwrap(),
        None
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_secs(6)).await;
    // Gone after 5 s: the row exists now.
    assert_eq!(
        cache
            .try_get_optional_with(1, lookup(Some("found")))
            .await
            .unwrap()
            .as_deref(),
        Some("found")
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    // A found value keeps the level's own TTL (10 minutes), not the negative one.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(
        cache
            .try_get_optional_with(1, lookup(None))
            .await
            .unwrap()
            .as_deref(),
        Some("found")
    );
    assert_eq!(loads.load(Ordering::SeqCst), 2);

    let invalid = Tiered::<u64, Option<String>, NoRemote>::builder()
        .memory(MemoryCache::builder().max_entries(10).build().unwrap())
        .negative_ttl(Duration::ZERO)
        .build();
    assert!(
        matches!(
            invalid,
            Err(Error::Config {
                setting: "negative_ttl",
                ..
            })
        ),
        "{invalid:?}"
    );
}

#[tokio::test]
async fn a_cached_function_runs_once_per_arguments() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let cache = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(100).build().unwrap())
        .build()
        .unwrap();
    let orders = brisk_cache::Cached::new(cache, move |(user, page): (u64, u32)| {
        let calls = Arc::clone(&counted);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            if user == 0 {
                return Err(format!("no user {user}"));
            }
            Ok(format!("user {user} page {page}"))
        }
    });
    assert_eq!(orders.call((7, 1)).await.unwrap(), "user 7 page 1");
    assert_eq!(orders.call((7, 1)).await.unwrap(), "user 7 page 1");
    assert_eq!(orders.call((7, 2)).await.unwrap(), "user 7 page 2");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one call per distinct arguments"
    );
    // A failure is not cached: the next call runs the function again.
    assert!(matches!(orders.call((0, 1)).await, Err(Error::Load { .. })));
    assert!(orders.call((0, 1)).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    // Invalidation through the cache.
    orders.cache().remove(&(7, 1)).await.unwrap();
    orders.call((7, 1)).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}
