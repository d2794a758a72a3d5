//! What a `MemoryCache` reports to brisk-metrics, checked against what it did.

use std::time::Duration;

use brisk_cache::MemoryCache;
use brisk_metrics::Registry;

const NAME: &[(&str, &str)] = &[("name", "users")];

fn evictions(registry: &Registry, cause: &str) -> u64 {
    registry
        .snapshot()
        .counter(
            "brisk_cache_evictions_total",
            &[("name", "users"), ("cause", cause)],
        )
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn every_series_follows_what_the_cache_did() {
    let registry = Registry::new();
    let cache: MemoryCache<u64, u64> = MemoryCache::builder()
        .max_entries(100)
        .shards(1)
        .metrics(&registry, "users")
        .build()
        .unwrap();
    let counter = |name| registry.snapshot().counter(name, NAME).unwrap();
    let gauge = |name| registry.snapshot().gauge(name, NAME).unwrap();

    cache.insert(1, 10);
    cache.insert(1, 11); // replaced
    assert_eq!(cache.get(&1), Some(11));
    assert_eq!(cache.get(&2), None);
    cache.insert_with_ttl(2, 20, Duration::from_secs(1));
    cache.insert(3, 30);
    cache.remove(&3);
    assert_eq!(counter("brisk_cache_hits_total"), 1);
    assert_eq!(counter("brisk_cache_misses_total"), 1);
    assert_eq!(counter("brisk_cache_inserts_total"), 4);
    assert_eq!(evictions(&registry, "replaced"), 1);
    assert_eq!(evictions(&registry, "removed"), 1);
    assert_eq!(gauge("brisk_cache_entries"), 2);
    assert_eq!(gauge("brisk_cache_weight"), 2);

    tokio::time::advance(Duration::from_secs(2)).await;
    cache.run_pending_tasks();
    assert_eq!(evictions(&registry, "expired"), 1);
    assert_eq!(gauge("brisk_cache_entries"), 1);

    // A scan of one-off keys: most are refused by admission, some evict.
    for key in 1000..1500 {
        cache.insert(key, key);
    }
    let rejected = counter("brisk_cache_admissions_rejected_total");
    assert!(rejected > 0, "a scan of one-off keys met no refusal");
    assert!(evictions(&registry, "size") >= rejected);
    assert_eq!(gauge("brisk_cache_entries"), cache.len() as i64);
    assert_eq!(gauge("brisk_cache_weight"), cache.weighted_size() as i64);
    cache.invalidate_all();
    assert_eq!(gauge("brisk_cache_entries"), 0);
    assert_eq!(gauge("brisk_cache_weight"), 0);
}

#[tokio::test]
async fn loads_are_timed_and_failures_counted() {
    let registry = Registry::new();
    let cache: MemoryCache<u64, u64> = MemoryCache::builder()
        .max_entries(100)
        .metrics(&registry, "users")
        .build()
        .unwrap();
    cache.get_with(1, || async { 1 }).await.unwrap();
    cache.get_with(1, || async { 2 }).await.unwrap(); // a hit: no load
    let failed = cache
        .try_get_with(2, || async { Err::<u64, _>(std::fmt::Error) })
        .await;
    assert!(failed.is_err());
    let panicked = cache.get_with(3, || async { panic!("bug") }).await;
    assert!(panicked.is_err());
    let snapshot = registry.snapshot();
    let loads = snapshot
        .histogram("brisk_cache_load_duration_seconds", NAME)
        .unwrap();
    // The panicking load never returned: it is a failure, not a timing.
    assert_eq!(loads.count, 2);
    assert_eq!(
        snapshot.counter("brisk_cache_load_failures_total", NAME),
        Some(2)
    );
    assert_eq!(snapshot.counter("brisk_cache_hits_total", NAME), Some(1));
    assert_eq!(snapshot.counter("brisk_cache_misses_total", NAME), Some(3));
}

#[test]
fn a_weighted_cache_reports_weight() {
    let registry = Registry::new();
    let cache: MemoryCache<u32, Vec<u8>> = MemoryCache::builder()
        .max_weight(10_000)
        .weigher(|_, value: &Vec<u8>| value.len() as u32)
        .metrics(&registry, "blobs")
        .build()
        .unwrap();
    cache.insert(1, vec![0; 100]);
    cache.insert(2, vec![0; 250]);
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot.gauge("brisk_cache_weight", &[("name", "blobs")]),
        Some(350)
    );
    assert_eq!(
        snapshot.gauge("brisk_cache_entries", &[("name", "blobs")]),
        Some(2)
    );
}
