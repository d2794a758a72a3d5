//! The brisk variant's second cache level: Redis when the run has one (`--services`,
//! `--redis-url`), else none. One type for both, so the variant's caches have one type.

use std::time::Duration;

use brisk_cache::{Cache, Remote, Result, Stamped, WithTtl, redis::RedisCache};
use redis::aio::ConnectionManager;
use serde::{Serialize, de::DeserializeOwned};

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
            Level::Redis(redis) => redis.get(key).await,
        }
    }

    async fn insert(&self, key: K, value: Stamped<V>, ttl: Option<Duration>) -> Result<()> {
        match self {
            Level::None => Ok(()),
            Level::Redis(redis) => redis.insert(key, value, ttl).await,
        }
    }

    async fn remove(&self, key: &K) -> Result<()> {
        match self {
            Level::None => Ok(()),
            Level::Redis(redis) => Cache::remove(redis, key).await,
        }
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<Option<Stamped<V>>>> {
        match self {
            Level::None => Ok(keys.iter().map(|_| None).collect()),
            Level::Redis(redis) => Cache::get_many(redis, keys).await,
        }
    }

    async fn insert_many(
        &self,
        entries: Vec<(K, Stamped<V>)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        match self {
            Level::None => Ok(()),
            Level::Redis(redis) => Cache::insert_many(redis, entries, ttl).await,
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
            Level::Redis(redis) => Remote::get_with_ttl(redis, key).await,
        }
    }

    async fn get_many_with_ttl(&self, keys: &[K]) -> Result<Vec<Option<WithTtl<Stamped<V>>>>> {
        match self {
            Level::None => Ok(keys.iter().map(|_| None).collect()),
            Level::Redis(redis) => Remote::get_many_with_ttl(redis, keys).await,
        }
    }
}
