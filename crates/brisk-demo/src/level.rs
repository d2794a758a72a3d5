//! The brisk variant's second cache level: Redis when the run has one (`--services`,
//! `--redis-url`), else none. One type for both, so the variant's caches have one type.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use brisk_cache::{Cache, Remote, Result, Stamped, WithTtl, redis::RedisCache};
use redis::aio::ConnectionManager;
use serde::{Serialize, de::DeserializeOwned};

/// Redis operations that failed, in this process.
pub(crate) static L2_ERRORS: AtomicU64 = AtomicU64::new(0);
/// When (ms since the Unix epoch) the last Redis operation failed.
static L2_FAILED_AT: AtomicU64 = AtomicU64::new(0);
/// When (ms since the Unix epoch) the first Redis operation after the last failure
/// succeeded: the chaos run's "L2 back in use", against the time Redis accepted connections
/// again.
pub(crate) static L2_RECOVERED_AT: AtomicU64 = AtomicU64::new(0);

/// Milliseconds since the Unix epoch.
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

/// Takes note of a Redis operation's outcome and passes it on.
fn noted<T>(result: Result<T>) -> Result<T> {
    let now = epoch_ms();
    match &result {
        Ok(_) => {
            if L2_RECOVERED_AT.load(Ordering::Relaxed) < L2_FAILED_AT.load(Ordering::Relaxed) {
                L2_RECOVERED_AT.store(now, Ordering::Relaxed);
            }
        }
        Err(_) => {
            L2_ERRORS.fetch_add(1, Ordering::Relaxed);
            L2_FAILED_AT.store(now, Ordering::Relaxed);
        }
    }
    result
}

/// Redis, or no second level.
pub(crate) enum Level<K, V> {
    None,
    Redis(RedisCache<K, Stamped<V>, ConnectionManager>),
}

impl<K, V> Level<K, V>
where
    K: std::fmt::Display + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
{
    /// A level under `prefix` in `redis`, if there is one.
    pub(crate) async fn new(redis: Option<&ConnectionManager>, prefix: &str) -> Result<Self> {
        Ok(match redis {
            None => Level::None,
            Some(connection) => Level::Redis(
                RedisCache::builder(connection.clone())
                    .prefix(prefix)
                    .ttl(Duration::from_secs(3600))
                    .build()
                    .await?,
            ),
        })
    }
}

impl<K, V> Cache<K, Stamped<V>> for Level<K, V>
where
    K: std::fmt::Display + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
{
    async fn get(&self, key: &K) -> Result<Option<Stamped<V>>> {
        match self {
            Level::None => Ok(None),
            Level::Redis(redis) => noted(redis.get(key).await),
        }
    }

    async fn insert(&self, key: K, value: Stamped<V>, ttl: Option<Duration>) -> Result<()> {
        match self {
            Level::None => Ok(()),
            Level::Redis(redis) => noted(redis.insert(key, value, ttl).await),
        }
    }

    async fn remove(&self, key: &K) -> Result<()> {
        match self {
            Level::None => Ok(()),
            Level::Redis(redis) => noted(Cache::remove(redis, key).await),
        }
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<Option<Stamped<V>>>> {
        match self {
            Level::None => Ok(keys.iter().map(|_| None).collect()),
            Level::Redis(redis) => noted(Cache::get_many(redis, keys).await),
        }
    }

    async fn insert_many(
        &self,
        entries: Vec<(K, Stamped<V>)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        match self {
            Level::None => Ok(()),
            Level::Redis(redis) => noted(Cache::insert_many(redis, entries, ttl).await),
        }
    }
}

impl<K, V> Remote<K, Stamped<V>> for Level<K, V>
where
    K: std::fmt::Display + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
{
    async fn get_with_ttl(&self, key: &K) -> Result<Option<WithTtl<Stamped<V>>>> {
        match self {
            Level::None => Ok(None),
            Level::Redis(redis) => noted(Remote::get_with_ttl(redis, key).await),
        }
    }

    async fn get_many_with_ttl(&self, keys: &[K]) -> Result<Vec<Option<WithTtl<Stamped<V>>>>> {
        match self {
            Level::None => Ok(keys.iter().map(|_| None).collect()),
            Level::Redis(redis) => noted(Remote::get_many_with_ttl(redis, keys).await),
        }
    }
}
