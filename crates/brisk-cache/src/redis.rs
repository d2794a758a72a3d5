//! The Redis level (feature `redis`): [`RedisCache`], a [`Cache`] whose entries live in Redis,
//! shared by every instance of a service.
//!
//! Values are serialized with postcard (compact, fast serde; see docs/architecture.md), then
//! framed by brisk-compress's [`ValueCodec`], which compresses those above a threshold (1 KiB
//! by default) and stores small ones raw behind a 3-byte header. Keys are
//! `<prefix>:<namespace>:<key>`: bumping the namespace ([`RedisCache::invalidate_all`]) makes
//! every earlier entry unreachable in one command, and Redis expires them by their TTL.
//!
//! ```no_run
//! use std::time::Duration;
//! use brisk_cache::{Cache, redis::RedisCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = redis::Client::open("redis://127.0.0.1:6379")?;
//! let connection = redis::aio::ConnectionManager::new(client).await?;
//! let cache: RedisCache<u64, String> = RedisCache::builder(connection)
//!     .prefix("users")
//!     .ttl(Duration::from_secs(3600))
//!     .build()
//!     .await?;
//! cache.insert(42, "Ada".to_owned(), None).await?;
//! assert_eq!(cache.get(&42).await?.as_deref(), Some("Ada"));
//! # Ok(())
//! # }
//! ```

use std::{
    collections::BTreeMap,
    fmt::{self, Display},
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ::redis::aio::ConnectionLike;
use brisk_compress::ValueCodec;
use brisk_metrics::{Counter, Gauge, Recorder};
use serde::{Serialize, de::DeserializeOwned};

pub use crate::backplane::{Backplane, BackplaneBuilder};
use crate::metrics::Series;
use crate::{
    Cache, Error, Result, WithTtl, WriteFence,
    breaker::{Breaker, BreakerMetrics},
    jitter,
};

/// A cache level in Redis. Cheap to clone: clones share the connection and settings.
///
/// `C` is the connection: redis-rs's `ConnectionManager` (reconnects by itself, the default)
/// or a `MultiplexedConnection`. Every call is one round trip: `get_many` is one `MGET`,
/// `insert_many` one pipeline of `SET … PX`.
pub struct RedisCache<K, V, C = redis::aio::ConnectionManager> {
    inner: Arc<Inner<C>>,
    _types: PhantomData<fn(K) -> V>,
}

struct Inner<C> {
    connection: C,
    prefix: String,
    /// The namespace version keys are written and read under.
    namespace: AtomicU64,
    ttl: Option<Duration>,
    ttl_jitter: f64,
    timeout: Duration,
    max_value_size: usize,
    codec: ValueCodec,
    metrics: Metrics,
    breaker: Option<Breaker>,
    /// A Redis Cluster connection: pipelines are split by hash slot.
    cluster: bool,
    /// How long a write's fence lives (see [`RedisCacheBuilder::write_fence`]).
    fence_for: Duration,
}

impl<K, V, C> Clone for RedisCache<K, V, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            _types: PhantomData,
        }
    }
}

impl<K, V, C> fmt::Debug for RedisCache<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.inner.prefix)
            .field("namespace", &self.inner.namespace.load(Ordering::Relaxed))
            .field("ttl", &self.inner.ttl)
            .field("timeout", &self.inner.timeout)
            .field("max_value_size", &self.inner.max_value_size)
            .finish_non_exhaustive()
    }
}

/// What a [`RedisCache`] reports, each series labelled `name="<name>"`.
#[derive(Debug, Clone)]
struct Metrics {
    /// `brisk_cache_redis_hits_total`
    hits: Counter,
    /// `brisk_cache_redis_misses_total`
    misses: Counter,
    /// `brisk_cache_redis_errors_total`: calls that failed or timed out.
    errors: Counter,
    /// `brisk_cache_redis_rejected_total`: calls the open circuit breaker refused.
    rejected: Counter,
    /// `brisk_cache_redis_circuit_state`: 0 closed, 1 open, 2 half-open.
    circuit_state: Gauge,
    /// `brisk_cache_redis_circuit_opened_total`
    circuit_opened: Counter,
}

impl Metrics {
    fn noop() -> Self {
        Self {
            hits: Counter::noop(),
            misses: Counter::noop(),
            errors: Counter::noop(),
            rejected: Counter::noop(),
            circuit_state: Gauge::noop(),
            circuit_opened: Counter::noop(),
        }
    }

    fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        Self {
            hits: series.counter("brisk_cache_redis_hits_total"),
            misses: series.counter("brisk_cache_redis_misses_total"),
            errors: series.counter("brisk_cache_redis_errors_total"),
            rejected: series.counter("brisk_cache_redis_rejected_total"),
            circuit_state: series.gauge("brisk_cache_redis_circuit_state"),
            circuit_opened: series.counter("brisk_cache_redis_circuit_opened_total"),
        }
    }
}

/// How long the breaker refuses calls before a probe, by default.
pub(crate) const BREAKER_OPEN_FOR: Duration = Duration::from_millis(250);

