//! A [`Source`] (the database behind the cache) and [`WriteThrough`], which writes the source
//! first and then the cache. [`WriteBehind`](crate::WriteBehind), which writes the cache at
//! once and the source in batches behind it, lives in `write_behind`.

use std::{fmt, future::Future, hash::Hash, sync::Arc};

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

    /// Writes many rows at once, each key once: the batches of
    /// [`WriteBehind`](crate::WriteBehind). A multi-row
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
pub(crate) async fn read_through<K, T, S, R>(
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
/// A `put` or `delete` dropped once its source write has begun (the source may have taken
/// it) drops the key from memory at once and removes it from every level in a spawned task
/// (the remote level and, through a backplane, the other instances' memory): the next
/// reader loads the source's row. Dropped outside a runtime, only memory is cleared.
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
        let mut forget = ForgetIfDropped::new(&self.cache, &key);
        let saved = self.source.save(&key, &value).await;
        if saved.is_err() {
            forget.disarm();
        }
        refused(&key, saved)?;
        let refreshed = self.refresh(key, Some(value)).await;
        forget.disarm();
        refreshed
    }

    /// Deletes `key` from the source, then caches its absence.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub async fn delete(&self, key: K) -> Result<(), Error<Arc<S::Error>>> {
        let _ordered = self.ordered(&key).await;
        let mut forget = ForgetIfDropped::new(&self.cache, &key);
        let deleted = self.source.delete(&key).await;
        if deleted.is_err() {
            forget.disarm();
        }
        refused(&key, deleted)?;
        let refreshed = self.refresh(key, None).await;
        forget.disarm();
        refreshed
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

/// A write-through's source write (and cache update) under way. Dropped armed, its caller
/// was cancelled (or the source panicked) after the source may have taken the write: the
/// key leaves memory at once, and a removal from every level (the remote one and, through
/// the backplane, the other instances' memory) is spawned, so that no old value outlives
/// the write. A removal is right whichever way the write went: the next reader loads the
/// source's row.
struct ForgetIfDropped<'a, K, T, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    cache: &'a Tiered<K, Option<T>, R>,
    key: Option<K>,
}

impl<'a, K, T, R> ForgetIfDropped<'a, K, T, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    fn new(cache: &'a Tiered<K, Option<T>, R>, key: &K) -> Self {
        Self {
            cache,
            key: Some(key.clone()),
        }
    }

    /// The write answered: the cache is as its outcome left it.
    fn disarm(&mut self) {
        self.key = None;
    }
}

impl<K, T, R> Drop for ForgetIfDropped<'_, K, T, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        if let Some(memory) = self.cache.memory() {
            memory.remove(&key);
        }
        // Outside a runtime (or in one shutting down) only memory is cleared: the remote
        // level keeps its copy until its TTL, as after a failed cache update.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cache = self.cache.clone();
            runtime.spawn(async move {
                if let Err(error) = Cache::remove(&cache, &key).await {
                    tracing::warn!(
                        %error,
                        "brisk-cache: a write-through write was dropped midway and its key \
                         could not be removed from the remote level; it may serve the old \
                         value until its TTL"
                    );
                }
            });
        }
    }
}

/// Lock stripes of a [`WriteThrough`] and a [`WriteBehind`](crate::WriteBehind): writes of
/// different keys rarely wait for each other.
pub(crate) const STRIPES: usize = 64;
