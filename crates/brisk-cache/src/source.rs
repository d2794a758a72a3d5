//! A [`Source`] (the database behind the cache), [`WriteThrough`], which writes the source
//! first and then the cache, and [`WriteBehind`], which writes the cache at once and the
//! source in coalesced batches behind it.

use std::{collections::HashMap, fmt, future::Future, hash::Hash, marker::PhantomData, sync::Arc};

use brisk_batch::{BatchWrite, WriteBatcher};

use crate::{Cache, Error, Remote, Result, Stamped, Tiered};

/// Where values come from and go to: the table behind a cache. `load` answers `None` for a
/// missing row (cached as an absence for the tiered cache's
/// [`negative_ttl`](crate::TieredBuilder::negative_ttl)).
pub trait Source<K, V>: Send + Sync {
    /// What the source fails with.
    type Error: Send + Sync + 'static;

    /// The row for `key`, if there is one.
    fn load(&self, key: &K) -> impl Future<Output = Result<Option<V>, Self::Error>> + Send;

    /// Writes (inserts or replaces) the row for `key`.
    fn save(&self, key: &K, value: &V) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Deletes the row for `key`, if there is one.
    fn delete(&self, key: &K) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Writes many rows at once, each key once: the batches of [`WriteBehind`]. A multi-row
    /// upsert belongs here; the default saves them one at a time. Should be all-or-nothing
    /// (one statement or a transaction): a failed batch is reported whole.
    fn save_many(&self, rows: &[(K, V)]) -> impl Future<Output = Result<(), Self::Error>> + Send
    where
        K: Sync,
        V: Sync,
    {
        async move {
            for (key, value) in rows {
                self.save(key, value).await?;
            }
            Ok(())
        }
    }
}

/// `key` from `cache`, else loaded from `source` (absences cached too): the read path of
/// both write patterns.
async fn read_through<K, T, S, R>(
    cache: &Tiered<K, Option<T>, R>,
    source: &Arc<S>,
    key: K,
) -> Result<Option<T>, Error<Arc<S::Error>>>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    let source = Arc::clone(source);
    let loading = key.clone();
    cache
        .try_get_optional_with(key, || async move { source.load(&loading).await })
        .await
}

/// A source's refusal of a write as [`Error::Write`].
fn refused<E>(key: &impl fmt::Debug, written: Result<(), E>) -> Result<(), Error<Arc<E>>> {
    written.map_err(|source| Error::Write {
        key: format!("{key:?}"),
        source: Arc::new(source),
    })
}

/// A [`Tiered`] cache kept in step with its [`Source`]: reads go through the cache to the
/// source (one load per key at a time, absences cached too); writes and deletes go to the
/// source first and then to the cache, so the cache never holds a value the source refused.
///
/// If the source write succeeds but the cache cannot be updated (Redis down), the write is
/// not undone: the key is dropped from memory and the error returned, and the remote level
/// may serve the old value until its TTL ends.
///
/// Two writes of one key through the same `WriteThrough` (or its clones) are ordered: each
/// holds its key's stripe from the source write to the cache write, so the cache ends with
/// the value the source ended with. Writes of one key from two processes are not ordered so.
pub struct WriteThrough<K, T, S, R> {
    cache: Tiered<K, Option<T>, R>,
    source: Arc<S>,
    stripes: Arc<[tokio::sync::Mutex<()>]>,
    hasher: ahash::RandomState,
}

impl<K, T, S, R> Clone for WriteThrough<K, T, S, R> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            source: Arc::clone(&self.source),
            stripes: Arc::clone(&self.stripes),
            hasher: self.hasher.clone(),
        }
    }
}

impl<K, T, S, R: fmt::Debug> fmt::Debug for WriteThrough<K, T, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteThrough")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<K, T, S, R> WriteThrough<K, T, S, R>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    /// Keeps `cache` in step with `source`.
    pub fn new(cache: Tiered<K, Option<T>, R>, source: S) -> Self {
        Self {
            cache,
            source: Arc::new(source),
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// The stripe a write of `key` holds from its source write to its cache write.
    async fn ordered(&self, key: &K) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one(key) as usize % self.stripes.len();
        self.stripes[stripe].lock().await
    }

    /// The cache.
    pub fn cache(&self) -> &Tiered<K, Option<T>, R> {
        &self.cache
    }

    /// The value for `key`: from the cache, else loaded from the source and cached.
    ///
    /// # Errors
    /// [`Error::Load`] with the source's error, [`Error::LoadPanicked`].
    pub async fn get(&self, key: K) -> Result<Option<T>, Error<Arc<S::Error>>> {
        read_through(&self.cache, &self.source, key).await
    }

    /// Writes `value` to the source, then to the cache.
    ///
    /// # Errors
    /// [`Error::Write`] if the source refused it (the cache is unchanged); a cache error if
    /// the cache could not be updated after the source was.
    pub async fn put(&self, key: K, value: T) -> Result<(), Error<Arc<S::Error>>> {
        let _ordered = self.ordered(&key).await;
        refused(&key, self.source.save(&key, &value).await)?;
        self.refresh(key, Some(value)).await
    }

    /// Deletes `key` from the source, then caches its absence.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub async fn delete(&self, key: K) -> Result<(), Error<Arc<S::Error>>> {
        let _ordered = self.ordered(&key).await;
        refused(&key, self.source.delete(&key).await)?;
        self.refresh(key, None).await
    }

    async fn refresh(&self, key: K, value: Option<T>) -> Result<(), Error<Arc<S::Error>>> {
        // An absence is kept for the negative TTL, as a load's would be.
        let ttl = value.is_none().then(|| self.cache.negative_ttl()).flatten();
        if let Err(error) = self.cache.insert(key.clone(), value, ttl).await {
            // The source has the new value; memory must not keep the old one.
            if let Some(memory) = self.cache.memory() {
                memory.remove(&key);
            }
            return Err(error.map_load(|never| match never {}));
        }
        Ok(())
    }
}

