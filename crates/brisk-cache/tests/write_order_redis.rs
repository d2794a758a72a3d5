//! Loads against writes across instances sharing a real redis-server: a load in one instance
//! that read the old row before another instance's write completed never stores it after
//! that write, in Redis or in memory (the write's fence, checked by the store's script).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use brisk_cache::{
    Cache, MemoryCache, Stamped, Tiered,
    redis::{Backplane, RedisCache},
};
use brisk_testkit::RedisServer;
use redis::aio::ConnectionManager;
use tokio::sync::{Barrier, Notify};

type Instance = Tiered<u64, String, RedisCache<u64, Stamped<String>>>;

/// An instance of the service, with a backplane.
async fn instance(server: &RedisServer, fence: Duration) -> Instance {
    let client = redis::Client::open(server.url()).unwrap();
    builder(server, fence)
        .await
        .backplane(
            Backplane::builder(client)
                .channel("products:changes")
                .build()
                .await
                .unwrap(),
        )
        .build()
        .unwrap()
}

async fn builder(
    server: &RedisServer,
    fence: Duration,
) -> brisk_cache::TieredBuilder<u64, String, RedisCache<u64, Stamped<String>>> {
    let client = redis::Client::open(server.url()).unwrap();
    let connection = ConnectionManager::new(client).await.unwrap();
    Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .remote(
            RedisCache::builder(connection)
                .prefix("products")
                .write_fence(fence)
                .build()
                .await
                .unwrap(),
        )
}

/// The table behind every instance.
#[derive(Clone, Default)]
struct Table(Arc<Mutex<HashMap<u64, String>>>);

impl Table {
    fn set(&self, value: &str) {
        self.0.lock().unwrap().insert(1, value.to_owned());
    }

    fn read(&self) -> String {
        self.0.lock().unwrap()[&1].clone()
    }
}

/// Starts a load of key 1 in `cache` that reads the table, waits at `read` and for
/// `release`, and returns what it read.
fn held_load(
    cache: &Instance,
    table: &Table,
    read: &Arc<Barrier>,
    release: &Arc<Notify>,
) -> tokio::task::JoinHandle<String> {
    let (cache, table) = (cache.clone(), table.clone());
    let (read, release) = (Arc::clone(read), Arc::clone(release));
    tokio::spawn(async move {
        cache
            .try_get_with(1, move || async move {
                let row = table.read();
                read.wait().await;
                release.notified().await;
                Ok::<_, String>(row)
            })
            .await
            .unwrap()
    })
}

