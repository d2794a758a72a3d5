//! Write-through: a [`Source`] (the database behind the cache) and [`WriteThrough`], which
//! reads through the cache and writes the source first, then the cache.

use std::{fmt, future::Future, hash::Hash, sync::Arc};

use crate::{Cache, Error, Remote, Result, Tiered};

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
}

/// A [`Tiered`] cache kept in step with its [`Source`]: reads go through the cache to the
/// source (one load per key at a time, absences cached too); writes and deletes go to the
/// source first and then to the cache, so the cache never holds a value the source refused.
///
/// If the source write succeeds but the cache cannot be updated (Redis down), the write is
/// not undone: the key is dropped from memory and the error returned, and the remote level
/// may serve the old value until its TTL ends.
pub struct WriteThrough<K, T, S, R> {
    cache: Tiered<K, Option<T>, R>,
    source: Arc<S>,
}

impl<K, T, S, R> Clone for WriteThrough<K, T, S, R> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            source: Arc::clone(&self.source),
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
    S: Source<K, T>,
    R: Remote<K, Option<T>>,
{
    /// Keeps `cache` in step with `source`.
    pub fn new(cache: Tiered<K, Option<T>, R>, source: S) -> Self {
        Self {
            cache,
            source: Arc::new(source),
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
        let source = Arc::clone(&self.source);
        let loading = key.clone();
        self.cache
            .try_get_optional_with(key, || async move { source.load(&loading).await })
            .await
    }

    /// Writes `value` to the source, then to the cache.
    ///
    /// # Errors
    /// [`Error::Write`] if the source refused it (the cache is unchanged); a cache error if
    /// the cache could not be updated after the source was.
    pub async fn put(&self, key: K, value: T) -> Result<(), Error<Arc<S::Error>>> {
        self.source
            .save(&key, &value)
            .await
            .map_err(|source| Error::Write {
                key: format!("{key:?}"),
                source: Arc::new(source),
            })?;
        self.refresh(key, Some(value)).await
    }

    /// Deletes `key` from the source, then caches its absence.
    ///
    /// # Errors
    /// As [`put`](Self::put).
    pub async fn delete(&self, key: K) -> Result<(), Error<Arc<S::Error>>> {
        self.source
            .delete(&key)
            .await
            .map_err(|source| Error::Write {
                key: format!("{key:?}"),
                source: Arc::new(source),
            })?;
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
