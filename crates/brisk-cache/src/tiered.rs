//! [`Tiered`]: a memory level in front of a remote one, and a loader behind both.

use std::{
    any::TypeId, convert::Infallible, fmt, future::Future, hash::Hash, sync::Arc, time::Duration,
};

use brisk_dedup::SingleFlight;
use brisk_metrics::{Counter, Histogram, Key, Recorder, Unit};

use crate::{
    Cache, Error, MemoryCache, NoRemote, Remote, Result,
    flight::{self, Flights, SharedError},
};

/// Memory (L1) in front of a remote level (L2, e.g. `RedisCache`), read through to a loader:
/// L1 → L2 → load.
///
/// - **An L2 hit fills L1** with a time to live no longer than the entry has left in L2 (read
///   in the same round trip) nor than L1's own: L1 never serves a value L2 has expired.
/// - **`get_many`** answers L1's hits and fetches the rest from L2 in one round trip.
/// - **Writes and removals reach both levels**, L2 first.
/// - **Either level may be absent**: memory alone (the embedded default, with [`NoRemote`]) or
///   the remote level alone.
/// - **[`try_get_with`](Self::try_get_with)** runs one load per key in this process however
///   many callers miss it, and keeps serving when L2 fails: an L2 error on the way counts in
///   `brisk_cache_tiered_remote_errors_total` and the load goes on, its value kept in L1.
///
/// The [`Cache`] methods report L2 errors to the caller; `try_get_with`/`get_with` do not.
///
/// ```
/// use brisk_cache::{Cache, MemoryCache, Tiered};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let memory: MemoryCache<u64, String> = MemoryCache::builder().max_entries(10_000).build()?;
/// // Memory alone; with the `redis` feature: `.remote(redis_cache)`.
/// let cache = Tiered::builder().memory(memory).build()?;
/// let name = cache.get_with(42, || async { "Ada".to_owned() }).await?;
/// assert_eq!(cache.get(&42).await?.as_deref(), Some(name.as_str()));
/// # Ok(())
/// # }
/// ```
///
/// # Cache-aside
/// Where the application decides when to read the database and when to fill the cache (a
/// value computed from several queries, or written in the same transaction as the row), the
/// [`Cache`] methods are the cache-aside helpers: look, load on a miss, store; and on a write,
/// update the database, then remove (or overwrite) the cached value.
///
/// ```
/// use std::collections::HashMap;
/// use brisk_cache::{Cache, MemoryCache, Tiered};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut table = HashMap::from([(1u64, "kettle".to_owned())]); // the database
/// let cache = Tiered::builder()
///     .memory(MemoryCache::builder().max_entries(1000).build()?)
///     .build()?;
///
/// // Read: the cache first, the table on a miss, then fill the cache.
/// let name = match cache.get(&1).await? {
///     Some(name) => name,
///     None => {
///         let name = table[&1].clone();
///         cache.insert(1, name.clone(), None).await?;
///         name
///     }
/// };
/// assert_eq!(name, "kettle");
///
/// // Write: the table first, then drop the cached copy so the next read loads the new row.
/// table.insert(1, "teapot".to_owned());
/// cache.remove(&1).await?;
/// assert_eq!(cache.get(&1).await?, None);
/// # Ok(())
/// # }
/// ```
pub struct Tiered<K, V, R = NoRemote> {
    inner: Arc<Inner<K, V, R>>,
}

struct Inner<K, V, R> {
    memory: Option<MemoryCache<K, V>>,
    remote: Option<R>,
    flights: Flights<K, V>,
    metrics: Metrics,
    negative_ttl: Option<Duration>,
}

/// What a [`Tiered`] cache reports, each series labelled `name="<name>"`.
#[derive(Debug, Clone)]
struct Metrics {
    /// `brisk_cache_tiered_hits_total{level="l1"}`
    l1_hits: Counter,
    /// `brisk_cache_tiered_hits_total{level="l2"}`
    l2_hits: Counter,
    /// `brisk_cache_tiered_misses_total`: lookups neither level answered.
    misses: Counter,
    /// `brisk_cache_tiered_load_duration_seconds`: loads that returned.
    loads: Histogram,
    /// `brisk_cache_tiered_load_failures_total`
    load_failures: Counter,
    /// `brisk_cache_tiered_remote_errors_total`: L2 errors a load went past.
    remote_errors: Counter,
}