/// What a fresh instance (nothing in memory) reads from Redis for key 1.
async fn in_redis(server: &RedisServer) -> Option<String> {
    instance(server, Duration::from_secs(60))
        .await
        .get(&1)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_one_instance_does_not_store_the_old_row_after_a_remove_in_another() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (
        instance(&server, Duration::from_secs(60)).await,
        instance(&server, Duration::from_secs(60)).await,
    );
    let table = Table::default();
    table.set("old");
    let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
    let loading = held_load(&a, &table, &read, &release);
    read.wait().await;
    table.set("new");
    b.remove(&1).await.unwrap();
    release.notify_one();
    assert_eq!(loading.await.unwrap(), "old");
    // Neither Redis nor either instance's memory answers the old row.
    assert_eq!(in_redis(&server).await, None);
    assert_eq!(a.get(&1).await.unwrap(), None);
    assert_eq!(b.get(&1).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_one_instance_does_not_overwrite_an_insert_in_another() {
    let server = RedisServer::start().unwrap();
    let (a, b) = (
        instance(&server, Duration::from_secs(60)).await,
        instance(&server, Duration::from_secs(60)).await,
    );
    let table = Table::default();
    table.set("old");
    let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
    let loading = held_load(&a, &table, &read, &release);
    read.wait().await;
    table.set("new");
    b.insert(1, "new".to_owned(), None).await.unwrap();
    release.notify_one();
    assert_eq!(loading.await.unwrap(), "old");
    assert_eq!(in_redis(&server).await.as_deref(), Some("new"));
    assert_eq!(a.get(&1).await.unwrap().as_deref(), Some("new"));
    assert_eq!(b.get(&1).await.unwrap().as_deref(), Some("new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_one_instance_does_not_store_the_old_row_after_a_prefix_removal_in_another() {
    let server = RedisServer::start().unwrap();
    // No backplane: Redis alone must refuse the late store.
    let a = builder(&server, Duration::from_secs(60))
        .await
        .build()
        .unwrap();
    let b = builder(&server, Duration::from_secs(60))
        .await
        .build()
        .unwrap();
    let table = Table::default();
    table.set("old");
    let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
    let loading = held_load(&a, &table, &read, &release);
    read.wait().await;
    table.set("new");
    b.invalidate_prefix("1").await.unwrap();
    release.notify_one();
    assert_eq!(loading.await.unwrap(), "old");
    assert_eq!(in_redis(&server).await, None);
    assert_eq!(b.get(&1).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_without_a_write_meanwhile_is_stored_for_every_instance() {
    let server = RedisServer::start().unwrap();
    // Without a backplane: a message of the earlier write arriving during the load would
    // (rightly, since it cannot tell when the write was) keep the load's value out of memory.
    let a = builder(&server, Duration::from_secs(60))
        .await
        .build()
        .unwrap();
    let b = builder(&server, Duration::from_secs(60))
        .await
        .build()
        .unwrap();
    // A write long before the load: its fence does not keep the load out.
    b.insert(1, "first".to_owned(), None).await.unwrap();
    b.remove(&1).await.unwrap();
    let table = Table::default();
    table.set("row");
    let loaded = a
        .try_get_with(1, move || async move { Ok::<_, String>(table.read()) })
        .await
        .unwrap();
    assert_eq!(loaded, "row");
    assert_eq!(in_redis(&server).await.as_deref(), Some("row"));
    assert_eq!(b.get(&1).await.unwrap().as_deref(), Some("row"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_outlives_the_write_fence_is_not_stored_in_redis() {
    let server = RedisServer::start().unwrap();
    // Fences live 2 s; a second is left for clock differences: a load of over 1 s cannot
    // tell whether a write's fence came and went while it ran.
    let a = instance(&server, Duration::from_secs(2)).await;
    let table = Table::default();
    table.set("slow");
    let loaded = a
        .try_get_with(1, move || async move {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            Ok::<_, String>(table.read())
        })
        .await
        .unwrap();
    assert_eq!(loaded, "slow");
    assert_eq!(in_redis(&server).await, None);
}

#[tokio::test]
async fn a_write_fence_shorter_than_two_seconds_is_a_config_error() {
    let server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let connection = ConnectionManager::new(client).await.unwrap();
    let built = RedisCache::<u64, String>::builder(connection)
        .prefix("products")
        .write_fence(Duration::from_millis(1999))
        .build()
        .await;
    assert!(
        matches!(
            &built,
            Err(brisk_cache::Error::Config {
                setting: "write_fence",
                ..
            })
        ),
        "{built:?}"
    );
}

/// The model of the guarantee across two instances sharing Redis and a backplane: one
/// writer updates a row (a version per key) and inserts or removes it through either
/// instance; the write counts as complete once the other instance has received its
/// backplane message (memory elsewhere follows the message). Readers in both instances
/// read through with a loader that reads the row and yields before returning it. A read
/// that starts after a write completed never returns an older version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_across_two_instances_no_read_returns_a_version_older_than_a_completed_write() {
    use std::sync::atomic::{AtomicU64, Ordering};

    use brisk_metrics::Registry;

    type Versions = Tiered<u64, u64, RedisCache<u64, Stamped<u64>>>;
    const KEYS: u64 = 4;
    let server = RedisServer::start().unwrap();
    let versioned = |registry: Registry| {
        let url = server.url();
        async move {
            let client = redis::Client::open(url).unwrap();
            let connection = ConnectionManager::new(client.clone()).await.unwrap();
            let cache: Versions = Tiered::builder()
                .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
                .remote(
                    RedisCache::builder(connection)
                        .prefix("model")
                        .build()
                        .await
                        .unwrap(),
                )
                .backplane(
                    Backplane::builder(client)
                        .channel("model:changes")
                        .metrics(&registry, "model")
                        .build()
                        .await
                        .unwrap(),
                )
                .build()
                .unwrap();
            (cache, registry)
        }
    };
    let instances = Arc::new([
        versioned(Registry::new()).await,
        versioned(Registry::new()).await,
    ]);
    let messages = |registry: &Registry, direction: &str| {
        registry
            .snapshot()
            .counter(
                "brisk_cache_backplane_messages_total",
                &[("name", "model"), ("direction", direction)],
            )
            .unwrap_or(0)
    };
    let rows = Arc::new(Mutex::new(vec![0_u64; KEYS as usize]));
    let completed: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut readers = Vec::new();
    for reader in 0..4_u64 {
        let (instances, rows, completed, writing) = (
            Arc::clone(&instances),
            Arc::clone(&rows),
            Arc::clone(&completed),
            Arc::clone(&writing),
        );
        readers.push(tokio::spawn(async move {
            let mut random = reader * 7919 + 1;
            let mut next = move || {
                random ^= random << 13;
                random ^= random >> 7;
                random ^= random << 17;
                random
            };
            // Reads for as long as the writer writes.
            while writing.load(Ordering::SeqCst) {
                let key = next() % KEYS;
                let (cache, _) = &instances[(next() % 2) as usize];
                let floor = completed[key as usize].load(Ordering::SeqCst);
                let (rows, pauses) = (Arc::clone(&rows), next() % 4);
                let version = cache
                    .try_get_with(key, move || async move {
                        let row = rows.lock().unwrap()[key as usize];
                        for _ in 0..pauses {
                            tokio::task::yield_now().await;
                        }
                        Ok::<_, String>(row)
                    })
                    .await
                    .unwrap();
                assert!(
                    version >= floor,
                    "key {key} read version {version} after version {floor} was written"
                );
                // A hit never yields by itself: leave the writer and the backplane room.
                tokio::task::yield_now().await;
            }
        }));
    }
    /// Stops the readers when the writer ends, panicking or not.
    struct Stop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(false, Ordering::SeqCst);
        }
    }
    let stop = Stop(Arc::clone(&writing));
    let mut random = 12345_u64;
    for _ in 0..200 {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let key = random % KEYS;
        let through = (random >> 8) as usize % 2;
        let version = {
            let mut rows = rows.lock().unwrap();
            rows[key as usize] += 1;
            rows[key as usize]
        };
        let (cache, registry) = &instances[through];
        if random >> 16 & 1 == 0 {
            cache.insert(key, version, None).await.unwrap();
        } else {
            cache.remove(&key).await.unwrap();
        }
        // Complete once the other instance has every message this one sent.
        let other = &instances[1 - through].1;
        let started = std::time::Instant::now();
        while messages(other, "received") < messages(registry, "sent") {
            assert!(started.elapsed() < Duration::from_secs(5), "messages lost");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        completed[key as usize].fetch_max(version, Ordering::SeqCst);
        tokio::task::yield_now().await;
    }
    drop(stop);
    for reader in readers {
        reader.await.unwrap();
    }
}
