//! `RedisCache` against a real redis-server from brisk-testkit: round trips counted on the
//! server, TTLs, compression, the size limit, the namespace, timeouts, corrupt values and a
//! server restart.

use std::time::Duration;

use brisk_cache::{Cache, Error, redis::RedisCache};
use brisk_metrics::Registry;
use brisk_testkit::RedisServer;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Product {
    id: u64,
    name: String,
    description: String,
    price_cents: i64,
}

fn product(id: u64) -> Product {
    Product {
        id,
        name: format!("product {id}"),
        description: "a sturdy thing".to_owned(),
        price_cents: 1999,
    }
}

async fn connection(server: &RedisServer) -> ConnectionManager {
    let client = redis::Client::open(server.url()).unwrap();
    ConnectionManager::new(client).await.unwrap()
}

async fn cache(server: &RedisServer, prefix: &str) -> RedisCache<u64, Product> {
    RedisCache::builder(connection(server).await)
        .prefix(prefix)
        .ttl(Duration::from_secs(3600))
        .build()
        .await
        .unwrap()
}

/// How many times the server ran `command` (INFO commandstats).
async fn calls(server: &RedisServer, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection(server).await)
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |calls| calls.parse().unwrap())
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn values_round_trip_and_each_call_is_one_round_trip() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server, "products").await;
    assert_eq!(cache.get(&1).await.unwrap(), None);
    cache.insert(1, product(1), None).await.unwrap();
    assert_eq!(cache.get(&1).await.unwrap(), Some(product(1)));

    let entries: Vec<(u64, Product)> = (100..200).map(|id| (id, product(id))).collect();
    let sets_before = calls(&server, "set").await;
    cache.insert_many(entries, None).await.unwrap();
    // Each value and its write fence, in one pipeline.
    assert_eq!(calls(&server, "set").await - sets_before, 200);

    let keys: Vec<u64> = (150..250).collect();
    let mgets_before = calls(&server, "mget").await;
    let gets_before = calls(&server, "get").await;
    let found = cache.get_many(&keys).await.unwrap();
    assert_eq!(
        calls(&server, "mget").await - mgets_before,
        1,
        "100 keys, one MGET"
    );
    assert_eq!(calls(&server, "get").await, gets_before);
    for (key, value) in keys.iter().zip(&found) {
        let expected = (*key < 200).then(|| product(*key));
        assert_eq!(value, &expected, "key {key}");
    }
    assert_eq!(cache.get_many(&[]).await.unwrap(), vec![]);

    cache.remove(&1).await.unwrap();
    assert_eq!(cache.get(&1).await.unwrap(), None);
}

