//! Auto-recovery against a real redis-server: writes whose Redis part fails in an outage (the
//! link cut by a proxy, the server turned read-only as in a failover) succeed for their
//! callers, are never read back from Redis' old copy, and reach Redis once it answers again.

use std::time::Duration;

use brisk_cache::{
    Cache, Error, MemoryCache, Stamped, Tiered, TieredBuilder,
    redis::{Backplane, RedisCache},
};
use brisk_metrics::Registry;
use brisk_testkit::{Proxy, RedisServer};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

type Level = RedisCache<u64, Stamped<String>>;

const PREFIX: &str = "recovery";

/// A connection as a service would configure one: short reconnect pauses and timeouts.
async fn connection(port: u16) -> ConnectionManager {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let config = ConnectionManagerConfig::new()
        .set_max_delay(Duration::from_millis(50))
        .set_number_of_retries(2)
        .set_connection_timeout(Some(Duration::from_millis(200)))
        .set_response_timeout(Some(Duration::from_millis(500)));
    ConnectionManager::new_with_config(client, config)
        .await
        .unwrap()
}

/// A tiered cache whose Redis level connects on `port` (the server's, or a proxy's).
async fn builder(port: u16, registry: &Registry) -> TieredBuilder<u64, String, Level> {
    Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .remote(
            RedisCache::builder(connection(port).await)
                .prefix(PREFIX)
                .timeout(Duration::from_millis(300))
                .circuit_breaker(3, Duration::from_millis(100))
                .build()
                .await
                .unwrap(),
        )
        .metrics(registry, "products")
}

/// Redis' own copy, read past any proxy and memory.
async fn in_redis(server: &RedisServer, key: u64) -> Option<String> {
    let direct: Level = RedisCache::builder(connection(server.port()).await)
        .prefix(PREFIX)
        .build()
        .await
        .unwrap();
    direct.get(&key).await.unwrap().map(Stamped::into_value)
}

fn counter(registry: &Registry, name: &str) -> u64 {
    registry
        .snapshot()
        .counter(name, &[("name", "products")])
        .unwrap_or(0)
}

fn pending(registry: &Registry) -> i64 {
    registry
        .snapshot()
        .gauge(
            "brisk_cache_tiered_recovery_pending",
            &[("name", "products")],
        )
        .unwrap_or(0)
}

/// Waits (up to 10 s) until the queue is empty again.
async fn replayed(registry: &Registry) {
    for _ in 0..1000 {
        if pending(registry) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the queue was not replayed: {} pending", pending(registry));
}

async fn admin(server: &RedisServer, command: &[&str]) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(command[0]);
    for arg in &command[1..] {
        cmd.arg(*arg);
    }
    let _: redis::Value = cmd.query_async(&mut connection).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_cut_succeed_and_reach_redis_once_it_answers() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let registry = Registry::new();
    let cache = builder(proxy.port(), &registry).await.build().unwrap();
    cache.insert(1, "old".into(), None).await.unwrap();
    cache.insert(2, "two".into(), None).await.unwrap();
    cache.insert(3, "three".into(), None).await.unwrap();

    proxy.cut();
    cache
        .insert(1, "new".into(), None)
        .await
        .expect("a write succeeds for its caller while Redis is cut off");
    cache.remove(&2).await.expect("so does a removal");
    cache
        .insert_many(vec![(3, "tri".into()), (4, "four".into())], None)
        .await
        .expect("and a batch");
    assert_eq!(cache.get(&1).await.unwrap().as_deref(), Some("new"));
    assert_eq!(
        cache.get(&2).await.unwrap(),
        None,
        "answered without Redis: a removal waits to reach it"
    );
    assert_eq!(cache.get(&4).await.unwrap().as_deref(), Some("four"));
    assert_eq!(in_redis(&server, 1).await.as_deref(), Some("old"));
    assert_eq!(in_redis(&server, 2).await.as_deref(), Some("two"));
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_recovery_queued_total"),
        4
    );
    assert_eq!(pending(&registry), 4);

    proxy.heal();
    replayed(&registry).await;
    assert_eq!(in_redis(&server, 1).await.as_deref(), Some("new"));
    assert_eq!(in_redis(&server, 2).await, None);
    assert_eq!(in_redis(&server, 3).await.as_deref(), Some("tri"));
    assert_eq!(in_redis(&server, 4).await.as_deref(), Some("four"));
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_recovery_replayed_total"),
        4
    );
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_recovery_dropped_total"),
        0
    );
    // Redis is in use again: a write goes straight there.
    cache.insert(5, "five".into(), None).await.unwrap();
    assert_eq!(in_redis(&server, 5).await.as_deref(), Some("five"));
}

