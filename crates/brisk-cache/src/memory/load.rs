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
        // Writes of the key that completed before this call: a load under way that read its
        // source before one of them is not this caller's answer.
        let mine = self.write_epoch(&flight.0);
        let mut load = Some(load);
        let outcome = loop {
            let outcome = inner
                .flights
                .run(&flight, || {
                    let load = load.take();
                    async {
                        // Read before the source is: a write completing after it keeps the
                        // loaded value out of the cache.
                        let epoch = self.write_epoch(&flight.0);
                        // A caller that missed just before the last load of this key stored
                        // its value would load again: look once more now that it leads.
                        if let Some(value) = self.lookup(&flight.0) {
                            return Ok((value, epoch));
                        }
                        let Some(load) = load else {
                            // Not reached: a flight runs the closure of the caller it calls.
                            return Err(Arc::new(flight::NotLoaded) as SharedError);
                        };
                        let failure = FailureOnPanic(&inner.metrics.load_failures);
                        // Recorded once the loader returns: a load cancelled midway is taken
                        // over, not finished, and a panicking one is counted as a failure.
                        let started = std::time::Instant::now();
                        let loaded = load().await;
                        inner.metrics.load.record_duration(started.elapsed());
                        std::mem::forget(failure);
                        match loaded {
                            // Already written since: not stored (the write's value stays).
                            Ok(value) if self.written_since(epoch) => Ok((value, epoch)),
                            Ok(value) => {
                                self.insert_loaded(flight.0.clone(), value.clone());
                                if self.written_since(epoch) {
                                    // A write came while it loaded or stored: it may be older.
                                    self.take_loaded(&flight.0);
                                }
                                Ok((value, epoch))
                            }
                            Err(error) => {
                                inner.metrics.load_failures.increment();
                                Err(Arc::new(error) as SharedError)
                            }
                        }
                    }
                })
                .await;
            match outcome {
                // Joined a load begun before a write this call came after: load anew.
                Ok((_, started)) if load.is_some() && started.before(mine) => {}
                outcome => break outcome.map(|(value, _)| value),
            }
        };
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