impl Metrics {
    fn noop() -> Self {
        Self {
            l1_hits: Counter::noop(),
            l2_hits: Counter::noop(),
            misses: Counter::noop(),
            loads: Histogram::noop(Unit::Seconds),
            load_failures: Counter::noop(),
            remote_errors: Counter::noop(),
        }
    }

    fn new(recorder: &dyn Recorder, name: &str) -> Self {
        // Valid constant names and any label value: `Key` cannot fail here; a failure would
        // show as a missing series (tested), not a panic.
        let key = |metric: &'static str, level: Option<&'static str>| {
            let key = Key::new(metric).and_then(|key| key.with_label("name", name.to_owned()));
            match level {
                Some(level) => key.and_then(|key| key.with_label("level", level)),
                None => key,
            }
            .ok()
        };
        let counter = |metric, level| {
            key(metric, level).map_or_else(Counter::noop, |key| recorder.counter(&key))
        };
        Self {
            l1_hits: counter("brisk_cache_tiered_hits_total", Some("l1")),
            l2_hits: counter("brisk_cache_tiered_hits_total", Some("l2")),
            misses: counter("brisk_cache_tiered_misses_total", None),
            loads: key("brisk_cache_tiered_load_duration_seconds", None).map_or_else(
                || Histogram::noop(Unit::Seconds),
                |key| recorder.histogram(&key, Unit::Seconds),
            ),
            load_failures: counter("brisk_cache_tiered_load_failures_total", None),
            remote_errors: counter("brisk_cache_tiered_remote_errors_total", None),
        }
    }
}

impl<K, V, R> Clone for Tiered<K, V, R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, R: fmt::Debug> fmt::Debug for Tiered<K, V, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiered")
            .field("memory", &self.inner.memory)
            .field("remote", &self.inner.remote)
            .finish_non_exhaustive()
    }
}

impl<K, V> Tiered<K, V, NoRemote>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts configuring a tiered cache.
    pub fn builder() -> TieredBuilder<K, V, NoRemote> {
        TieredBuilder {
            memory: None,
            remote: None,
            metrics: Metrics::noop(),
            negative_ttl: None,
        }
    }
}

impl<K, V, R> Tiered<K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, V>,
{
    /// The memory level, if any.
    pub fn memory(&self) -> Option<&MemoryCache<K, V>> {
        self.inner.memory.as_ref()
    }

    /// The remote level, if any.
    pub fn remote(&self) -> Option<&R> {
        self.inner.remote.as_ref()
    }

    /// How long an absence is kept (see [`TieredBuilder::negative_ttl`]).
    pub(crate) fn negative_ttl(&self) -> Option<Duration> {
        self.inner.negative_ttl
    }

    /// Keeps an L2 value in L1 for no longer than it has left in L2, nor than L1's own TTL.
    fn fill(&self, key: K, value: V, remaining: Option<Duration>) {
        let Some(memory) = &self.inner.memory else {
            return;
        };
        match (remaining, memory.ttl()) {
            (Some(left), _) if left.is_zero() => {}
            (Some(left), Some(own)) => memory.insert_with_ttl(key, value, left.min(own)),
            (Some(left), None) => memory.insert_with_ttl(key, value, left),
            (None, _) => memory.insert(key, value),
        }
    }