/// A failover: the server turns replica, so it answers reads from its old data set and
/// refuses writes (`READONLY`), until it is primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_whose_removal_waits_is_never_read_back_from_redis() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let cache = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .remote(
            RedisCache::builder(connection(server.port()).await)
                .prefix(PREFIX)
                .no_circuit_breaker()
                .build()
                .await
                .unwrap(),
        )
        .metrics(&registry, "products")
        .build()
        .unwrap();
    cache.insert(5, "v1".into(), None).await.unwrap();

    admin(&server, &["REPLICAOF", "127.0.0.1", "1"]).await;
    cache
        .remove(&5)
        .await
        .expect("a removal Redis refuses in a failover succeeds for its caller");
    assert_eq!(
        in_redis(&server, 5).await.as_deref(),
        Some("v1"),
        "Redis still holds the old value"
    );
    assert_eq!(
        cache.get(&5).await.unwrap(),
        None,
        "the old value is not read back from Redis"
    );
    let loaded = cache
        .try_get_with(5, || async { Ok::<_, String>("v2".to_owned()) })
        .await
        .unwrap();
    assert_eq!(loaded, "v2", "a load reads the source, not Redis' old copy");

    admin(&server, &["REPLICAOF", "NO", "ONE"]).await;
    replayed(&registry).await;
    assert_eq!(
        in_redis(&server, 5).await,
        None,
        "the removal reached Redis"
    );
    assert_eq!(cache.get(&5).await.unwrap().as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// The write dropped is the first in line: key 1 or key 2, depending on whether the replay
/// task was trying key 1 (never dropped then) or had sent it to the back after a failure.
async fn the_queue_is_bounded_and_drops_the_write_first_in_line() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let registry = Registry::new();
    let cache = builder(proxy.port(), &registry)
        .await
        .auto_recovery(2)
        .build()
        .unwrap();
    proxy.cut();
    for key in 1..=3 {
        cache.insert(key, format!("v{key}"), None).await.unwrap();
    }
    assert_eq!(pending(&registry), 2);
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_recovery_dropped_total"),
        1
    );
    proxy.heal();
    replayed(&registry).await;
    let kept = [in_redis(&server, 1).await, in_redis(&server, 2).await];
    assert!(
        matches!(
            (kept[0].as_deref(), kept[1].as_deref()),
            (None, Some("v2")) | (Some("v1"), None)
        ),
        "one of the first two was dropped: {kept:?}"
    );
    assert_eq!(in_redis(&server, 3).await.as_deref(), Some("v3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auto_recovery_the_error_is_the_callers() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let registry = Registry::new();
    let cache = builder(proxy.port(), &registry)
        .await
        .no_auto_recovery()
        .build()
        .unwrap();
    proxy.cut();
    let written = cache.insert(1, "v".into(), None).await;
    assert!(
        matches!(
            written,
            Err(Error::Redis { .. } | Error::Timeout { .. } | Error::CircuitOpen { .. })
        ),
        "{written:?}"
    );
    assert!(
        builder(server.port(), &registry)
            .await
            .auto_recovery(0)
            .build()
            .is_err(),
        "a queue of no entries is a configuration error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidated_during_a_cut_is_invalidated_in_redis_once_it_answers() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let registry = Registry::new();
    let cache = builder(proxy.port(), &registry).await.build().unwrap();
    cache
        .insert_with_tags(10, "ten".into(), None, &["brand:1"])
        .await
        .unwrap();
    cache.insert(11, "eleven".into(), None).await.unwrap();

    proxy.cut();
    cache
        .invalidate_tag("brand:1")
        .await
        .expect("an invalidation succeeds for its caller while Redis is cut off");
    assert_eq!(
        cache.get(&10).await.unwrap(),
        None,
        "nor is it read from Redis"
    );
    cache
        .insert_with_tags(12, "twelve".into(), None, &["brand:2"])
        .await
        .expect("a tagged write too");

    proxy.heal();
    replayed(&registry).await;
    assert_eq!(in_redis(&server, 10).await, None);
    assert_eq!(in_redis(&server, 11).await.as_deref(), Some("eleven"));
    assert_eq!(in_redis(&server, 12).await.as_deref(), Some("twelve"));
    assert_eq!(
        cache.invalidate_tag("brand:2").await.unwrap(),
        1,
        "filed under its tag"
    );
    assert_eq!(in_redis(&server, 12).await, None);
}

/// Two instances sharing Redis and a backplane; one is cut off and writes a key, then the
/// other writes it: the first one's older value must not overwrite the newer one in Redis
/// when its queue is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_puts_an_older_value_over_another_instances_write() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let (registry, other_registry) = (Registry::new(), Registry::new());
    let backplane = |port: u16, registry: Registry| async move {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
        Backplane::builder(client)
            .channel("recovery:changes")
            .metrics(&registry, "products")
            .build()
            .await
            .unwrap()
    };
    let cut_off = builder(proxy.port(), &registry)
        .await
        .backplane(backplane(proxy.port(), registry.clone()).await)
        .build()
        .unwrap();
    let other = builder(server.port(), &other_registry)
        .await
        .backplane(backplane(server.port(), other_registry.clone()).await)
        .build()
        .unwrap();
    cut_off.insert(1, "first".into(), None).await.unwrap();

    proxy.cut();
    for _ in 0..1000 {
        let subscribed = registry
            .snapshot()
            .gauge("brisk_cache_backplane_subscribed", &[("name", "products")]);
        if subscribed == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cut_off.insert(1, "older".into(), None).await.unwrap();
    other.insert(1, "newer".into(), None).await.unwrap();

    proxy.heal();
    replayed(&registry).await;
    let kept = in_redis(&server, 1).await;
    assert_ne!(
        kept.as_deref(),
        Some("older"),
        "the replay overwrote another instance's newer write"
    );
}

/// An operator sees recovery start and end in the logs.
#[tokio::test(flavor = "current_thread")]
async fn recovery_is_logged_when_it_starts_and_when_it_ends() {
    let logs = brisk_testkit::LogCapture::this_thread();
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let registry = Registry::new();
    let cache = builder(proxy.port(), &registry).await.build().unwrap();
    proxy.cut();
    cache.insert(1, "v".into(), None).await.unwrap();
    logged(&logs, "auto-recovery queues writes").await;
    proxy.heal();
    replayed(&registry).await;
    logged(&logs, "auto-recovery replayed every queued write").await;
}

/// Waits (up to 1 s) for a captured line that contains `needle`.
async fn logged(logs: &brisk_testkit::LogCapture, needle: &str) {
    for _ in 0..100 {
        if logs.lines().iter().any(|line| line.contains(needle)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no line with {needle:?}: {:?}", logs.lines());
}

/// Another instance invalidates a prefix while this one, cut off from Redis' data, holds a
/// queued value under it: that value is not answered any more, nor written back later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_heard_from_another_instance_covers_queued_values() {
    let server = RedisServer::start().unwrap();
    let proxy = Proxy::start(([127, 0, 0, 1], server.port()).into()).unwrap();
    let (registry, other_registry) = (Registry::new(), Registry::new());
    let backplane = |registry: Registry| {
        let url = server.url();
        async move {
            Backplane::builder(redis::Client::open(url).unwrap())
                .channel("recovery:prefix")
                .metrics(&registry, "products")
                .build()
                .await
                .unwrap()
        }
    };
    // Its data through the proxy, its backplane straight to Redis.
    let cut_off = builder(proxy.port(), &registry)
        .await
        .backplane(backplane(registry.clone()).await)
        .build()
        .unwrap();
    let other = builder(server.port(), &other_registry)
        .await
        .backplane(backplane(other_registry.clone()).await)
        .build()
        .unwrap();
    proxy.cut();
    cut_off.insert(71, "queued".into(), None).await.unwrap();
    assert_eq!(cut_off.get(&71).await.unwrap().as_deref(), Some("queued"));
    cut_off.memory().unwrap().invalidate_all();
    assert_eq!(
        cut_off.get(&71).await.unwrap().as_deref(),
        Some("queued"),
        "answered from the queue while Redis is cut off"
    );
    other.invalidate_prefix("7").await.unwrap();
    for _ in 0..500 {
        let received = registry.snapshot().counter(
            "brisk_cache_backplane_messages_total",
            &[("name", "products"), ("direction", "received")],
        );
        if received.unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cut_off.get(&71).await.unwrap(),
        None,
        "a value the invalidation covers is no longer answered"
    );
    proxy.heal();
    replayed(&registry).await;
    assert_eq!(in_redis(&server, 71).await, None);
}

/// A write whose caller stops waiting while Redis holds the command (writes paused) leaves
/// no old value to be read back: its keys wait for removal from Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cancelled_while_redis_holds_it_leaves_no_old_value() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let cache: Tiered<u64, String, Level> = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .remote(
            RedisCache::builder(connection(server.port()).await)
                .prefix(PREFIX)
                .timeout(Duration::from_secs(30))
                .no_circuit_breaker()
                .build()
                .await
                .unwrap(),
        )
        .metrics(&registry, "products")
        .build()
        .unwrap();
    cache.insert(8, "old".into(), None).await.unwrap();
    admin(&server, &["CLIENT", "PAUSE", "1500", "WRITE"]).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(100), cache.remove(&8)).await;
    assert!(
        cancelled.is_err(),
        "the removal was still waiting for Redis"
    );
    assert_eq!(
        cache.get(&8).await.unwrap(),
        None,
        "the old value is neither in memory nor read back from Redis"
    );
    replayed(&registry).await;
    assert_eq!(in_redis(&server, 8).await, None);
}