impl<K, V, C> RedisCache<K, V, C>
where
    K: Display + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Starts configuring a cache over `connection`.
    pub fn builder(connection: C) -> RedisCacheBuilder<K, V, C> {
        RedisCacheBuilder {
            connection,
            prefix: "brisk".to_owned(),
            ttl: None,
            ttl_jitter: 0.0,
            timeout: Duration::from_millis(500),
            max_value_size: 4 << 20,
            codec: None,
            metrics: Metrics::noop(),
            circuit_breaker: Some((5, BREAKER_OPEN_FOR)),
            cluster: false,
            fence_for: DEFAULT_FENCE,
            _types: PhantomData,
        }
    }

    /// The live value for `key` and its remaining time to live (`None`: no expiry), in one
    /// round trip (`GET` and `PTTL` pipelined): what a faster level needs to keep a copy no
    /// longer than this one does.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Timeout`], or [`Error::Decode`] for a value that does not
    /// decode as `V`.
    pub async fn get_with_ttl(&self, key: &K) -> Result<Option<WithTtl<V>>> {
        let stored = self.stored(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&stored).cmd("PTTL").arg(&stored);
        let (value, ttl): (Option<Vec<u8>>, i64) = self
            .inner
            .call(
                "GET",
                || key.to_string(),
                pipe.query_async(&mut self.connection()),
            )
            .await?;
        let Some(value) = self.found(key, value)? else {
            return Ok(None);
        };
        Ok(Some((value, remaining(ttl))))
    }

    /// The live values for `keys` with their remaining times to live, in their order, in one
    /// round trip (`MGET` and a `PTTL` per key, pipelined).
    ///
    /// # Errors
    /// As [`get_with_ttl`](Self::get_with_ttl).
    pub async fn get_many_with_ttl(&self, keys: &[K]) -> Result<Vec<Option<WithTtl<V>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = keys.iter().map(|key| self.stored(key)).collect();
        if self.inner.cluster {
            return self.get_many_by_slot(keys, &stored).await;
        }
        let mut pipe = redis::pipe();
        pipe.cmd("MGET").arg(&stored);
        for key in &stored {
            pipe.cmd("PTTL").arg(key);
        }
        let (values, ttls): (Vec<Option<Vec<u8>>>, Vec<i64>) = {
            let mut replies: Vec<redis::Value> = self
                .inner
                .call(
                    "MGET",
                    || format!("{} keys", keys.len()),
                    pipe.query_async(&mut self.connection()),
                )
                .await?;
            let malformed = |message: String| Error::Decode {
                key: format!("{} keys", keys.len()),
                message,
            };
            if replies.len() != keys.len() + 1 {
                return Err(malformed(format!("{} replies", replies.len())));
            }
            let ttls = replies
                .split_off(1)
                .into_iter()
                .map(redis::from_redis_value::<i64>)
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|error| malformed(error.to_string()))?;
            let values = replies
                .pop()
                .map(redis::from_redis_value::<Vec<Option<Vec<u8>>>>)
                .transpose()
                .map_err(|error| malformed(error.to_string()))?
                .unwrap_or_default();
            if values.len() != keys.len() {
                return Err(malformed(format!("MGET answered {} values", values.len())));
            }
            (values, ttls)
        };
        keys.iter()
            .zip(values.into_iter().zip(ttls))
            .map(|(key, (value, ttl))| {
                Ok(self.found(key, value)?.map(|value| (value, remaining(ttl))))
            })
            .collect()
    }

    /// `get_many_with_ttl` on a cluster: a `GET` and a `PTTL` per key, one pipeline per hash
    /// slot, the pipelines concurrently.
    async fn get_many_by_slot(
        &self,
        keys: &[K],
        stored: &[String],
    ) -> Result<Vec<Option<WithTtl<V>>>> {
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (at, key) in stored.iter().enumerate() {
            groups.entry(slot(key.as_bytes())).or_default().push(at);
        }
        let calls = groups
            .values()
            .map(|members| {
                let mut pipe = redis::pipe();
                for &at in members {
                    pipe.cmd("GET")
                        .arg(&stored[at])
                        .cmd("PTTL")
                        .arg(&stored[at]);
                }
                let mut connection = self.connection();
                Box::pin(async move {
                    self.inner
                        .call(
                            "pipeline",
                            || format!("{} keys", members.len()),
                            async move {
                                pipe.query_async::<Vec<(Option<Vec<u8>>, i64)>>(&mut connection)
                                    .await
                            },
                        )
                        .await
                }) as Reply<'_, Vec<(Option<Vec<u8>>, i64)>>
            })
            .collect();
        let replies = join_all(calls).await;
        let mut found: Vec<Option<WithTtl<V>>> = (0..keys.len()).map(|_| None).collect();
        for (members, replies) in groups.values().zip(replies) {
            let replies = replies?;
            if replies.len() != members.len() {
                return Err(Error::Decode {
                    key: format!("{} keys", keys.len()),
                    message: format!("{} replies for {} keys", replies.len(), members.len()),
                });
            }
            for (&at, (value, ttl)) in members.iter().zip(replies) {
                found[at] = self
                    .found(&keys[at], value)?
                    .map(|value| (value, remaining(ttl)));
            }
        }
        Ok(found)
    }

    /// Sends `writes`: one pipeline, or on a cluster one per hash slot, concurrently.
    async fn run(&self, writes: Writes, key: impl Fn() -> String + Sync) -> Result<()> {
        let key = &key;
        let calls = writes
            .into_pipes()
            .map(|pipe| {
                let mut connection = self.connection();
                Box::pin(async move {
                    self.inner
                        .call("pipeline", key, async move {
                            pipe.query_async::<()>(&mut connection).await
                        })
                        .await
                }) as Reply<'_, ()>
            })
            .collect();
        join_all(calls).await.into_iter().collect()
    }

    /// Makes every entry written so far unreachable, in one `INCR` of the namespace version:
    /// later reads and writes use the new namespace, and Redis expires the old entries by
    /// their TTL (entries written without a TTL stay until Redis evicts them). Other
    /// instances see the new namespace after their
    /// [`refresh_namespace`](Self::refresh_namespace).
    ///
    /// # Errors
    /// [`Error::Redis`] or [`Error::Timeout`].
    pub async fn invalidate_all(&self) -> Result<()> {
        let version: u64 = self
            .inner
            .call(
                "INCR",
                || self.namespace_key(),
                redis::cmd("INCR")
                    .arg(self.namespace_key())
                    .query_async(&mut self.connection()),
            )
            .await?;
        self.inner.namespace.fetch_max(version, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the namespace version again, so that an [`invalidate_all`](Self::invalidate_all)
    /// made by another instance takes effect here.
    ///
    /// # Errors
    /// [`Error::Redis`] or [`Error::Timeout`].
    pub async fn refresh_namespace(&self) -> Result<()> {
        let version = read_namespace(&self.inner, &self.namespace_key()).await?;
        self.inner.namespace.fetch_max(version, Ordering::Relaxed);
        Ok(())
    }

    /// The namespace version in use.
    pub fn namespace(&self) -> u64 {
        self.inner.namespace.load(Ordering::Relaxed)
    }

    fn namespace_key(&self) -> String {
        format!("{}:namespace", self.inner.prefix)
    }

    /// The Redis key for `key`.
    fn stored(&self, key: &K) -> String {
        format!("{}:{}:{key}", self.inner.prefix, self.namespace())
    }

    /// The Redis key of `key`'s write fence: beside the entries, never one of them (`#`, not
    /// `:`), and in the entry's hash slot whenever the key carries a hash tag.
    fn fence_key(&self, key: &K) -> String {
        format!("{}:{}#fence:{key}", self.inner.prefix, self.namespace())
    }

    /// The fence over every key of the namespace, set by prefix invalidations (not on a
    /// cluster, where those are refused).
    fn fence_all_key(&self) -> String {
        format!("{}:{}#fence", self.inner.prefix, self.namespace())
    }

    fn connection(&self) -> C {
        self.inner.connection.clone()
    }

    /// A stored value decoded, counting the hit or miss.
    fn found(&self, key: &K, stored: Option<Vec<u8>>) -> Result<Option<V>> {
        let Some(stored) = stored else {
            self.inner.metrics.misses.increment();
            return Ok(None);
        };
        self.inner.metrics.hits.increment();
        decode(&self.inner.codec, &stored)
            .map(Some)
            .map_err(|message| Error::Decode {
                key: key.to_string(),
                message,
            })
    }

    /// `value` serialized and framed, within the size limit.
    fn encode(&self, key: &K, value: &V) -> Result<Vec<u8>> {
        let encoded = encode(&self.inner.codec, value).map_err(|message| Error::Encode {
            key: key.to_string(),
            message,
        })?;
        if encoded.len() > self.inner.max_value_size {
            return Err(Error::ValueTooLarge {
                key: key.to_string(),
                size: encoded.len(),
                limit: self.inner.max_value_size,
            });
        }
        Ok(encoded)
    }

    /// Sets `key`'s write fence to a new token, before the write itself (same pipeline), so
    /// that loads that read the source before this write do not store after it.
    fn fence(&self, writes: &mut Writes, key: &K) {
        self.set_fence(writes, self.fence_key(key));
    }

    /// Sets the fence over every key (a prefix invalidation, whose keys are not known).
    fn fence_all(&self, writes: &mut Writes) {
        self.set_fence(writes, self.fence_all_key());
    }

    fn set_fence(&self, writes: &mut Writes, fence: String) {
        let ms = u64::try_from(self.inner.fence_for.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        writes
            .pipe(&fence)
            .cmd("SET")
            .arg(&fence)
            .arg(jitter::random())
            .arg("PX")
            .arg(ms)
            .ignore();
    }

    /// `SET key value [PX ms]`, or `DEL` for a zero TTL (the entry would be gone at once, and
    /// the value it replaces is stale).
    fn set(&self, pipe: &mut redis::Pipeline, key: &K, value: Vec<u8>, ttl: Option<Duration>) {
        let stored = self.stored(key);
        match ttl.or(self.inner.ttl) {
            Some(ttl) if ttl.is_zero() => {
                pipe.cmd("DEL").arg(stored).ignore();
            }
            // Redis keeps milliseconds: a sub-millisecond TTL rounds up to one.
            Some(ttl) => {
                let ttl = jitter::apply(ttl, self.inner.ttl_jitter);
                let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                pipe.cmd("SET")
                    .arg(stored)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .ignore();
            }
            None => {
                pipe.cmd("SET").arg(stored).arg(value).ignore();
            }
        }
    }
}

/// Commands to send together: one pipeline on a single server; on a Redis Cluster, one per
/// hash slot (a pipeline may not cross slots there).
struct Writes {
    cluster: bool,
    pipes: BTreeMap<u16, redis::Pipeline>,
}

impl Writes {
    fn new(cluster: bool) -> Self {
        Self {
            cluster,
            pipes: BTreeMap::new(),
        }
    }

    /// The pipeline for commands on the Redis key `key`.
    fn pipe(&mut self, key: &str) -> &mut redis::Pipeline {
        let slot = if self.cluster {
            slot(key.as_bytes())
        } else {
            0
        };
        self.pipes.entry(slot).or_insert_with(redis::pipe)
    }

    fn into_pipes(self) -> impl Iterator<Item = redis::Pipeline> {
        self.pipes.into_values()
    }
}

/// One pipeline's reply, as a future among several sent at once.
type Reply<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of the key, or of its hash tag (the
/// part between the first `{` and the next `}`, if not empty), modulo 16 384.
fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&byte| byte == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16_384
}

/// Runs `futures` concurrently; their outputs in order.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Adds a member to one tag's set and keeps the set at least as long as the entry: a set
/// with no expiry stays so (a member lives forever), a new set takes the entry's TTL, and a
/// shorter-lived set is extended. One key per call, so it runs on a Redis Cluster too.
const TAG_SCRIPT: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  redis.call('PERSIST', KEYS[1])
elseif existed == 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return 1
";

/// How long a write's fence lives by default (see [`RedisCacheBuilder::write_fence`]).
const DEFAULT_FENCE: Duration = Duration::from_secs(60);

/// How many members or keys one `SSCAN`/`SCAN` page asks for: the most held in memory at once.
const PAGE: usize = 500;

/// `prefix` with Redis glob characters escaped, to match literally in `SCAN … MATCH`.
fn glob_literal(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for character in prefix.chars() {
        if matches!(character, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Tags and prefixes: invalidating groups of entries.
impl<K, V, C> RedisCache<K, V, C>
where
    K: Display + Serialize + DeserializeOwned + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Stores `value` and adds `key` to the set of each tag (a Redis set per tag, under the
    /// namespace, kept at least as long as its longest-lived entry), all in one round trip,
    /// so that [`invalidate_tag`](Self::invalidate_tag) can remove every entry of a tag.
    ///
    /// # Errors
    /// As [`Cache::insert`].
    pub async fn insert_with_tags(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let encoded = self.encode(&key, &value)?;
        let member = postcard::to_allocvec(&key).map_err(|error| Error::Encode {
            key: key.to_string(),
            message: error.to_string(),
        })?;
        let mut writes = Writes::new(self.inner.cluster);
        self.fence(&mut writes, &key);
        self.set(writes.pipe(&self.stored(&key)), &key, encoded, ttl);
        let keep = ttl.or(self.inner.ttl).map_or(0, |ttl| {
            u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        for tag in tags {
            let tag_key = self.tag_key(tag);
            writes
                .pipe(&tag_key)
                .cmd("EVAL")
                .arg(TAG_SCRIPT)
                .arg(1)
                .arg(&tag_key)
                .arg(&member)
                .arg(keep)
                .ignore();
        }
        self.run(writes, || key.to_string()).await
    }

    /// One page of the keys tagged `tag` (`SSCAN` from `cursor`, 0 to start): the next
    /// cursor (0 when done) and up to a few hundred keys. A key may come twice, and keys of
    /// entries since expired are still listed.
    ///
    /// # Errors
    /// [`Error::Redis`] or [`Error::Timeout`]; [`Error::Decode`] for a member this cache did
    /// not write.
    pub async fn tagged(&self, tag: &str, cursor: u64) -> Result<(u64, Vec<K>)> {
        let (next, members): (u64, Vec<Vec<u8>>) = self
            .inner
            .call(
                "SSCAN",
                || format!("tag {tag}"),
                redis::cmd("SSCAN")
                    .arg(self.tag_key(tag))
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut self.connection()),
            )
            .await?;
        let keys = members
            .iter()
            .map(|member| {
                postcard::from_bytes(member).map_err(|error| Error::Decode {
                    key: format!("tag {tag}"),
                    message: error.to_string(),
                })
            })
            .collect::<Result<Vec<K>>>()?;
        Ok((next, keys))
    }

    /// Removes every entry tagged `tag`, and the tag, a page at a time (memory stays bounded
    /// however many entries a tag has): how many keys were listed.
    ///
    /// # Errors
    /// As [`tagged`](Self::tagged).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        let mut cursor = 0;
        let mut listed = 0;
        loop {
            let (next, keys) = self.tagged(tag, cursor).await?;
            listed += keys.len() as u64;
            self.remove_many(&keys).await?;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        self.forget_tag(tag).await?;
        Ok(listed)
    }

    /// Deletes a tag's set (not its entries).
    pub(crate) async fn forget_tag(&self, tag: &str) -> Result<()> {
        self.inner
            .call(
                "UNLINK",
                || format!("tag {tag}"),
                redis::cmd("UNLINK")
                    .arg(self.tag_key(tag))
                    .query_async::<()>(&mut self.connection()),
            )
            .await
    }

    /// Removes `keys` in one round trip (`UNLINK`: Redis frees them in the background).
    ///
    /// # Errors
    /// [`Error::Redis`] or [`Error::Timeout`].
    pub async fn remove_many(&self, keys: &[K]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut writes = Writes::new(self.inner.cluster);
        for key in keys {
            self.fence(&mut writes, key);
            let stored = self.stored(key);
            writes.pipe(&stored).cmd("UNLINK").arg(stored).ignore();
        }
        self.run(writes, || format!("{} keys", keys.len())).await
    }

    /// Removes every entry whose key (as text) starts with `prefix`, a page at a time
    /// (`SCAN … MATCH`, never `KEYS`): how many were removed. The scan walks the whole
    /// keyspace of the server, so it costs time in proportion to it; tags are the cheap way
    /// for groups known when values are written.
    ///
    /// # Errors
    /// [`Error::Redis`] or [`Error::Timeout`].
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        if self.inner.cluster {
            return Err(Error::Config {
                setting: "cluster",
                value: "true".into(),
                reason: "prefix invalidation scans one server: on a cluster, use tags",
            });
        }
        // The keys are not known before the scan: a fence over every key keeps loads that
        // began before this call from storing after it (see `write_fence`).
        let mut writes = Writes::new(false);
        self.fence_all(&mut writes);
        self.run(writes, || format!("prefix {prefix}")).await?;
        let pattern = format!(
            "{}*",
            glob_literal(&format!(
                "{}:{}:{prefix}",
                self.inner.prefix,
                self.namespace()
            ))
        );
        let mut cursor = 0u64;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .inner
                .call(
                    "SCAN",
                    || format!("prefix {prefix}"),
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(PAGE)
                        .query_async(&mut self.connection()),
                )
                .await?;
            if !keys.is_empty() {
                removed += self
                    .inner
                    .call(
                        "UNLINK",
                        || format!("prefix {prefix}"),
                        redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async::<u64>(&mut self.connection()),
                    )
                    .await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// The Redis set of `tag`'s keys: beside the entries, never one of them (`#`, not `:`).
    fn tag_key(&self, tag: &str) -> String {
        format!("{}:{}#tag:{tag}", self.inner.prefix, self.namespace())
    }
}

/// A `PTTL` reply as a remaining time to live: -1 no expiry; -2 gone since the read (it
/// expired in between: live for the rest of this call, with no time left).
fn remaining(pttl: i64) -> Option<Duration> {
    match pttl {
        -1 => None,
        ms if ms < 0 => Some(Duration::ZERO),
        ms => Some(Duration::from_millis(ms.unsigned_abs())),
    }
}

/// postcard, then the framed codec.
fn encode<V: Serialize>(codec: &ValueCodec, value: &V) -> std::result::Result<Vec<u8>, String> {
    let bytes = postcard::to_allocvec(value).map_err(|error| error.to_string())?;
    codec.encode(&bytes).map_err(|error| error.to_string())
}

/// The framed codec, then postcard; anything a peer or an attacker could have stored is an
/// error, never a panic.
fn decode<V: DeserializeOwned>(
    codec: &ValueCodec,
    stored: &[u8],
) -> std::result::Result<V, String> {
    let bytes = codec.decode(stored).map_err(|error| error.to_string())?;
    postcard::from_bytes(&bytes).map_err(|error| error.to_string())
}

async fn read_namespace<C: ConnectionLike + Clone>(inner: &Inner<C>, key: &str) -> Result<u64> {
    let command = redis::cmd("GET").arg(key).clone();
    let mut connection = inner.connection.clone();
    let version: Option<u64> = inner
        .call(
            "GET",
            || key.to_owned(),
            command.query_async(&mut connection),
        )
        .await?;
    Ok(version.unwrap_or(0))
}

impl<C> Inner<C> {
    /// Runs one call under the timeout and the circuit breaker, naming the command and key in
    /// its error.
    async fn call<T>(
        &self,
        op: &'static str,
        key: impl FnOnce() -> String,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        let permit = match self.breaker.as_ref().map(Breaker::admit) {
            Some(None) => {
                self.metrics.rejected.increment();
                return Err(Error::CircuitOpen { op, key: key() });
            }
            Some(Some(permit)) => Some(permit),
            None => None,
        };
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => {
                if let Some(permit) = permit {
                    permit.succeeded();
                }
                return Ok(value);
            }
            Ok(Err(source)) => Error::Redis {
                op,
                key: key(),
                source,
            },
            Err(_) => Error::Timeout {
                op,
                key: key(),
                after: self.timeout,
            },
        };
        if let Some(permit) = permit {
            permit.failed();
        }
        self.metrics.errors.increment();
        Err(outcome)
    }
}

impl<K, V, C> crate::Remote<K, V> for RedisCache<K, V, C>
where
    K: Display + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn get_with_ttl(&self, key: &K) -> Result<Option<WithTtl<V>>> {
        RedisCache::get_with_ttl(self, key).await
    }

    async fn get_many_with_ttl(&self, keys: &[K]) -> Result<Vec<Option<WithTtl<V>>>> {
        RedisCache::get_many_with_ttl(self, keys).await
    }

    async fn write_fence(&self, key: &K) -> Result<WriteFence> {
        let read_at = std::time::Instant::now();
        let namespace = self.namespace();
        let (stored, fence_key) = (self.stored(key), self.fence_key(key));
        if self.inner.cluster {
            if slot(stored.as_bytes()) != slot(fence_key.as_bytes()) {
                // The store's script cannot read both keys on a cluster without a hash tag
                // in the key: no fence (see `RedisCacheBuilder::write_fence`).
                return Ok(WriteFence::default());
            }
            let token: Option<Vec<u8>> = self
                .inner
                .call(
                    "GET",
                    || key.to_string(),
                    redis::cmd("GET")
                        .arg(&fence_key)
                        .query_async(&mut self.connection()),
                )
                .await?;
            return Ok(WriteFence {
                token: Some(fence_token(token, None)),
                read_at: Some(read_at),
                namespace,
            });
        }
        let (token, all): (Option<Vec<u8>>, Option<Vec<u8>>) = self
            .inner
            .call(
                "MGET",
                || key.to_string(),
                redis::cmd("MGET")
                    .arg(&fence_key)
                    .arg(self.fence_all_key())
                    .query_async(&mut self.connection()),
            )
            .await?;
        Ok(WriteFence {
            token: Some(fence_token(token, all)),
            read_at: Some(read_at),
            namespace,
        })
    }

    async fn insert_fenced(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        fence: &WriteFence,
    ) -> Result<bool> {
        let (Some(read_at), Some(token)) = (fence.read_at, fence.token.as_deref()) else {
            // No fence read from this level: nothing to check against.
            self.insert(key, value, ttl).await?;
            return Ok(true);
        };
        // A write's fence outlives it by `fence_for`: a fence read longer ago (with a margin
        // for the two clocks and for this call's own time to reach Redis) may have expired in
        // between, and vouches for nothing. Nor does one from before `invalidate_all`.
        if read_at.elapsed() + FENCE_MARGIN + self.inner.timeout >= self.inner.fence_for
            || fence.namespace != self.namespace()
        {
            return Ok(false);
        }
        let encoded = self.encode(&key, &value)?;
        let (stored, fence_key) = (self.stored(&key), self.fence_key(&key));
        let ms = match ttl.or(self.inner.ttl) {
            // Gone at once: nothing to store.
            Some(ttl) if ttl.is_zero() => return Ok(false),
            Some(ttl) => u64::try_from(jitter::apply(ttl, self.inner.ttl_jitter).as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            None => 0,
        };
        let mut script = redis::cmd("EVAL");
        script.arg(FENCED_SET_SCRIPT);
        if self.inner.cluster {
            script.arg(2).arg(&stored).arg(&fence_key);
        } else {
            script
                .arg(3)
                .arg(&stored)
                .arg(&fence_key)
                .arg(self.fence_all_key());
        }
        script.arg(token).arg(encoded).arg(ms);
        let stored_it: i64 = self
            .inner
            .call(
                "EVAL",
                || key.to_string(),
                script.query_async(&mut self.connection()),
            )
            .await?;
        Ok(stored_it == 1)
    }
}

/// The fences a load read, as one token the store's script rebuilds: the key's, then the
/// one over every key (absent on a cluster), each empty when not set.
fn fence_token(key: Option<Vec<u8>>, all: Option<Vec<u8>>) -> Vec<u8> {
    let mut token = key.unwrap_or_default();
    token.push(b'|');
    token.extend(all.unwrap_or_default());
    token
}

/// Sets `KEYS[1]` to `ARGV[2]` (for `ARGV[3]` ms, or without expiry for 0) only if the write
/// fences `KEYS[2]` (the key's) and `KEYS[3]` (every key's, if given) still hold what
/// `ARGV[1]` says (see `fence_token`): 1 if it stored, 0 if a write came in between.
const FENCED_SET_SCRIPT: &str = r"
local all = ''
if #KEYS > 2 then
  all = redis.call('GET', KEYS[3]) or ''
end
local fence = (redis.call('GET', KEYS[2]) or '') .. '|' .. all
if fence ~= ARGV[1] then
  return 0
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
return 1
";

/// Room left for the difference between this process's clock and Redis' when a fence's age
/// is judged.
const FENCE_MARGIN: Duration = Duration::from_secs(1);

impl<K, V, C> Cache<K, V> for RedisCache<K, V, C>
where
    K: Display + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn get(&self, key: &K) -> Result<Option<V>> {
        let stored: Option<Vec<u8>> = self
            .inner
            .call(
                "GET",
                || key.to_string(),
                redis::cmd("GET")
                    .arg(self.stored(key))
                    .query_async(&mut self.connection()),
            )
            .await?;
        self.found(key, stored)
    }

    async fn insert(&self, key: K, value: V, ttl: Option<Duration>) -> Result<()> {
        let encoded = self.encode(&key, &value)?;
        let mut writes = Writes::new(self.inner.cluster);
        self.fence(&mut writes, &key);
        self.set(writes.pipe(&self.stored(&key)), &key, encoded, ttl);
        self.run(writes, || key.to_string()).await
    }

    async fn remove(&self, key: &K) -> Result<()> {
        let mut writes = Writes::new(self.inner.cluster);
        self.fence(&mut writes, key);
        let stored = self.stored(key);
        writes.pipe(&stored).cmd("DEL").arg(stored).ignore();
        self.run(writes, || key.to_string()).await
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<String> = keys.iter().map(|key| self.stored(key)).collect();
        let values: Vec<Option<Vec<u8>>> = self
            .inner
            .call(
                "MGET",
                || format!("{} keys", keys.len()),
                redis::cmd("MGET")
                    .arg(&stored)
                    .query_async(&mut self.connection()),
            )
            .await?;
        if values.len() != keys.len() {
            return Err(Error::Decode {
                key: format!("{} keys", keys.len()),
                message: format!("MGET answered {} values", values.len()),
            });
        }
        keys.iter()
            .zip(values)
            .map(|(key, value)| self.found(key, value))
            .collect()
    }

    async fn insert_many(&self, entries: Vec<(K, V)>, ttl: Option<Duration>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // Every value is encoded and checked before anything is sent: a value over the limit
        // fails the call and writes none of them.
        let mut writes = Writes::new(self.inner.cluster);
        for (key, value) in &entries {
            let encoded = self.encode(key, value)?;
            self.fence(&mut writes, key);
            self.set(writes.pipe(&self.stored(key)), key, encoded, ttl);
        }
        self.run(writes, || format!("{} keys", entries.len())).await
    }
}

/// Configures a [`RedisCache`]; from [`RedisCache::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct RedisCacheBuilder<K, V, C> {
    connection: C,
    prefix: String,
    ttl: Option<Duration>,
    ttl_jitter: f64,
    timeout: Duration,
    max_value_size: usize,
    codec: Option<ValueCodec>,
    metrics: Metrics,
    /// Consecutive failures that open the breaker, and how long it stays open.
    circuit_breaker: Option<(u32, Duration)>,
    cluster: bool,
    fence_for: Duration,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V, C> fmt::Debug for RedisCacheBuilder<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCacheBuilder")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("ttl_jitter", &self.ttl_jitter)
            .field("timeout", &self.timeout)
            .field("max_value_size", &self.max_value_size)
            .finish_non_exhaustive()
    }
}

impl<K, V, C> RedisCacheBuilder<K, V, C>
where
    K: Display + Send + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// The start of every key this cache writes: one prefix per kind of value. Default:
    /// `brisk`. Must be non-empty and free of spaces.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Entries expire this long after they are written (milliseconds are kept); an insert's
    /// own TTL overrides it. Default: never (Redis' own eviction policy applies).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Shortens every time to live (the cache's and each insert's own) by a random part of up
    /// to `fraction` of it, so that entries written together do not expire together.
    /// Default: 0 (none).
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.ttl_jitter = fraction;
        self
    }

    /// How long one call may take before it fails with [`Error::Timeout`]. Default: 500 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest value stored, in bytes once serialized and compressed; a larger one is
    /// refused with [`Error::ValueTooLarge`]. Default: 4 MiB.
    pub fn max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// How values are framed and compressed. Default: `ValueCodec::default()` (zstd for values
    /// from 1 KiB, 64 MiB decode limit). Any instance reads values written with any codec.
    pub fn codec(mut self, codec: ValueCodec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// A circuit breaker: after `failures` calls in a row fail or time out, calls are refused
    /// at once with [`Error::CircuitOpen`] (a tiered cache goes on with memory and its loader
    /// instead of waiting out a timeout per request), and one call every `open_for` goes
    /// through as a probe; the first probe that succeeds closes the breaker, so Redis is in
    /// use again within `open_for` of answering. Default: 5 failures, a probe every 250 ms.
    ///
    /// A `ConnectionManager` adds its own reconnect backoff (by default up to 6 tries with
    /// random pauses of up to 3.2 s): give it a short `set_max_delay` (e.g. 100 ms) so that a
    /// probe finds the connection back soon after Redis is.
    pub fn circuit_breaker(mut self, failures: u32, open_for: Duration) -> Self {
        self.circuit_breaker = Some((failures, open_for));
        self
    }

    /// Whether the connection is a Redis Cluster one (redis-rs' `cluster_async`
    /// `ClusterConnection`): pipelined calls (`get_many_with_ttl`, `insert_many`,
    /// `insert_with_tags`, `remove_many`, and every write with its fence) are then split by
    /// hash slot, one pipeline per slot sent at once, since a pipeline may not cross slots
    /// there; `get_many` is a single command the cluster client splits itself.
    /// `invalidate_prefix` is refused (`SCAN` walks one node): use tags. Default: false.
    pub fn cluster(mut self, cluster: bool) -> Self {
        self.cluster = cluster;
        self
    }

    /// How long a write's fence lives. Every write (`insert`, `remove` and the rest) sets a
    /// small fence key beside its entry, in the same round trip; a load through a
    /// [`Tiered`](crate::Tiered) cache reads the fence before it reads its source and stores
    /// its value only if the fence is unchanged (one script call), so that a load that read
    /// the old row does not put it back after a write made by any instance. A load that runs
    /// longer than this (less a second for clock differences) does not store its value in
    /// Redis, since the fence it read may have expired in between. On a cluster, keys
    /// without a hash tag are stored unfenced (the script would cross slots). At least 2 s.
    /// Default: 60 s.
    pub fn write_fence(mut self, lives: Duration) -> Self {
        self.fence_for = lives;
        self
    }

    /// No circuit breaker: every call goes to Redis and waits for its timeout.
    pub fn no_circuit_breaker(mut self) -> Self {
        self.circuit_breaker = None;
        self
    }

    /// Reports to `recorder`, labelled `name="<name>"`: `brisk_cache_redis_hits_total`,
    /// `brisk_cache_redis_misses_total`, `brisk_cache_redis_errors_total` (calls that failed
    /// or timed out), `brisk_cache_redis_rejected_total` (refused by the open breaker),
    /// `brisk_cache_redis_circuit_state` (0 closed, 1 open, 2 probing) and
    /// `brisk_cache_redis_circuit_opened_total`. Default: none.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// Checks the settings and reads the namespace version from Redis.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty prefix or one with whitespace, a zero TTL, timeout or
    /// value size; [`Error::Redis`] or [`Error::Timeout`] if the namespace cannot be read.
    pub async fn build(self) -> Result<RedisCache<K, V, C>> {
        let config = |setting, value: String, reason| Error::Config {
            setting,
            value,
            reason,
        };
        if self.prefix.is_empty() || self.prefix.contains(char::is_whitespace) {
            return Err(config(
                "prefix",
                format!("{:?}", self.prefix),
                "must be non-empty, without whitespace",
            ));
        }
        if self.fence_for < FENCE_MARGIN * 2 {
            return Err(config(
                "write_fence",
                format!("{:?}", self.fence_for),
                "must be at least 2 s (a second of it is left for clock differences)",
            ));
        }
        for (setting, duration) in [("ttl", self.ttl), ("timeout", Some(self.timeout))] {
            if duration == Some(Duration::ZERO) {
                return Err(config(setting, "0s".into(), "must be longer than zero"));
            }
        }
        if self.max_value_size == 0 {
            return Err(config(
                "max_value_size",
                "0".into(),
                "must be at least 1 byte",
            ));
        }
        if let Some((failures, open_for)) = self.circuit_breaker
            && (failures == 0 || open_for.is_zero())
        {
            return Err(config(
                "circuit_breaker",
                format!("({failures}, {open_for:?})"),
                "needs at least 1 failure and a pause longer than zero",
            ));
        }
        let breaker = self.circuit_breaker.map(|(failures, open_for)| {
            let metrics = BreakerMetrics {
                state: self.metrics.circuit_state.clone(),
                opened: self.metrics.circuit_opened.clone(),
            };
            Breaker::new(failures, open_for, metrics)
        });
        let inner = Inner {
            connection: self.connection,
            namespace: AtomicU64::new(0),
            ttl: self.ttl,
            ttl_jitter: jitter::check(self.ttl_jitter)?,
            timeout: self.timeout,
            max_value_size: self.max_value_size,
            codec: self.codec.unwrap_or_default(),
            metrics: self.metrics,
            prefix: self.prefix,
            breaker,
            cluster: self.cluster,
            fence_for: self.fence_for,
        };
        let version = read_namespace(&inner, &format!("{}:namespace", inner.prefix)).await?;
        inner.namespace.store(version, Ordering::Relaxed);
        Ok(RedisCache {
            inner: Arc::new(inner),
            _types: PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
        score: Option<f64>,
    }

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"123456789"), 0x31C3, "CRC16-XMODEM's check value");
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(
            slot(b"foo{}{bar}"),
            slot(b"foo{}{bar}"),
            "an empty tag hashes the whole key"
        );
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn glob_characters_match_literally() {
        assert_eq!(glob_literal("users:12"), "users:12");
        assert_eq!(glob_literal(r"a*b?c[d]e\f"), r"a\*b\?c\[d\]e\\f");
    }

    proptest! {
        /// Whatever bytes sit under a key (another version's values, a corrupted write, an
        /// attacker with Redis access), decoding gives a value or an error, never a panic.
        #[test]
        fn any_stored_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let codec = ValueCodec::default();
            let _ = decode::<User>(&codec, &bytes);
            // Framed garbage too: the header is right, the payload is not.
            if let Ok(framed) = codec.encode(&bytes) {
                let _ = decode::<User>(&codec, &framed);
            }
        }

        #[test]
        fn values_round_trip(id: u64, name in ".{0,64}", tags in proptest::collection::vec(".{0,16}", 0..50), score: Option<f64>) {
            let codec = ValueCodec::default();
            let user = User { id, name, tags, score: score.filter(|s| !s.is_nan()) };
            let stored = encode(&codec, &user).unwrap();
            prop_assert_eq!(decode::<User>(&codec, &stored).unwrap(), user);
        }
    }
}