    /// [`try_get_with`](Self::try_get_with) for a loader that cannot fail.
    ///
    /// # Errors
    /// [`Error::LoadPanicked`] if the loader panicked.
    pub async fn get_with<F, Fut>(&self, key: K, load: F) -> Result<V>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        self.try_get_with(key, || async { Ok::<_, Infallible>(load().await) })
            .await
            .map_err(|error| error.map_load(|source| match *source {}))
    }

    /// The value for `key` from L1, else L2 (filling L1), else `load` (storing its value in
    /// both levels). One load runs per key in this process however many callers miss it at
    /// once; a cancelled first caller hands it over, and a failing or panicking loader
    /// reaches every waiter and caches nothing. L2 errors do not fail the call: they are
    /// counted, and the load goes on.
    ///
    /// # Errors
    /// [`Error::Load`] with the loader's error, [`Error::LoadPanicked`].
    pub async fn try_get_with<F, Fut, E>(&self, key: K, load: F) -> Result<V, Error<Arc<E>>>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        self.load_through(key, load, |_| None).await
    }

    /// `try_get_with`, storing a loaded value for `ttl_of(&value)` (each level's own TTL when
    /// `None`, and never longer than L1's own in L1).
    async fn load_through<F, Fut, E>(
        &self,
        key: K,
        load: F,
        ttl_of: impl FnOnce(&V) -> Option<Duration>,
    ) -> Result<V, Error<Arc<E>>>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        let inner = &*self.inner;
        if let Some(value) = inner.memory.as_ref().and_then(|memory| memory.get(&key)) {
            inner.metrics.l1_hits.increment();
            return Ok(value);
        }
        let flight = (key, TypeId::of::<E>());
        let outcome = inner
            .flights
            .run(&flight, || async {
                let key = &flight.0;
                // A load that finished just before this caller led may have filled L1.
                if let Some(value) = inner.memory.as_ref().and_then(|memory| memory.get(key)) {
                    inner.metrics.l1_hits.increment();
                    return Ok(value);
                }
                if let Some(remote) = &inner.remote {
                    let found = if inner.memory.is_some() {
                        remote.get_with_ttl(key).await
                    } else {
                        remote
                            .get(key)
                            .await
                            .map(|hit| hit.map(|value| (value, None)))
                    };
                    match found {
                        Ok(Some((value, remaining))) => {
                            self.fill(key.clone(), value.clone(), remaining);
                            inner.metrics.l2_hits.increment();
                            return Ok(value);
                        }
                        Ok(None) => {}
                        Err(_) => inner.metrics.remote_errors.increment(),
                    }
                }
                inner.metrics.misses.increment();
                let started = std::time::Instant::now();
                let loaded = load().await;
                inner.metrics.loads.record_duration(started.elapsed());
                let value = loaded.map_err(|error| {
                    inner.metrics.load_failures.increment();
                    Arc::new(error) as SharedError
                })?;
                let ttl = ttl_of(&value);
                if let Some(remote) = &inner.remote
                    && remote
                        .insert(key.clone(), value.clone(), ttl)
                        .await
                        .is_err()
                {
                    inner.metrics.remote_errors.increment();
                }
                self.fill(key.clone(), value.clone(), ttl);
                Ok(value)
            })
            .await;
        outcome.map_err(|error| flight::caller_error(&flight.0, error))
    }
}

impl<K, T, R> Tiered<K, Option<T>, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    R: Remote<K, Option<T>>,
{
    /// [`try_get_with`](Self::try_get_with) for a loader that may find nothing: an absence
    /// (`None`) is cached too, for the [`negative_ttl`](TieredBuilder::negative_ttl), so that
    /// lookups of a missing row do not reach the database every time; found values keep
    /// each level's own TTL.
    ///
    /// # Errors
    /// As `try_get_with`.
    pub async fn try_get_optional_with<F, Fut, E>(
        &self,
        key: K,
        load: F,
    ) -> Result<Option<T>, Error<Arc<E>>>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
        E: Send + Sync + 'static,
    {
        let negative_ttl = self.inner.negative_ttl;
        self.load_through(key, load, |value| {
            value.is_none().then_some(negative_ttl).flatten()
        })
        .await
    }
}

impl<K, V, R> Cache<K, V> for Tiered<K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, V>,
{
    async fn get(&self, key: &K) -> Result<Option<V>> {
        let metrics = &self.inner.metrics;
        if let Some(value) = self
            .inner
            .memory
            .as_ref()
            .and_then(|memory| memory.get(key))
        {
            metrics.l1_hits.increment();
            return Ok(Some(value));
        }
        let found = match &self.inner.remote {
            None => None,
            // Nothing to fill: the remaining TTL is not needed (one command, not two).
            Some(remote) if self.inner.memory.is_none() => remote.get(key).await?,
            Some(remote) => remote.get_with_ttl(key).await?.map(|(value, remaining)| {
                self.fill(key.clone(), value.clone(), remaining);
                value
            }),
        };
        match &found {
            Some(_) => metrics.l2_hits.increment(),
            None => metrics.misses.increment(),
        }
        Ok(found)
    }

    async fn insert(&self, key: K, value: V, ttl: Option<Duration>) -> Result<()> {
        if let Some(remote) = &self.inner.remote {
            remote.insert(key.clone(), value.clone(), ttl).await?;
        }
        if let Some(memory) = &self.inner.memory {
            Cache::insert(memory, key, value, ttl).await?;
        }
        Ok(())
    }