/// A remote level in memory that can be taken down: every call then times out.
#[derive(Clone, Default)]
struct Switched {
    entries: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<u64, Stamped<String>>>>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Switched {
    fn check(&self) -> brisk_cache::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::Timeout {
                op: "SET",
                key: "switched".into(),
                after: Duration::ZERO,
            });
        }
        Ok(())
    }

    fn value(&self, key: u64) -> Option<String> {
        let entries = self.entries.lock().unwrap();
        entries.get(&key).map(|stamped| stamped.value().clone())
    }
}

impl Cache<u64, Stamped<String>> for Switched {
    async fn get(&self, key: &u64) -> brisk_cache::Result<Option<Stamped<String>>> {
        self.check()?;
        Ok(self.entries.lock().unwrap().get(key).cloned())
    }

    async fn insert(
        &self,
        key: u64,
        value: Stamped<String>,
        _: Option<Duration>,
    ) -> brisk_cache::Result<()> {
        self.check()?;
        self.entries.lock().unwrap().insert(key, value);
        Ok(())
    }

    async fn remove(&self, key: &u64) -> brisk_cache::Result<()> {
        self.check()?;
        self.entries.lock().unwrap().remove(key);
        Ok(())
    }

    async fn get_many(&self, keys: &[u64]) -> brisk_cache::Result<Vec<Option<Stamped<String>>>> {
        self.check()?;
        let entries = self.entries.lock().unwrap();
        Ok(keys.iter().map(|key| entries.get(key).cloned()).collect())
    }