#[tokio::test]
async fn ttls_are_kept_in_milliseconds() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server, "ttl").await;
    cache.insert(1, product(1), None).await.unwrap();
    cache
        .insert(2, product(2), Some(Duration::from_millis(1500)))
        .await
        .unwrap();
    let (_, default_ttl) = cache.get_with_ttl(&1).await.unwrap().unwrap();
    let default_ttl = default_ttl.unwrap();
    assert!(
        default_ttl > Duration::from_secs(3590) && default_ttl <= Duration::from_secs(3600),
        "{default_ttl:?}"
    );
    let (value, own_ttl) = cache.get_with_ttl(&2).await.unwrap().unwrap();
    assert_eq!(value, product(2));
    let own_ttl = own_ttl.unwrap();
    assert!(
        own_ttl > Duration::from_millis(1000) && own_ttl <= Duration::from_millis(1500),
        "{own_ttl:?}"
    );
    assert_eq!(cache.get_with_ttl(&3).await.unwrap(), None);

    // A zero TTL stores nothing and drops what was there (it would be stale).
    cache
        .insert(1, product(10), Some(Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(cache.get(&1).await.unwrap(), None);

    // Without any TTL the entry does not expire.
    let forever: RedisCache<u64, Product> = RedisCache::builder(connection(&server).await)
        .prefix("forever")
        .build()
        .await
        .unwrap();
    forever.insert(1, product(1), None).await.unwrap();
    assert_eq!(forever.get_with_ttl(&1).await.unwrap().unwrap().1, None);
}

#[tokio::test]
async fn jittered_ttls_spread_below_the_ttl() {
    let server = RedisServer::start().unwrap();
    let cache: RedisCache<u64, Product> = RedisCache::builder(connection(&server).await)
        .prefix("jitter")
        .ttl(Duration::from_secs(100))
        .ttl_jitter(0.2)
        .build()
        .await
        .unwrap();
    let entries: Vec<(u64, Product)> = (0..100).map(|id| (id, product(id))).collect();
    cache.insert_many(entries, None).await.unwrap();
    let keys: Vec<u64> = (0..100).collect();
    let ttls: Vec<Duration> = cache
        .get_many_with_ttl(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|hit| hit.unwrap().1.unwrap())
        .collect();
    assert!(
        ttls.iter()
            .all(|ttl| *ttl > Duration::from_secs(79) && *ttl <= Duration::from_secs(100)),
        "{ttls:?}"
    );
    let below_90 = ttls
        .iter()
        .filter(|ttl| **ttl < Duration::from_secs(90))
        .count();
    assert!((15..85).contains(&below_90), "{below_90} of 100 below 90 s");
    let invalid = RedisCache::<u64, u64>::builder(connection(&server).await)
        .ttl_jitter(-0.5)
        .build()
        .await;
    assert!(
        matches!(
            invalid,
            Err(Error::Config {
                setting: "ttl_jitter",
                ..
            })
        ),
        "{invalid:?}"
    );
}

#[tokio::test]
async fn large_values_are_compressed_and_the_size_limit_holds() {
    let server = RedisServer::start().unwrap();
    let cache: RedisCache<String, Vec<Product>> = RedisCache::builder(connection(&server).await)
        .prefix("lists")
        .max_value_size(64 * 1024)
        .build()
        .await
        .unwrap();
    // About 40 KB serialized, and repetitive as real listings are.
    let listing: Vec<Product> = (0..1000).map(product).collect();
    cache
        .insert("page:1".to_owned(), listing.clone(), None)
        .await
        .unwrap();
    let stored_len: usize = redis::cmd("STRLEN")
        .arg(format!("lists:{}:page:1", cache.namespace()))
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    let serialized = postcard_len(&listing);
    assert!(
        stored_len * 4 < serialized,
        "stored {stored_len} bytes of {serialized}"
    );
    assert_eq!(
        cache.get(&"page:1".to_owned()).await.unwrap(),
        Some(listing)
    );

    // Incompressible and over the limit: refused, nothing written, the old value kept.
    let mut seed = 7u64;
    let noise: Vec<Product> = (0..2000)
        .map(|id| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Product {
                id,
                name: format!("{seed:x}"),
                description: format!("{:x}", seed.rotate_left(17)),
                price_cents: seed as i64,
            }
        })
        .collect();
    let refused = cache.insert("page:1".to_owned(), noise, None).await;
    assert!(
        matches!(&refused, Err(Error::ValueTooLarge { key, limit: 65536, .. }) if key == "page:1"),
        "{refused:?}"
    );
    assert!(cache.get(&"page:1".to_owned()).await.unwrap().is_some());
}

fn postcard_len(listing: &[Product]) -> usize {
    // The uncompressed size, for comparison: names and descriptions dominate.
    listing
        .iter()
        .map(|p| p.name.len() + p.description.len() + 12)
        .sum()
}

#[tokio::test]
async fn bumping_the_namespace_clears_everything_for_every_instance() {
    let server = RedisServer::start().unwrap();
    let one = cache(&server, "ns").await;
    let two = cache(&server, "ns").await;
    one.insert(1, product(1), None).await.unwrap();
    assert_eq!(two.get(&1).await.unwrap(), Some(product(1)));
    one.invalidate_all().await.unwrap();
    assert_eq!(one.get(&1).await.unwrap(), None);
    // The other instance reads the old namespace until it refreshes.
    assert_eq!(two.get(&1).await.unwrap(), Some(product(1)));
    two.refresh_namespace().await.unwrap();
    assert_eq!(two.namespace(), one.namespace());
    assert_eq!(two.get(&1).await.unwrap(), None);
    // A new instance starts in the current namespace.
    let three = cache(&server, "ns").await;
    assert_eq!(three.namespace(), 1);
    two.insert(2, product(2), None).await.unwrap();
    assert_eq!(three.get(&2).await.unwrap(), Some(product(2)));
}

