//! The Redis level on a Redis Cluster of three masters (brisk-testkit): pipelined calls split
//! by hash slot, every node used, and `Tiered` with tags on top.

use std::time::Duration;

use brisk_cache::{Cache, Error, MemoryCache, Stamped, Tiered, redis::RedisCache};
use brisk_testkit::RedisCluster;
use redis::cluster_async::ClusterConnection;

type Level<V> = RedisCache<u64, V, ClusterConnection>;

async fn connection(cluster: &RedisCluster) -> ClusterConnection {
    redis::cluster::ClusterClient::new(cluster.urls())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap()
}

/// How many times each node ran `command`.
async fn calls(cluster: &RedisCluster, command: &str) -> Vec<u64> {
    let mut counts = Vec::new();
    for url in cluster.urls() {
        let mut node = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut node)
            .await
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        counts.push(
            info.lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .and_then(|rest| rest.split(',').next())
                .map_or(0, |calls| calls.parse().unwrap()),
        );
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_calls_are_split_by_hash_slot_across_the_nodes() {
    let cluster = RedisCluster::start().unwrap();
    let cache: Level<String> = RedisCache::builder(connection(&cluster).await)
        .prefix("cluster")
        .ttl(Duration::from_secs(600))
        .cluster(true)
        .build()
        .await
        .unwrap();
    let entries: Vec<(u64, String)> = (0..300).map(|key| (key, format!("v{key}"))).collect();
    cache.insert_many(entries, None).await.unwrap();
    let keys: Vec<u64> = (0..310).collect();
    let found = cache.get_many(&keys).await.unwrap();
    for (key, value) in keys.iter().zip(&found) {
        assert_eq!(
            value.as_deref(),
            (*key < 300).then(|| format!("v{key}")).as_deref()
        );
    }

    let gets_before = calls(&cluster, "get").await;
    let with_ttl = cache.get_many_with_ttl(&keys[..100]).await.unwrap();
    for (key, hit) in keys.iter().zip(&with_ttl) {
        let (value, left) = hit.as_ref().unwrap();
        assert_eq!(value, &format!("v{key}"));
        assert!(left.unwrap() > Duration::from_secs(590));
    }
    let gets: Vec<u64> = calls(&cluster, "get")
        .await
        .iter()
        .zip(&gets_before)
        .map(|(after, before)| after - before)
        .collect();
    assert_eq!(gets.iter().sum::<u64>(), 100, "{gets:?}");
    assert!(
        gets.iter().all(|&n| n > 0),
        "every node answered its slots: {gets:?}"
    );

    // Without splitting, the same pipeline crosses slots and the cluster refuses it.
    let unsplit: Level<String> = RedisCache::builder(connection(&cluster).await)
        .prefix("cluster")
        .build()
        .await
        .unwrap();
    assert!(
        unsplit
            .insert_many(vec![(1, "a".into()), (2, "b".into())], None)
            .await
            .is_err()
    );
    assert!(matches!(
        cache.invalidate_prefix("1").await,
        Err(Error::Config {
            setting: "cluster",
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiered_cache_runs_on_the_cluster_with_tags() {
    let cluster = RedisCluster::start().unwrap();
    let remote: Level<Stamped<String>> = RedisCache::builder(connection(&cluster).await)
        .prefix("tiered")
        .cluster(true)
        .build()
        .await
        .unwrap();
    let cache = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .remote(remote)
        .fresh_for(Duration::from_secs(60))
        .build()
        .unwrap();
    for key in 0..200 {
        cache
            .insert_with_tags(
                key,
                format!("v{key}"),
                None,
                &["even-odd", &format!("tag{}", key % 2)],
            )
            .await
            .unwrap();
    }
    // A second instance reads them from the cluster through get_many.
    let other = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .remote(
            RedisCache::builder(connection(&cluster).await)
                .prefix("tiered")
                .cluster(true)
                .build()
                .await
                .unwrap(),
        )
        .build()
        .unwrap();
    let keys: Vec<u64> = (0..200).collect();
    let found = other.get_many(&keys).await.unwrap();
    assert!(
        found
            .iter()
            .zip(&keys)
            .all(|(value, key)| value.as_deref() == Some(format!("v{key}").as_str()))
    );
    let loaded = other
        .try_get_with(500, || async { Ok::<_, String>("loaded".to_owned()) })
        .await
        .unwrap();
    assert_eq!(loaded, "loaded");

    assert!(cache.invalidate_tag("tag1").await.unwrap() >= 100);
    let left = cache.remote().unwrap().get_many(&keys).await.unwrap();
    for (key, value) in keys.iter().zip(left) {
        assert_eq!(value.is_some(), key % 2 == 0, "key {key}");
    }
}
