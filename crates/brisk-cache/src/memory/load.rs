//! Loading on a miss: [`MemoryCache::get_with`] and [`MemoryCache::try_get_with`], one load
//! per key however many callers miss it at once (brisk-dedup's single-flight).

use std::{any::TypeId, convert::Infallible, fmt, future::Future, hash::Hash, sync::Arc};

use super::MemoryCache;
use crate::{
    Error, Result,
    flight::{self, SharedError},
};

impl<K, V> MemoryCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The value for `key`, loaded with `load` and cached on a miss.
    ///
    /// Callers that miss the same key at the same time share one load: the first runs it and
    /// the others wait for its value. If the caller running it is dropped (its request was
    /// cancelled), a waiting caller takes the load over with its own `load`.
    ///
    /// # Errors
    /// [`Error::LoadPanicked`] for every caller of a load that panicked (nothing is cached),
    /// and [`Error::LoadWaitTimeout`] past the
    /// [`load_wait_timeout`](crate::MemoryCacheBuilder::load_wait_timeout).
    ///
    /// ```
    /// use brisk_cache::MemoryCache;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), brisk_cache::Error> {
    /// let cache: MemoryCache<u64, String> = MemoryCache::builder().max_entries(10_000).build()?;
    /// let name = cache.get_with(42, || async { "Ada".to_owned() }).await?;
    /// assert_eq!(name, "Ada");
    /// // Cached now: this loader does not run.
    /// let again = cache.get_with(42, || async { unreachable!() }).await?;
    /// assert_eq!(again, "Ada");
    /// # Ok(())
    /// # }
    /// ```
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

    /// The value for `key`, loaded with the fallible `load` and cached on a miss; a failed
    /// load caches nothing.
    ///
    /// Callers that miss the same key at the same time share one load, as with
    /// [`get_with`](Self::get_with); a loader's error reaches each of them, shared through an
    /// `Arc` (so `E` need not be `Clone`). Only callers whose loaders have the same error type
    /// share a load.
    ///
    /// # Errors
    /// [`Error::Load`] with the loader's error, [`Error::LoadPanicked`] and
    /// [`Error::LoadWaitTimeout`] as for `get_with`.
    ///
    /// ```
    /// use brisk_cache::{Error, MemoryCache};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), brisk_cache::Error> {
    /// let cache: MemoryCache<u64, String> = MemoryCache::builder().max_entries(10_000).build()?;
    /// let failed = cache
    ///     .try_get_with(7, || async { Err::<String, _>(std::io::Error::other("db down")) })
    ///     .await;
    /// assert!(matches!(failed, Err(Error::Load { .. })));
    /// assert_eq!(cache.get(&7), None, "a failed load caches nothing");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn try_get_with<F, Fut, E>(&self, key: K, load: F) -> Result<V, Error<Arc<E>>>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        if let Some(value) = self.get(&key) {
            return Ok(value);
        }
        let inner = &*self.inner;
        let flight = (key, TypeId::of::<E>());
        let outcome = inner
            .flights
            .run(&flight, || async {
                // A caller that missed just before the last load of this key stored its value
                // would load again: look once more now that this caller leads.
                if let Some(value) = self.lookup(&flight.0) {
                    return Ok(value);
                }
                let failure = FailureOnPanic(&inner.metrics.load_failures);
                // Recorded once the loader returns: a load cancelled midway is taken over,
                // not finished, and a panicking one is counted as a failure instead.
                let started = std::time::Instant::now();
                let loaded = load().await;
                inner.metrics.load.record_duration(started.elapsed());
                std::mem::forget(failure);
                match loaded {
                    Ok(value) => {
                        self.insert(flight.0.clone(), value.clone());
                        Ok(value)
                    }
                    Err(error) => {
                        inner.metrics.load_failures.increment();
                        Err(Arc::new(error) as SharedError)
                    }
                }
            })
            .await;
        outcome.map_err(|error| flight::caller_error(&flight.0, error))
    }
}

/// Counts a load failure if dropped while the loader unwinds from a panic (a dropped,
/// cancelled load is not a failure: another caller takes it over).
struct FailureOnPanic<'a>(&'a brisk_metrics::Counter);

impl Drop for FailureOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.increment();
        }
    }
}