#[tokio::test]
async fn corrupt_values_are_typed_errors() {
    let server = RedisServer::start().unwrap();
    let cache = cache(&server, "corrupt").await;
    let mut raw = raw(&server).await;
    for garbage in [&b"not a framed value"[..], &[0xBC, 1, 0, 5, 1, 2], &[]] {
        let () = redis::cmd("SET")
            .arg("corrupt:0:9")
            .arg(garbage)
            .query_async(&mut raw)
            .await
            .unwrap();
        let read = cache.get(&9).await;
        assert!(
            matches!(&read, Err(Error::Decode { key, .. }) if key == "9"),
            "{garbage:?}: {read:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_server_is_a_timeout_and_a_dead_one_an_error_until_it_is_back() {
    let mut server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let cache: RedisCache<u64, Product> = RedisCache::builder(connection(&server).await)
        .prefix("faults")
        .timeout(Duration::from_millis(100))
        .metrics(&registry, "l2")
        .build()
        .await
        .unwrap();
    cache.insert(1, product(1), None).await.unwrap();

    // The server stops answering clients for a while.
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1000)
        .arg("ALL")
        .query_async(&mut raw(&server).await)
        .await
        .unwrap();
    let slow = cache.get(&1).await;
    assert!(
        matches!(&slow, Err(Error::Timeout { op: "GET", key, after }) if key == "1" && *after == Duration::from_millis(100)),
        "{slow:?}"
    );

    server.kill();
    let dead = cache.get(&1).await;
    assert!(
        matches!(dead, Err(Error::Redis { .. } | Error::Timeout { .. })),
        "{dead:?}"
    );
    server.restart().unwrap();
    // The connection manager reconnects; the data is gone with the process.
    let mut back = None;
    for _ in 0..100 {
        match cache.get(&1).await {
            Ok(value) => {
                back = Some(value);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(back, Some(None), "no answer after the restart");
    cache.insert(1, product(1), None).await.unwrap();
    assert_eq!(cache.get(&1).await.unwrap(), Some(product(1)));
    let errors = registry
        .snapshot()
        .counter("brisk_cache_redis_errors_total", &[("name", "l2")])
        .unwrap();
    assert!(errors >= 2, "{errors}");
    let hits = registry
        .snapshot()
        .counter("brisk_cache_redis_hits_total", &[("name", "l2")])
        .unwrap();
    assert_eq!(hits, 1);
}

#[tokio::test]
async fn invalid_settings_are_config_errors() {
    let server = RedisServer::start().unwrap();
    for (setting, built) in [
        (
            "prefix",
            RedisCache::<u64, u64>::builder(connection(&server).await)
                .prefix("")
                .build()
                .await,
        ),
        (
            "prefix",
            RedisCache::<u64, u64>::builder(connection(&server).await)
                .prefix("a b")
                .build()
                .await,
        ),
        (
            "ttl",
            RedisCache::<u64, u64>::builder(connection(&server).await)
                .ttl(Duration::ZERO)
                .build()
                .await,
        ),
        (
            "timeout",
            RedisCache::<u64, u64>::builder(connection(&server).await)
                .timeout(Duration::ZERO)
                .build()
                .await,
        ),
        (
            "max_value_size",
            RedisCache::<u64, u64>::builder(connection(&server).await)
                .max_value_size(0)
                .build()
                .await,
        ),
        (
            "circuit_breaker",
            RedisCache::<u64, u64>::builder(connection(&server).await)
                .circuit_breaker(0, Duration::from_secs(1))
                .build()
                .await,
        ),
    ] {
        match built {
            Err(Error::Config { setting: named, .. }) => assert_eq!(named, setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
}

mod tiered {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use brisk_cache::{MemoryCache, NoRemote, Stamped, Tiered};

    use super::*;

    type Both = Tiered<u64, Product, RedisCache<u64, Stamped<Product>>>;

    /// What L1 holds for `key`, unstamped.
    fn in_memory(cache: &Both, key: u64) -> Option<Product> {
        cache.memory().unwrap().get(&key).map(Stamped::into_value)
    }

    async fn tiered(server: &RedisServer, prefix: &str, registry: &Registry) -> Both {
        Tiered::builder()
            .memory(
                MemoryCache::builder()
                    .max_entries(10_000)
                    .ttl(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .remote(
                RedisCache::builder(connection(server).await)
                    .prefix(prefix)
                    .ttl(Duration::from_secs(3600))
                    .timeout(Duration::from_millis(200))
                    .build()
                    .await
                    .unwrap(),
            )
            .metrics(registry, "tiered")
            .build()
            .unwrap()
    }

    /// Commands the server ran, all kinds: a round trip is at least one.
    async fn commands(server: &RedisServer) -> u64 {
        let mut total = 0;
        for command in ["get", "mget", "pttl", "set", "del"] {
            total += calls(server, command).await;
        }
        total
    }

    #[tokio::test]
    async fn an_l1_hit_costs_no_round_trip_and_an_l2_hit_one() {
        let server = RedisServer::start().unwrap();
        let registry = Registry::new();
        let writer = tiered(&server, "t", &registry).await;
        let reader = tiered(&server, "t", &registry).await;
        writer.insert(1, product(1), None).await.unwrap();

        let (gets, pttls) = (calls(&server, "get").await, calls(&server, "pttl").await);
        // The other instance: an L2 hit (one GET and one PTTL, pipelined), which fills L1.
        assert_eq!(reader.get(&1).await.unwrap(), Some(product(1)));
        assert_eq!(calls(&server, "get").await, gets + 1);
        assert_eq!(calls(&server, "pttl").await, pttls + 1);
        assert_eq!(in_memory(&reader, 1), Some(product(1)));
        // Now an L1 hit: nothing reaches Redis.
        let before = commands(&server).await;
        for _ in 0..10 {
            assert_eq!(reader.get(&1).await.unwrap(), Some(product(1)));
        }
        assert_eq!(commands(&server).await, before);

        // get_many: L1 answers what it holds, the rest is one MGET (with its PTTLs).
        let entries: Vec<(u64, Product)> = (100..200).map(|id| (id, product(id))).collect();
        writer.insert_many(entries, None).await.unwrap();
        let keys: Vec<u64> = (1..=1).chain(100..200).chain(500..510).collect();
        let mgets = calls(&server, "mget").await;
        let found = reader.get_many(&keys).await.unwrap();
        assert_eq!(calls(&server, "mget").await, mgets + 1);
        for (key, value) in keys.iter().zip(found) {
            let expected = (*key == 1 || (100..200).contains(key)).then(|| product(*key));
            assert_eq!(value, expected, "key {key}");
        }
        assert_eq!(in_memory(&reader, 150), Some(product(150)));

        // A removal reaches both levels.
        reader.remove(&150).await.unwrap();
        assert_eq!(in_memory(&reader, 150), None);
        assert_eq!(writer.remote().unwrap().get(&150).await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_remote_level_alone_reads_without_asking_for_ttls() {
        let server = RedisServer::start().unwrap();
        let l2_only = Tiered::builder()
            .remote(
                RedisCache::builder(connection(&server).await)
                    .prefix("alone")
                    .build()
                    .await
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(l2_only.memory().is_none());
        l2_only.insert(1, product(1), None).await.unwrap();
        let (gets, pttls) = (calls(&server, "get").await, calls(&server, "pttl").await);
        assert_eq!(l2_only.get(&1).await.unwrap(), Some(product(1)));
        assert_eq!(
            l2_only.get_many(&[1, 2]).await.unwrap(),
            vec![Some(product(1)), None]
        );
        let loaded = l2_only.get_with(3, || async { product(3) }).await.unwrap();
        assert_eq!(loaded, product(3));
        assert_eq!(
            calls(&server, "get").await,
            gets + 4,
            "get, get_with's look, its load's read of the write fence, and the store script's"
        );
        assert_eq!(
            calls(&server, "pttl").await,
            pttls,
            "no L1 to fill: no PTTL"
        );
        assert_eq!(
            l2_only.get(&3).await.unwrap(),
            Some(product(3)),
            "the load is in L2"
        );
    }

    #[tokio::test]
    async fn an_absence_is_kept_in_redis_for_the_negative_ttl() {
        let server = RedisServer::start().unwrap();
        let remote: RedisCache<u64, Stamped<Option<Product>>> =
            RedisCache::builder(connection(&server).await)
                .prefix("negative")
                .ttl(Duration::from_secs(3600))
                .build()
                .await
                .unwrap();
        let cache = Tiered::builder()
            .memory(MemoryCache::builder().max_entries(100).build().unwrap())
            .remote(remote.clone())
            .negative_ttl(Duration::from_secs(5))
            .build()
            .unwrap();
        let missing = cache
            .try_get_optional_with(1, || async { Ok::<_, std::fmt::Error>(None) })
            .await
            .unwrap();
        assert_eq!(missing, None);
        let found = cache
            .try_get_optional_with(2, || async { Ok::<_, std::fmt::Error>(Some(product(2))) })
            .await
            .unwrap();
        assert_eq!(found, Some(product(2)));
        let (absence, absence_ttl) = remote.get_with_ttl(&1).await.unwrap().unwrap();
        assert_eq!(absence.into_value(), None, "the absence itself is stored");
        assert!(
            absence_ttl.unwrap() <= Duration::from_secs(5),
            "{absence_ttl:?}"
        );
        let (_, found_ttl) = remote.get_with_ttl(&2).await.unwrap().unwrap();
        assert!(
            found_ttl.unwrap() > Duration::from_secs(3500),
            "{found_ttl:?}"
        );
    }

    #[tokio::test]
    async fn hits_are_counted_by_level() {
        let server = RedisServer::start().unwrap();
        let registry = Registry::new();
        let writer = tiered(&server, "levels", &Registry::new()).await;
        let reader = tiered(&server, "levels", &registry).await;
        writer.insert(1, product(1), None).await.unwrap();
        writer.insert(3, product(3), None).await.unwrap();
        reader.get(&1).await.unwrap(); // L2
        reader.get(&1).await.unwrap(); // L1
        reader.get(&99).await.unwrap(); // miss
        reader.get_many(&[1, 2, 3]).await.unwrap(); // L1, miss, L2
        reader.get_with(50, || async { product(50) }).await.unwrap(); // miss, load
        let failed = reader
            .try_get_with(51, || async { Err::<Product, _>(std::fmt::Error) })
            .await;
        assert!(failed.is_err()); // miss, failed load
        let snapshot = registry.snapshot();
        let counter = |name: &str, labels: &[(&str, &str)]| snapshot.counter(name, labels).unwrap();
        let named = [("name", "tiered")];
        assert_eq!(
            counter(
                "brisk_cache_tiered_hits_total",
                &[("name", "tiered"), ("level", "l1")]
            ),
            2
        );
        assert_eq!(
            counter(
                "brisk_cache_tiered_hits_total",
                &[("name", "tiered"), ("level", "l2")]
            ),
            2
        );
        assert_eq!(counter("brisk_cache_tiered_misses_total", &named), 4);
        assert_eq!(counter("brisk_cache_tiered_load_failures_total", &named), 1);
        assert_eq!(
            snapshot
                .histogram("brisk_cache_tiered_load_duration_seconds", &named)
                .unwrap()
                .count,
            2
        );
        assert_eq!(counter("brisk_cache_tiered_remote_errors_total", &named), 0);
    }

    #[tokio::test]
    async fn an_l2_value_stays_in_l1_no_longer_than_in_l2() {
        let server = RedisServer::start().unwrap();
        let registry = Registry::new();
        let writer = tiered(&server, "short", &Registry::new()).await;
        let cache = tiered(&server, "short", &registry).await;
        writer
            .insert(1, product(1), Some(Duration::from_millis(1500)))
            .await
            .unwrap();
        assert_eq!(cache.get(&1).await.unwrap(), Some(product(1)));
        assert!(cache.memory().unwrap().contains_key(&1));
        // L1's own TTL is a minute; the copy must go with L2's entry (real time: Redis's).
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(in_memory(&cache, 1), None);
        assert_eq!(cache.get(&1).await.unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_run_once_and_keep_serving_while_redis_is_down() {
        let mut server = RedisServer::start().unwrap();
        let registry = Registry::new();
        let cache = tiered(&server, "load", &registry).await;
        let loads = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..100)
            .map(|_| {
                let (cache, loads) = (cache.clone(), Arc::clone(&loads));
                tokio::spawn(async move {
                    cache
                        .get_with(7, move || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            product(7)
                        })
                        .await
                })
            })
            .collect();
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap(), product(7));
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        // Stored in both levels.
        assert_eq!(
            cache
                .remote()
                .unwrap()
                .get(&7)
                .await
                .unwrap()
                .map(Stamped::into_value),
            Some(product(7))
        );

        server.kill();
        // L1 still answers, and a new key still loads (its L2 read and write fail, counted).
        assert_eq!(
            cache
                .get_with(7, || async { unreachable!() })
                .await
                .unwrap(),
            product(7)
        );
        assert_eq!(
            cache.get_with(8, || async { product(8) }).await.unwrap(),
            product(8)
        );
        assert_eq!(in_memory(&cache, 8), Some(product(8)));
        let errors = registry
            .snapshot()
            .counter(
                "brisk_cache_tiered_remote_errors_total",
                &[("name", "tiered")],
            )
            .unwrap();
        assert_eq!(errors, 2, "the failed L2 read and write of key 8");
        // The plain Cache methods report the L2 error.
        assert!(cache.get(&9).await.is_err());
    }
    /// An instance with its own L1, sharing Redis under `prefix`, whose values are fresh for
    /// 300 ms and then served stale (fail-safe, and while revalidating) for a minute.
    async fn fresh(server: &RedisServer, prefix: &str, registry: &Registry) -> Both {
        fresh_builder(server, prefix, registry)
            .await
            .stale_while_revalidate(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    async fn fresh_builder(
        server: &RedisServer,
        prefix: &str,
        registry: &Registry,
    ) -> brisk_cache::TieredBuilder<u64, Product, RedisCache<u64, Stamped<Product>>> {
        Tiered::builder()
            .memory(MemoryCache::builder().max_entries(100).build().unwrap())
            .remote(
                RedisCache::builder(connection(server).await)
                    .prefix(prefix)
                    .build()
                    .await
                    .unwrap(),
            )
            .fresh_for(Duration::from_millis(300))
            .fail_safe(Duration::from_secs(60))
            .metrics(registry, "tiered")
    }

    fn counted(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
        registry.snapshot().counter(name, labels).unwrap()
    }

    #[tokio::test]
    async fn the_freshness_stamp_travels_with_the_value_through_redis() {
        let server = RedisServer::start().unwrap();
        let loader = fresh(&server, "stamp", &Registry::new()).await;
        let loaded = loader
            .try_get_with(1, || async { Ok::<_, String>(product(1)) })
            .await
            .unwrap();
        assert_eq!(loaded, product(1));
        // Kept for fresh_for + the stale window: 60.3 s in Redis.
        let (stamped, left) = loader
            .remote()
            .unwrap()
            .get_with_ttl(&1)
            .await
            .unwrap()
            .unwrap();
        let left = left.unwrap();
        assert!(
            left > Duration::from_secs(59) && left <= Duration::from_millis(60_300),
            "{left:?}"
        );
        assert!(stamped.fresh_until().is_some());

        // Another instance with an empty L1 answers it from L2 while fresh, without a load.
        let registry = Registry::new();
        let other = fresh(&server, "stamp", &registry).await;
        let unused = other
            .try_get_with(1, || async { Err::<Product, _>("not asked".to_owned()) })
            .await
            .unwrap();
        assert_eq!(unused, product(1));
        assert_eq!(
            other.memory().unwrap().get(&1).unwrap().version(),
            stamped.version(),
            "one write, one version, in every instance"
        );

        // Once stale (real time: Redis keeps the clock), a third instance whose load fails is
        // answered from L2's stale copy: fail-safe works across instances.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let registry = Registry::new();
        let third = fresh_builder(&server, "stamp", &registry)
            .await
            .build()
            .unwrap();
        let answered = third
            .try_get_with(1, || async {
                Err::<Product, _>("database down".to_owned())
            })
            .await;
        assert_eq!(answered.unwrap(), product(1));
        assert_eq!(
            counted(
                &registry,
                "brisk_cache_tiered_stale_served_total",
                &[("name", "tiered"), ("reason", "load_failed")]
            ),
            1
        );
        // Throttled: L1 answers it for the next 30 s without asking the database again.
        let again = third
            .try_get_with(1, || async {
                Err::<Product, _>("database down".to_owned())
            })
            .await;
        assert_eq!(again.unwrap(), product(1));
        assert_eq!(
            counted(
                &registry,
                "brisk_cache_tiered_load_failures_total",
                &[("name", "tiered")]
            ),
            1
        );
    }

    #[tokio::test]
    async fn a_refresh_takes_a_fresher_value_another_instance_stored_instead_of_loading() {
        let server = RedisServer::start().unwrap();
        let (first, second) = (
            fresh(&server, "refresh", &Registry::new()).await,
            fresh(&server, "refresh", &Registry::new()).await,
        );
        first
            .try_get_with(1, || async { Ok::<_, String>(product(1)) })
            .await
            .unwrap();
        // The second instance holds it in L1 too.
        assert_eq!(second.get(&1).await.unwrap(), Some(product(1)));
        tokio::time::sleep(Duration::from_millis(400)).await;

        // The first instance refreshes it (stale-while-revalidate) to a new price.
        let mut updated = product(1);
        updated.price_cents = 2499;
        let new = updated.clone();
        let answered = first
            .try_get_with(1, move || async move { Ok::<_, String>(new) })
            .await
            .unwrap();
        assert_eq!(answered, product(1), "stale at once");
        let mut stored = None;
        for _ in 0..200 {
            stored = first.get(&1).await.unwrap();
            if stored.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            stored,
            Some(updated.clone()),
            "the refresh stored its value"
        );

        // The second instance's stale L1 copy sends a refresh behind; it finds the fresher
        // value in L2 and takes it, without loading.
        let loads = Arc::new(AtomicUsize::new(0));
        let counted_loads = Arc::clone(&loads);
        let answered = second
            .try_get_with(1, move || async move {
                counted_loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(product(1))
            })
            .await
            .unwrap();
        assert_eq!(answered, product(1), "its own stale copy, at once");
        let mut taken = None;
        for _ in 0..200 {
            taken = second.get(&1).await.unwrap();
            if taken.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(taken, Some(updated));
        assert_eq!(loads.load(Ordering::SeqCst), 0, "no load: L2 had it fresh");
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_killed_and_restarted_under_load_fails_no_request() {
        let mut server = RedisServer::start().unwrap();
        let registry = Registry::new();
        let cache: Both = Tiered::builder()
            .memory(
                MemoryCache::builder()
                    .max_entries(100_000)
                    .ttl(Duration::from_secs(60))
                    .build()
                    .unwrap(),
            )
            .remote(
                RedisCache::builder(connection(&server).await)
                    .prefix("outage")
                    .timeout(Duration::from_millis(100))
                    .circuit_breaker(3, Duration::from_millis(300))
                    .metrics(&registry, "l2")
                    .build()
                    .await
                    .unwrap(),
            )
            .build()
            .unwrap();
        let gauge = |registry: &Registry| {
            registry
                .snapshot()
                .gauge("brisk_cache_redis_circuit_state", &[("name", "l2")])
                .unwrap_or(0)
        };
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let next_key = Arc::new(std::sync::atomic::AtomicU64::new(1_000));
        let served = Arc::new(AtomicUsize::new(0));
        // Readers of hot keys (L1) and of new keys (L2, then the loader), without pause:
        // requests are in flight when Redis dies and when it comes back.
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let (cache, stop, next_key, served) = (
                    cache.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&next_key),
                    Arc::clone(&served),
                );
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        round += 1;
                        let key = if worker % 2 == 0 {
                            round % 50
                        } else {
                            next_key.fetch_add(1, Ordering::Relaxed)
                        };
                        match cache
                            .try_get_with(key, move || async move { Ok::<_, String>(product(key)) })
                            .await
                        {
                            Ok(value) if value == product(key) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            other => failures.push(format!("{key}: {other:?}")),
                        }
                        // An L1 hit never waits: let the other tasks (and the test) run.
                        tokio::task::yield_now().await;
                    }
                    failures
                })
            })
            .collect();
        let wait_for = |what: &'static str, done: Box<dyn Fn() -> bool + Send>| async move {
            for _ in 0..500 {
                if done() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("not reached: {what}");
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before_outage = served.load(Ordering::Relaxed);

        server.kill();
        let watched = registry.clone();
        wait_for("the breaker opens", Box::new(move || gauge(&watched) == 1)).await;
        let during = served.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            served.load(Ordering::Relaxed) > during + 100,
            "requests kept being served while Redis was down"
        );

        server.restart().unwrap();
        let watched = registry.clone();
        wait_for("the breaker closes", Box::new(move || gauge(&watched) == 0)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        let mut failures = Vec::new();
        for worker in workers {
            failures.extend(worker.await.unwrap());
        }
        assert!(
            failures.is_empty(),
            "{} failed: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(before_outage > 0);
        let snapshot = registry.snapshot();
        let opened = snapshot
            .counter("brisk_cache_redis_circuit_opened_total", &[("name", "l2")])
            .unwrap();
        assert!(opened >= 1, "{opened}");
        assert!(
            snapshot
                .counter("brisk_cache_redis_rejected_total", &[("name", "l2")])
                .unwrap()
                > 0,
            "calls were refused at once while open"
        );
        // Redis is in use again: a new key's load reaches it.
        let key = u64::MAX;
        cache
            .try_get_with(key, move || async move { Ok::<_, String>(product(key)) })
            .await
            .unwrap();
        assert_eq!(
            cache
                .remote()
                .unwrap()
                .get(&key)
                .await
                .unwrap()
                .map(Stamped::into_value),
            Some(product(key))
        );
    }
    async fn across(server: &RedisServer) -> Both {
        // Coordination has no timeout of its own: the connection bounds each call.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_millis(200)))
            .set_connection_timeout(Some(Duration::from_millis(200)))
            .set_number_of_retries(1);
        let client = redis::Client::open(server.url()).unwrap();
        let connection = ConnectionManager::new_with_config(client, config)
            .await
            .unwrap();
        Tiered::builder()
            .memory(MemoryCache::builder().max_entries(100).build().unwrap())
            .remote(
                RedisCache::builder(connection.clone())
                    .prefix("across")
                    .build()
                    .await
                    .unwrap(),
            )
            .load_across_instances(connection, "across:flight:")
            .build()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cold_key_loads_once_across_instances() {
        let server = RedisServer::start().unwrap();
        let instances = [
            across(&server).await,
            across(&server).await,
            across(&server).await,
        ];
        let loads = Arc::new(AtomicUsize::new(0));
        let mut callers = Vec::new();
        for instance in &instances {
            for _ in 0..100 {
                let (cache, loads) = (instance.clone(), Arc::clone(&loads));
                callers.push(tokio::spawn(async move {
                    cache
                        .try_get_with(1, move || async move {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Ok::<_, String>(product(1))
                        })
                        .await
                }));
            }
        }
        for caller in callers {
            assert_eq!(caller.await.unwrap().unwrap(), product(1));
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one load in three instances"
        );
        for instance in &instances {
            assert_eq!(in_memory(instance, 1), Some(product(1)), "every L1 filled");
        }

        // A failing load fails once; the other instances get its error as text.
        let mut callers = Vec::new();
        for instance in &instances {
            let (cache, loads) = (instance.clone(), Arc::clone(&loads));
            callers.push(tokio::spawn(async move {
                cache
                    .try_get_with(2, move || async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err::<Product, _>("database down".to_owned())
                    })
                    .await
            }));
        }
        let mut here = 0;
        for caller in callers {
            match caller.await.unwrap() {
                Err(Error::Load { source, .. }) if *source == "database down" => here += 1,
                Err(Error::Flight { message, .. }) => {
                    assert!(message.contains("another instance"), "{message}");
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(here, 1, "the leader's own caller gets the typed error");
        assert_eq!(loads.load(Ordering::SeqCst), 2);

        let invalid = Tiered::<u64, Product, NoRemote>::builder()
            .memory(MemoryCache::builder().max_entries(10).build().unwrap())
            .load_across_instances(connection(&server).await, "x:")
            .build();
        assert!(
            matches!(
                invalid,
                Err(Error::Config {
                    setting: "load_across_instances",
                    ..
                })
            ),
            "{invalid:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_redis_a_coordinated_load_runs_here() {
        let mut server = RedisServer::start().unwrap();
        let cache = across(&server).await;
        server.kill();
        let loaded = cache
            .try_get_with(3, || async { Ok::<_, String>(product(3)) })
            .await
            .unwrap();
        assert_eq!(loaded, product(3));
        assert_eq!(in_memory(&cache, 3), Some(product(3)));
    }
}