/// A [`Tiered`] cache whose writes reach their [`Source`] later, in batches: `put` updates
/// the cache and queues the row; brisk-batch's `WriteBatcher` writes the queue with
/// `save_many`, repeated writes to one key in a batch coalesced to the last.
///
/// - **Nothing queued is lost**: [`flush`](Self::flush) returns once everything queued before
///   it is written, [`shutdown`](Self::shutdown) writes everything and stops; dropping the
///   last handle writes the queue in the background. Call `shutdown` before the process
///   exits.
/// - **Backpressure**: `put` waits while the queue (1000 rows) is full, so a database that
///   falls behind slows writers instead of growing memory.
/// - **Failures are not retried here and reach no caller**: a failed batch counts in
///   brisk-batch's `brisk_batch_write_failures_total` (with `.metrics` on the batcher it
///   builds) and the cache keeps the new values. Use [`WriteThrough`] where every write must
///   be confirmed.
/// - **Order**: the puts of one key reach the cache and the queue in the same order (they
///   hold a lock stripe for the key meanwhile), and batches are written one at a time, so
///   the source ends with the value the cache ends with, even when tasks race on a key.
pub struct WriteBehind<K, T, S, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
{
    cache: Tiered<K, Option<T>, R>,
    source: Arc<S>,
    batcher: WriteBatcher<Rows<K, T, S>>,
    /// Puts of one key hold its stripe from the cache write to the enqueue, so that the
    /// cache and the queue see a key's writes in the same order.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: ahash::RandomState,
}

impl<K, T, S, R> fmt::Debug for WriteBehind<K, T, S, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
    R: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehind")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// Lock stripes of a [`WriteBehind`]: puts of different keys rarely wait for each other.
const STRIPES: usize = 64;

/// The batch write behind a [`WriteBehind`]: coalesce, then `save_many`.
struct Rows<K, T, S> {
    source: Arc<S>,
    _types: PhantomData<fn(K, T)>,
}

impl<K, T, S> BatchWrite for Rows<K, T, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
{
    type Item = (K, T);
    type Output = ();
    type Error = S::Error;

    async fn write(&self, items: &[(K, T)]) -> Result<Vec<()>, S::Error> {
        // The last write of each key wins; keys keep the order of their last write.
        let mut last: HashMap<&K, usize> = HashMap::with_capacity(items.len());
        for (at, (key, _)) in items.iter().enumerate() {
            last.insert(key, at);
        }
        let rows: Vec<(K, T)> = items
            .iter()
            .enumerate()
            .filter(|(at, (key, _))| last.get(key) == Some(at))
            .map(|(_, row)| row.clone())
            .collect();
        self.source.save_many(&rows).await?;
        Ok(vec![(); items.len()])
    }
}

impl<K, T, S, R> WriteBehind<K, T, S, R>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    /// Writes behind `cache` to `source`, in batches of up to 1000 rows gathered for at most
    /// 1 ms (brisk-batch's defaults).
    pub fn new(cache: Tiered<K, Option<T>, R>, source: S) -> Self {
        let source = Arc::new(source);
        let batcher = WriteBatcher::new(Rows {
            source: Arc::clone(&source),
            _types: PhantomData,
        });
        Self {
            cache,
            source,
            batcher,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: ahash::RandomState::new(),
        }
    }

    /// The cache.
    pub fn cache(&self) -> &Tiered<K, Option<T>, R> {
        &self.cache
    }

    /// The value for `key`: from the cache, else loaded from the source and cached.
    ///
    /// # Errors
    /// [`Error::Load`] with the source's error, [`Error::LoadPanicked`].
    pub async fn get(&self, key: K) -> Result<Option<T>, Error<Arc<S::Error>>> {
        read_through(&self.cache, &self.source, key).await
    }

    /// Caches `value` and queues it for the source; returns once it is queued (waiting while
    /// the queue is full).
    ///
    /// # Errors
    /// A cache error (nothing is queued then), or [`Error::Closed`] after
    /// [`shutdown`](Self::shutdown) (the value was cached, not queued).
    pub async fn put(&self, key: K, value: T) -> Result<(), Error<Arc<S::Error>>> {
        let stripe = self.hasher.hash_one(&key) as usize % self.stripes.len();
        let _ordered = self.stripes[stripe].lock().await;
        self.cache
            .insert(key.clone(), Some(value.clone()), None)
            .await
            .map_err(|error| error.map_load(|never| match never {}))?;
        let name = format!("{key:?}");
        self.batcher
            .enqueue((key, value))
            .await
            .map_err(|_| Error::Closed { key: name })
    }

    /// Returns once everything queued before this call has been written (or has failed).
    pub async fn flush(&self) {
        self.batcher.flush().await;
    }

    /// Stops taking writes, writes everything queued, and returns once it is written.
    pub async fn shutdown(&self) {
        self.batcher.shutdown().await;
    }
}
