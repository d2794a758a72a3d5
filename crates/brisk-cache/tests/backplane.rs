//! The backplane on a real redis-server: writes and removals in one instance drop the key from
//! the others' memory, a lost subscription makes memory stale and is resubscribed, and the
//! server dying and coming back leaves the instances in step again.

use std::{
    fmt::{self, Display},
    hash::Hash,
    sync::Arc,
    time::{Duration, Instant},
};

use brisk_cache::{
    Cache, MemoryCache, Stamped, Tiered,
    redis::{Backplane, RedisCache},
};
use brisk_metrics::Registry;
use brisk_testkit::RedisServer;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

type Instance = Tiered<u64, String, RedisCache<u64, Stamped<String>>>;
type InstanceOf<K> = Tiered<K, String, RedisCache<K, Stamped<String>>>;

async fn instance(server: &RedisServer, registry: &Registry) -> Instance {
    instance_of(server, registry).await
}

async fn instance_of<K>(server: &RedisServer, registry: &Registry) -> InstanceOf<K>
where
    K: Hash + Eq + Clone + Display + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let client = redis::Client::open(server.url()).unwrap();
    let connection = ConnectionManager::new(client.clone()).await.unwrap();
    Tiered::builder()
        .memory(
            MemoryCache::builder()
                .max_entries(1000)
                .ttl(Duration::from_secs(600))
                .build()
                .unwrap(),
        )
        .remote(
            RedisCache::builder(connection)
                .prefix("products")
                .timeout(Duration::from_millis(200))
                .build()
                .await
                .unwrap(),
        )
        .backplane(
            Backplane::builder(client)
                .channel("products:changes")
                .timeout(Duration::from_millis(200))
                .metrics(registry, "products")
                .build()
                .await
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn in_memory(cache: &Instance, key: u64) -> Option<String> {
    cache.memory().unwrap().get(&key).map(Stamped::into_value)
}

/// Waits (up to 5 s) until `done`; how long it took.
async fn until(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    started.elapsed()
}

fn counter(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> u64 {
    registry.snapshot().counter(name, labels).unwrap_or(0)
}

fn subscribed(registry: &Registry) -> i64 {
    registry
        .snapshot()
        .gauge("brisk_cache_backplane_subscribed", &[("name", "products")])
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_or_removal_in_one_instance_drops_the_key_from_the_others() {
    let server = RedisServer::start().unwrap();
    let (writer_metrics, reader_metrics) = (Registry::new(), Registry::new());
    let writer = instance(&server, &writer_metrics).await;
    let reader = instance(&server, &reader_metrics).await;
    writer.insert(1, "kettle".into(), None).await.unwrap();
    // Once the write's message has arrived (a fill racing a message of its key is not
    // kept: the write may have come after the value was read from L2)…
    until("the first write's message reaches the reader", || {
        counter(
            &reader_metrics,
            "brisk_cache_backplane_messages_total",
            &[("name", "products"), ("direction", "received")],
        ) == 1
    })
    .await;
    // …the reader holds it in memory (an L2 hit fills L1).
    assert_eq!(reader.get(&1).await.unwrap().as_deref(), Some("kettle"));
    assert_eq!(in_memory(&reader, 1).as_deref(), Some("kettle"));

    writer.insert(1, "teapot".into(), None).await.unwrap();
    until("the write reaches the reader", || {
        in_memory(&reader, 1).is_none()
    })
    .await;
    assert_eq!(reader.get(&1).await.unwrap().as_deref(), Some("teapot"));
    assert_eq!(
        in_memory(&writer, 1).as_deref(),
        Some("teapot"),
        "an instance does not drop its own writes"
    );

    // A load stored by the writer is published too.
    reader.get(&1).await.unwrap();
    writer.remove(&1).await.unwrap();
    until("the removal reaches the reader", || {
        in_memory(&reader, 1).is_none()
    })
    .await;
    assert_eq!(reader.get(&1).await.unwrap(), None);
    let loaded = writer
        .try_get_with(1, || async { Ok::<_, String>("loaded".to_owned()) })
        .await
        .unwrap();
    assert_eq!(loaded, "loaded");
    reader.get(&1).await.unwrap();
    writer
        .insert_many(vec![(1, "a".into()), (2, "b".into())], None)
        .await
        .unwrap();
    until("insert_many reaches the reader", || {
        in_memory(&reader, 1).is_none()
    })
    .await;

    let sent = counter(
        &writer_metrics,
        "brisk_cache_backplane_messages_total",
        &[("name", "products"), ("direction", "sent")],
    );
    assert_eq!(sent, 5, "every write, removal and load, once");
    // (Memory may have had nothing to drop: a fill racing a message is not kept.)
    until("every message reaches the reader", || {
        counter(
            &reader_metrics,
            "brisk_cache_backplane_messages_total",
            &[("name", "products"), ("direction", "received")],
        ) == 5
    })
    .await;
    assert_eq!(
        counter(
            &reader_metrics,
            "brisk_cache_backplane_gaps_total",
            &[("name", "products")]
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_subscription_makes_memory_stale_and_is_resubscribed() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let writer = instance(&server, &Registry::new()).await;
    let reader = instance(&server, &registry).await;
    writer.insert(5, "old".into(), None).await.unwrap();
    // After its message (a fill racing it would not be kept), the reader holds the value.
    until("the write's message reaches the reader", || {
        counter(
            &registry,
            "brisk_cache_backplane_messages_total",
            &[("name", "products"), ("direction", "received")],
        ) == 1
    })
    .await;
    assert_eq!(reader.get(&5).await.unwrap().as_deref(), Some("old"));

    // A change the backplane never carries (written to L2 directly): the reader's memory
    // keeps the old value, as it would after a missed message.
    writer
        .remote()
        .unwrap()
        .insert(5, stamped(&writer, "new").await, None)
        .await
        .unwrap();
    assert_eq!(reader.get(&5).await.unwrap().as_deref(), Some("old"));

    // The server drops every subscriber connection: a gap.
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(killed, 2, "both instances' subscriptions");
    until("the reader sees the gap", || {
        counter(
            &registry,
            "brisk_cache_backplane_gaps_total",
            &[("name", "products")],
        ) >= 1
    })
    .await;
    // Memory's copy is stale now: the read goes to L2 and finds the new value.
    assert_eq!(reader.get(&5).await.unwrap().as_deref(), Some("new"));

    until("resubscribed", || subscribed(&registry) == 1).await;
    reader.get(&6).await.unwrap();
    writer.insert(6, "after".into(), None).await.unwrap();
    reader.get(&6).await.unwrap();
    writer.insert(6, "after again".into(), None).await.unwrap();
    until("writes reach the reader again", || {
        in_memory(&reader, 6).as_deref() != Some("after")
    })
    .await;
    assert_eq!(
        reader.get(&6).await.unwrap().as_deref(),
        Some("after again")
    );
}

/// A value stamped as the cache stamps an insert, read back from L2 after a write.
async fn stamped(cache: &Instance, value: &str) -> Stamped<String> {
    cache
        .insert(u64::MAX, value.to_owned(), None)
        .await
        .unwrap();
    cache
        .remote()
        .unwrap()
        .get(&u64::MAX)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_dies_and_comes_back_the_instances_are_in_step_again() {
    let mut server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let writer = instance(&server, &Registry::new()).await;
    let reader = instance(&server, &registry).await;
    writer.insert(1, "before".into(), None).await.unwrap();
    assert_eq!(reader.get(&1).await.unwrap().as_deref(), Some("before"));

    server.kill();
    until("the reader's subscription is lost", || {
        subscribed(&registry) == 0
    })
    .await;
    // While Redis is down memory still answers try_get_with (stale, L2 unreachable: the
    // loader runs).
    let answer = reader
        .try_get_with(1, || async {
            Ok::<_, String>("from the database".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(answer, "from the database");

    server.restart().unwrap();
    until("resubscribed", || subscribed(&registry) == 1).await;
    let gaps = counter(
        &registry,
        "brisk_cache_backplane_gaps_total",
        &[("name", "products")],
    );
    assert!(gaps >= 2, "told at the loss and again when back: {gaps}");
    // The writer's publisher reconnects by itself; its next write reaches the reader.
    let mut delivered = false;
    for attempt in 0..50 {
        let _ = writer.insert(1, format!("after {attempt}"), None).await;
        reader.get(&1).await.ok();
        let _ = writer.insert(1, format!("after {attempt}!"), None).await;
        if until_quiet(&reader, 1, &format!("after {attempt}")).await {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "no write reached the reader after the restart");
}

/// Whether memory stops holding `stale` for `key` within 200 ms.
async fn until_quiet(cache: &Instance, key: u64, stale: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(200) {
        if in_memory(cache, key).as_deref() != Some(stale) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_invalidated_in_every_level_and_instance_a_page_at_a_time() {
    let server = RedisServer::start().unwrap();
    let writer = instance(&server, &Registry::new()).await;
    let reader = instance(&server, &Registry::new()).await;
    // More keys than one SSCAN page, and one of another tag.
    for key in 1..=1200 {
        writer
            .insert_with_tags(key, format!("product {key}"), None, &["category:7"])
            .await
            .unwrap();
    }
    writer
        .insert_with_tags(2000, "other".into(), None, &["category:8", "brand:3"])
        .await
        .unwrap();
    for key in [1, 600, 1200, 2000] {
        assert!(reader.get(&key).await.unwrap().is_some());
    }

    let listed = writer.invalidate_tag("category:7").await.unwrap();
    assert!(listed >= 1200, "{listed}");
    let keys: Vec<u64> = (1..=1200).collect();
    for chunk in keys.chunks(300) {
        let found = writer.remote().unwrap().get_many(chunk).await.unwrap();
        assert!(found.iter().all(Option::is_none), "gone from Redis");
    }
    assert!(keys.iter().all(|&key| in_memory(&writer, key).is_none()));
    until("gone from the reader's memory", || {
        [1, 600, 1200]
            .iter()
            .all(|&key| in_memory(&reader, key).is_none())
    })
    .await;
    assert_eq!(reader.get(&600).await.unwrap(), None);
    assert_eq!(
        in_memory(&reader, 2000).as_deref(),
        Some("other"),
        "another tag's entry stays"
    );
    let mut admin = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let left: u64 = redis::cmd("EXISTS")
        .arg("products:0#tag:category:7")
        .arg("products:0#tag:category:8")
        .arg("products:0#tag:brand:3")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        left, 2,
        "the invalidated tag's set is gone, the others stay"
    );
    // Either of an entry's tags reaches it.
    writer.invalidate_tag("brand:3").await.unwrap();
    assert_eq!(writer.get(&2000).await.unwrap(), None);
}

#[tokio::test]
async fn a_tags_set_lives_as_long_as_its_longest_lived_entry() {
    let server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let cache: RedisCache<u64, String> =
        RedisCache::builder(ConnectionManager::new(client.clone()).await.unwrap())
            .prefix("tags")
            .build()
            .await
            .unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let mut pttl = async |tag: &str| -> i64 {
        redis::cmd("PTTL")
            .arg(format!("tags:0#tag:{tag}"))
            .query_async(&mut admin)
            .await
            .unwrap()
    };
    let secs = Duration::from_secs;
    cache
        .insert_with_tags(1, "a".into(), Some(secs(10)), &["t"])
        .await
        .unwrap();
    let first = pttl("t").await;
    assert!(first > 9_000 && first <= 10_000, "{first}");
    cache
        .insert_with_tags(2, "b".into(), Some(secs(60)), &["t"])
        .await
        .unwrap();
    let longer = pttl("t").await;
    assert!(longer > 59_000, "extended: {longer}");
    cache
        .insert_with_tags(3, "c".into(), Some(secs(5)), &["t"])
        .await
        .unwrap();
    assert!(pttl("t").await > 59_000, "never shortened");
    cache
        .insert_with_tags(4, "d".into(), None, &["t", "forever"])
        .await
        .unwrap();
    assert_eq!(
        pttl("t").await,
        -1,
        "an entry without expiry keeps its tags"
    );
    assert_eq!(pttl("forever").await, -1);
    cache
        .insert_with_tags(5, "e".into(), Some(secs(5)), &["forever"])
        .await
        .unwrap();
    assert_eq!(
        pttl("forever").await,
        -1,
        "still kept for the entry that never expires"
    );
    let (_, listed) = cache.tagged("t", 0).await.unwrap();
    let mut listed = listed;
    listed.sort_unstable();
    assert_eq!(listed, [1, 2, 3, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_is_invalidated_in_every_level_and_instance() {
    let server = RedisServer::start().unwrap();
    let writer = instance(&server, &Registry::new()).await;
    let reader = instance(&server, &Registry::new()).await;
    let entries: Vec<(u64, String)> = (1..=300).map(|key| (key, format!("p{key}"))).collect();
    writer.insert_many(entries, None).await.unwrap();
    for key in [12, 13, 120, 129] {
        assert!(reader.get(&key).await.unwrap().is_some());
    }
    // 12 and 120..=129.
    assert_eq!(writer.invalidate_prefix("12").await.unwrap(), 11);
    for key in [12, 120, 125, 129] {
        assert_eq!(writer.remote().unwrap().get(&key).await.unwrap(), None);
        assert_eq!(in_memory(&writer, key), None);
    }
    until("gone from the reader's memory", || {
        in_memory(&reader, 12).is_none() && in_memory(&reader, 129).is_none()
    })
    .await;
    assert_eq!(in_memory(&reader, 13).as_deref(), Some("p13"));
    assert_eq!(writer.get(&1).await.unwrap().as_deref(), Some("p1"));
    assert_eq!(
        writer.invalidate_prefix("*").await.unwrap(),
        0,
        "globs match literally"
    );
}

fn gaps(registry: &Registry) -> u64 {
    counter(
        registry,
        "brisk_cache_backplane_gaps_total",
        &[("name", "products")],
    )
}

fn received(registry: &Registry) -> u64 {
    counter(
        registry,
        "brisk_cache_backplane_messages_total",
        &[("name", "products"), ("direction", "received")],
    )
}

/// Concurrent writes in one instance publish concurrently; their messages must reach the others
/// numbered in the order they arrive, or each one out of order reads as a gap (and a gap makes
/// every value in the reader's memory stale).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishes_from_one_instance_arrive_in_order_without_gaps() {
    const TASKS: u64 = 16;
    const EACH: u64 = 150;
    let server = RedisServer::start().unwrap();
    let (writer_metrics, reader_metrics) = (Registry::new(), Registry::new());
    let reader = instance(&server, &reader_metrics).await;
    let writer = Arc::new(instance(&server, &writer_metrics).await);
    let start = Arc::new(tokio::sync::Barrier::new(TASKS as usize));
    let writes: Vec<_> = (0..TASKS)
        .map(|task| {
            let (writer, start) = (Arc::clone(&writer), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                for n in 0..EACH {
                    let key = task * EACH + n;
                    writer.insert(key, format!("v{key}"), None).await.unwrap();
                }
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap();
    }
    until("every message reaches the reader", || {
        received(&reader_metrics) == TASKS * EACH
    })
    .await;
    assert_eq!(
        gaps(&reader_metrics),
        0,
        "concurrent publishes read as gaps"
    );
    drop(reader);
}

/// A key whose message cannot be encoded (13): its message number is used but nothing is
/// sent, as when a publish is lost.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
struct Sku(u64);

impl Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sku{}", self.0)
    }
}

impl Serialize for Sku {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0 == 13 {
            return Err(serde::ser::Error::custom("unlucky"));
        }
        serializer.serialize_u64(self.0)
    }
}

/// A receiver subscribed before a sender's first publish hears all of it: a first message
/// numbered above 1 means the ones before it were lost, a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_numbered_above_one_is_a_gap_for_a_receiver_there_from_the_start() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let reader: InstanceOf<Sku> = instance_of(&server, &registry).await;
    let writer: InstanceOf<Sku> = instance_of(&server, &Registry::new()).await;
    // Message 1 is lost (it cannot be encoded); message 2 arrives.
    writer.insert(Sku(13), "lost".into(), None).await.unwrap();
    writer.insert(Sku(1), "heard".into(), None).await.unwrap();
    until("message 2 arrives", || received(&registry) == 1).await;
    assert_eq!(gaps(&registry), 1, "message 1 was missed");
    drop(reader);
}

/// A receiver that subscribes after a sender started cannot tell what it missed before it
/// subscribed (and held nothing then): it follows the sender from the first message it hears,
/// and a jump after that is a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_subscribes_later_follows_a_sender_from_its_first_message() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let writer: InstanceOf<Sku> = instance_of(&server, &Registry::new()).await;
    writer.insert(Sku(13), "lost".into(), None).await.unwrap();
    writer.insert(Sku(1), "before".into(), None).await.unwrap();
    let reader: InstanceOf<Sku> = instance_of(&server, &registry).await;
    writer
        .insert(Sku(2), "heard first".into(), None)
        .await
        .unwrap();
    until("message 3 arrives", || received(&registry) == 1).await;
    assert_eq!(
        gaps(&registry),
        0,
        "what came before the subscription is not a gap"
    );
    writer.insert(Sku(13), "lost".into(), None).await.unwrap();
    writer.insert(Sku(3), "after".into(), None).await.unwrap();
    until("message 5 arrives", || received(&registry) == 2).await;
    assert_eq!(gaps(&registry), 1, "message 4 was missed");
    drop(reader);
}

/// Applying a message runs the reader's code (its memory level's eviction listener, here); a
/// panic there must not end the task that delivers every later message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_applying_a_message_does_not_stop_later_ones() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let client = redis::Client::open(server.url()).unwrap();
    let reader: Instance = Tiered::builder()
        .memory(
            MemoryCache::builder()
                .max_entries(1000)
                .eviction_listener(|key: u64, _, _| assert_ne!(key, 666, "listener panics"))
                .build()
                .unwrap(),
        )
        .remote(
            RedisCache::builder(ConnectionManager::new(client.clone()).await.unwrap())
                .prefix("products")
                .build()
                .await
                .unwrap(),
        )
        .backplane(
            Backplane::builder(client)
                .channel("products:changes")
                .metrics(&registry, "products")
                .build()
                .await
                .unwrap(),
        )
        .build()
        .unwrap();
    let writer = instance(&server, &Registry::new()).await;
    writer.insert(666, "cursed".into(), None).await.unwrap();
    writer.insert(1, "old".into(), None).await.unwrap();
    // Once both messages are applied (a fill racing one is dropped again, which would run
    // the listener here), the reader's memory takes both keys.
    until("both writes reach the reader", || received(&registry) == 2).await;
    assert!(reader.get(&666).await.unwrap().is_some());
    assert_eq!(reader.get(&1).await.unwrap().as_deref(), Some("old"));
    // Dropping 666 from the reader's memory panics in its listener.
    writer.insert(666, "again".into(), None).await.unwrap();
    writer.insert(1, "new".into(), None).await.unwrap();
    until("the write after the panic reaches the reader", || {
        reader.memory().unwrap().get(&1).is_none()
    })
    .await;
    assert_eq!(reader.get(&1).await.unwrap().as_deref(), Some("new"));
    assert!(
        gaps(&registry) >= 1,
        "the panicked change may not have been applied"
    );
}