    async fn remove(&self, key: &K) -> Result<()> {
        if let Some(memory) = &self.inner.memory {
            memory.remove(key);
        }
        if let Some(remote) = &self.inner.remote {
            remote.remove(key).await?;
        }
        Ok(())
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        let metrics = &self.inner.metrics;
        let mut found: Vec<Option<V>> = match &self.inner.memory {
            Some(memory) => keys.iter().map(|key| memory.get(key)).collect(),
            None => vec![None; keys.len()],
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&at| found[at].is_none()).collect();
        metrics.l1_hits.add((keys.len() - missing.len()) as u64);
        let Some(remote) = self.inner.remote.as_ref().filter(|_| !missing.is_empty()) else {
            metrics.misses.add(missing.len() as u64);
            return Ok(found);
        };
        if self.inner.memory.is_none() {
            found = remote.get_many(keys).await?;
        } else {
            let missing_keys: Vec<K> = missing.iter().map(|&at| keys[at].clone()).collect();
            let fetched = remote.get_many_with_ttl(&missing_keys).await?;
            for ((&at, key), hit) in missing.iter().zip(missing_keys).zip(fetched) {
                if let Some((value, remaining)) = hit {
                    self.fill(key, value.clone(), remaining);
                    found[at] = Some(value);
                }
            }
        }
        let l2_hits = missing.iter().filter(|&&at| found[at].is_some()).count();
        metrics.l2_hits.add(l2_hits as u64);
        metrics.misses.add((missing.len() - l2_hits) as u64);
        Ok(found)
    }

    async fn insert_many(&self, entries: Vec<(K, V)>, ttl: Option<Duration>) -> Result<()> {
        if let Some(remote) = &self.inner.remote {
            remote.insert_many(entries.clone(), ttl).await?;
        }
        if let Some(memory) = &self.inner.memory {
            Cache::insert_many(memory, entries, ttl).await?;
        }
        Ok(())
    }
}

/// Configures a [`Tiered`] cache; from [`Tiered::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct TieredBuilder<K, V, R> {
    memory: Option<MemoryCache<K, V>>,
    remote: Option<R>,
    metrics: Metrics,
    negative_ttl: Option<Duration>,
}

impl<K, V, R: fmt::Debug> fmt::Debug for TieredBuilder<K, V, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredBuilder")
            .field("memory", &self.memory)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl<K, V, R> TieredBuilder<K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, V>,
{
    /// The memory level (L1). Its own TTL bounds how long it keeps an L2 value.
    pub fn memory(mut self, memory: MemoryCache<K, V>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// The remote level (L2), e.g. a `RedisCache`.
    pub fn remote<R2: Remote<K, V>>(self, remote: R2) -> TieredBuilder<K, V, R2> {
        TieredBuilder {
            memory: self.memory,
            remote: Some(remote),
            metrics: self.metrics,
            negative_ttl: self.negative_ttl,
        }
    }

    /// How long [`try_get_optional_with`](Tiered::try_get_optional_with) keeps an absence
    /// (a loader's `None`), usually much shorter than a found value's TTL. Default: each
    /// level's own TTL, as for values.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// Reports to `recorder`, each series labelled `name="<name>"`:
    /// `brisk_cache_tiered_hits_total` (with `level="l1"` or `"l2"`),
    /// `brisk_cache_tiered_misses_total` (neither level had it),
    /// `brisk_cache_tiered_load_duration_seconds`, `brisk_cache_tiered_load_failures_total`
    /// and `brisk_cache_tiered_remote_errors_total` (L2 errors a load went past). A caller
    /// that joins another caller's load is not counted again. Each level reports its own
    /// series through its own builder. Default: none.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    /// [`Error::Config`] when neither level is set.
    pub fn build(self) -> Result<Tiered<K, V, R>> {
        if self.negative_ttl == Some(Duration::ZERO) {
            return Err(Error::Config {
                setting: "negative_ttl",
                value: "0s".into(),
                reason: "must be longer than zero",
            });
        }
        if self.memory.is_none() && self.remote.is_none() {
            return Err(Error::Config {
                setting: "memory",
                value: "none".into(),
                reason: "a tiered cache needs a memory level, a remote level, or both",
            });
        }
        Ok(Tiered {
            inner: Arc::new(Inner {
                memory: self.memory,
                remote: self.remote,
                flights: SingleFlight::new(),
                metrics: self.metrics,
                negative_ttl: self.negative_ttl,
            }),
        })
    }
}
