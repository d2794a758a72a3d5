//! Several OS processes sharing one Redis, each with its own `Tiered` cache (memory, Redis,
//! backplane, loads coordinated across instances): the protocol behind the three-process test
//! and the benchmark's propagation figure. The parent starts the children with
//! [`CHILD_ENV`] set; they meet at barriers kept in Redis and leave their results there.
//!
//! 1. **Stampede**: every process sends `callers` concurrent gets of one cold key; each load
//!    counts itself in Redis (`p:loads`), each answered get in `p:served`.
//! 2. **Propagation**: process 0 writes `keys` keys that every other process holds in memory,
//!    one every 10 ms, noting the time of each write; the others watch their memory and note
//!    when each key leaves it. Latencies in microseconds go to `p:latencies`; keys still
//!    there after 10 s to `p:missed`.

#![allow(dead_code)] // Each including crate uses its own half.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use brisk_cache::{
    Cache, MemoryCache, Stamped, Tiered,
    redis::{Backplane, RedisCache},
};
use redis::{AsyncCommands, aio::ConnectionManager};

/// Set in a child: `<redis url> <index> <processes> <callers> <keys>`.
pub(crate) const CHILD_ENV: &str = "BRISK_CACHE_PROCESS";

type Instance = Tiered<String, String, RedisCache<String, Stamped<String>>>;

/// What the processes did, read back by the parent.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) loads: u64,
    pub(crate) served: u64,
    pub(crate) latencies_us: Vec<u64>,
    pub(crate) missed: u64,
}

impl Report {
    /// The `q` quantile of the propagation latencies, in milliseconds.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        let at = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[at] as f64 / 1000.0
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

async fn admin(url: &str) -> ConnectionManager {
    ConnectionManager::new(redis::Client::open(url).unwrap())
        .await
        .unwrap()
}

/// Waits until `count` processes have arrived at barrier `name`.
async fn barrier(connection: &mut ConnectionManager, name: &str, count: u64) {
    let key = format!("p:barrier:{name}");
    let _: u64 = connection.incr(&key, 1).await.unwrap();
    let started = Instant::now();
    loop {
        let arrived: u64 = connection.get(&key).await.unwrap();
        if arrived >= count {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "barrier {name}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn instance(url: &str) -> Instance {
    let client = redis::Client::open(url).unwrap();
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_connection_timeout(Some(Duration::from_secs(2)));
    let connection = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .unwrap();
    Tiered::builder()
        .memory(MemoryCache::builder().max_entries(10_000).build().unwrap())
        .remote(
            RedisCache::builder(connection.clone())
                .prefix("p")
                .build()
                .await
                .unwrap(),
        )
        .backplane(
            Backplane::builder(client)
                .channel("p:changes")
                .build()
                .await
                .unwrap(),
        )
        .load_across_instances(connection, "p:flight:")
        .build()
        .unwrap()
}

/// Runs one child's part, as told by [`CHILD_ENV`].
pub(crate) async fn child(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    let [url, index, processes, callers, keys] = parts[..] else {
        panic!("bad {CHILD_ENV}: {spec}");
    };
    let (index, processes): (u64, u64) = (index.parse().unwrap(), processes.parse().unwrap());
    let (callers, keys): (usize, usize) = (callers.parse().unwrap(), keys.parse().unwrap());
    let cache = instance(url).await;
    let mut redis = admin(url).await;

    // 1. The stampede.
    barrier(&mut redis, "stampede", processes).await;
    let served = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (cache, served, url) = (cache.clone(), Arc::clone(&served), url.to_owned());
            tokio::spawn(async move {
                let value = cache
                    .try_get_with("hot".to_owned(), move || async move {
                        let mut redis = admin(&url).await;
                        let _: u64 = redis.incr("p:loads", 1).await.unwrap();
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, String>("the hot value".to_owned())
                    })
                    .await;
                if value.is_ok_and(|value| value == "the hot value") {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let _: u64 = redis
        .incr("p:served", served.load(Ordering::Relaxed) as u64)
        .await
        .unwrap();

    // 2. Propagation.
    let names: Vec<String> = (0..keys).map(|key| format!("w{key}")).collect();
    if index == 0 {
        let entries = names
            .iter()
            .map(|name| (name.clone(), "v1".to_owned()))
            .collect();
        cache.insert_many(entries, None).await.unwrap();
    }
    barrier(&mut redis, "written", processes).await;
    if index != 0 {
        for name in &names {
            assert_eq!(cache.get(name).await.unwrap().as_deref(), Some("v1"));
        }
    }
    barrier(&mut redis, "held", processes).await;
    if index == 0 {
        for name in &names {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let _: u64 = redis.hset("p:written", name, now_us()).await.unwrap();
            cache
                .insert(name.clone(), "v2".to_owned(), None)
                .await
                .unwrap();
        }
    } else {
        // Watch memory on a thread of its own, at a finer grain than the runtime's timer.
        let watched = cache.clone();
        let watching = names.clone();
        let gone = tokio::task::spawn_blocking(move || {
            let memory = watched.memory().unwrap();
            let mut gone: HashMap<String, u64> = HashMap::new();
            let deadline = Instant::now()
                + Duration::from_secs(10)
                + Duration::from_millis(10) * watching.len() as u32;
            while gone.len() < watching.len() && Instant::now() < deadline {
                for name in &watching {
                    if !gone.contains_key(name) && !memory.contains_key(name) {
                        gone.insert(name.clone(), now_us());
                    }
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            gone
        })
        .await
        .unwrap();
        barrier(&mut redis, "watched", processes - 1).await;
        let written: HashMap<String, u64> = redis.hgetall("p:written").await.unwrap();
        for name in &names {
            match (gone.get(name), written.get(name)) {
                (Some(gone), Some(written)) => {
                    let _: u64 = redis
                        .rpush("p:latencies", gone.saturating_sub(*written))
                        .await
                        .unwrap();
                }
                _ => {
                    let _: u64 = redis.incr("p:missed", 1).await.unwrap();
                }
            }
        }
    }
    barrier(&mut redis, "done", processes).await;
}

/// Starts `processes` children with `command` (each gets [`CHILD_ENV`]), waits for them, and
/// reads what they left in the Redis at `url`.
pub(crate) async fn run(
    url: &str,
    processes: u64,
    callers: usize,
    keys: usize,
    command: impl Fn() -> std::process::Command,
) -> Report {
    let children: Vec<_> = (0..processes)
        .map(|index| {
            let mut child = command();
            child.env(
                CHILD_ENV,
                format!("{url} {index} {processes} {callers} {keys}"),
            );
            child.spawn().unwrap()
        })
        .collect();
    let outcomes = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|mut child| child.wait().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    assert!(
        outcomes.iter().all(std::process::ExitStatus::success),
        "a child failed: {outcomes:?}"
    );
    let mut redis = admin(url).await;
    let loads: Option<u64> = redis.get("p:loads").await.unwrap();
    let served: Option<u64> = redis.get("p:served").await.unwrap();
    let missed: Option<u64> = redis.get("p:missed").await.unwrap();
    let latencies_us: Vec<u64> = redis.lrange("p:latencies", 0, -1).await.unwrap();
    Report {
        loads: loads.unwrap_or(0),
        served: served.unwrap_or(0),
        latencies_us,
        missed: missed.unwrap_or(0),
    }
}