    async fn insert_many(
        &self,
        entries: Vec<(u64, Stamped<String>)>,
        _: Option<Duration>,
    ) -> brisk_cache::Result<()> {
        self.check()?;
        self.entries.lock().unwrap().extend(entries);
        Ok(())
    }
}

impl brisk_cache::Remote<u64, Stamped<String>> for Switched {
    async fn get_with_ttl(
        &self,
        key: &u64,
    ) -> brisk_cache::Result<Option<brisk_cache::WithTtl<Stamped<String>>>> {
        Ok(self.get(key).await?.map(|stamped| (stamped, None)))
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[u64],
    ) -> brisk_cache::Result<Vec<Option<brisk_cache::WithTtl<Stamped<String>>>>> {
        let found = self.get_many(keys).await?;
        Ok(found
            .into_iter()
            .map(|hit| hit.map(|stamped| (stamped, None)))
            .collect())
    }
}

/// A replay task that ended with its runtime does not strand the queue: the next write, on
/// another runtime, starts a new one.
#[test]
fn a_queue_left_by_a_runtime_that_shut_down_is_replayed_by_the_next() {
    let remote = Switched::default();
    let cache: Tiered<u64, String, Switched> = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(100).build().unwrap())
        .remote(remote.clone())
        .build()
        .unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    runtime().block_on(async {
        remote.down.store(true, std::sync::atomic::Ordering::SeqCst);
        cache.insert(9, "v1".into(), None).await.unwrap();
        // The replay task runs, fails, and waits to try again when the runtime goes.
        tokio::time::sleep(Duration::from_millis(50)).await;
    });
    // That runtime is gone, and its replay task with it.
    remote
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    runtime().block_on(async {
        cache.insert(10, "ten".into(), None).await.unwrap();
        for _ in 0..1000 {
            if remote.value(9).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(remote.value(9).as_deref(), Some("v1"));
        assert_eq!(remote.value(10).as_deref(), Some("ten"));
    });
}
