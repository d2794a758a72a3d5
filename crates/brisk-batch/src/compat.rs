//! [`FromBatchFn`]: an existing `dataloader::BatchFn` as a [`BatchLoad`].

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    hash::Hash,
    marker::PhantomData,
    sync::{Arc, Mutex, PoisonError},
};

use crate::load::{BatchLoad, Loaded};

/// Runs a `dataloader::BatchFn` (dataloader 0.18) on brisk's [`Loader`](crate::Loader)
/// unchanged, to move to brisk without rewriting batch functions first.
///
/// ```
/// use std::collections::HashMap;
/// use brisk_batch::{Loader, dataloader::{FromBatchFn}};
///
/// struct Doubler;
///
/// impl dataloader::BatchFn<u32, u32> for Doubler {
///     async fn load(&mut self, keys: &[u32]) -> HashMap<u32, u32> {
///         keys.iter().map(|&k| (k, k * 2)).collect()
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), brisk_batch::Error> {
/// let loader = Loader::new(FromBatchFn::new(Doubler));
/// assert_eq!(loader.load(21).await?, Some(42));
/// # Ok(())
/// # }
/// ```
///
/// Differences to keep in mind:
/// - A key the `BatchFn` leaves out of its map loads as `Ok(None)`; dataloader's `load` panics
///   and its `try_load` fails with `NotFound`.
/// - `BatchFn::load` takes `&mut self` and its future need not be `Send`, so each batch runs on
///   a blocking-pool thread (`spawn_blocking` + `Handle::block_on`), one batch at a time.
///   Batching, the window and the cache are brisk's; to run batches concurrently, implement
///   [`BatchLoad`] (a `&self` method with a `Send` future) instead.
///
/// `K` and `V` are the `BatchFn`'s key and value types (usually inferred).
pub struct FromBatchFn<K, V, F> {
    batch_fn: Arc<Mutex<F>>,
    types: PhantomData<fn(K) -> V>,
}

impl<K, V, F> FromBatchFn<K, V, F> {
    /// Wraps `batch_fn`.
    pub fn new(batch_fn: F) -> Self {
        Self {
            batch_fn: Arc::new(Mutex::new(batch_fn)),
            types: PhantomData,
        }
    }
}

impl<K, V, F> fmt::Debug for FromBatchFn<K, V, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromBatchFn")
            .field("batch_fn", &std::any::type_name::<F>())
            .finish()
    }
}

impl<K, V, F> BatchLoad for FromBatchFn<K, V, F>
where
    F: dataloader::BatchFn<K, V> + Send + 'static,
    K: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type Key = K;
    type Value = V;
    type Error = Infallible;

    async fn load(&self, keys: &[K]) -> Result<Loaded<K, V>, Infallible> {
        let batch_fn = Arc::clone(&self.batch_fn);
        let keys = keys.to_vec();
        let runtime = tokio::runtime::Handle::current();
        let task = tokio::task::spawn_blocking(move || {
            // A panic in an earlier batch poisons the lock; the BatchFn itself is still whole
            // (dataloader runs the next batch on it too).
            let mut batch_fn = batch_fn.lock().unwrap_or_else(PoisonError::into_inner);
            runtime.block_on(batch_fn.load(&keys))
        });
        let map: HashMap<K, V> = match task.await {
            Ok(map) => map,
            // Hand the panic on, so the Loader reports it to the batch's callers.
            Err(join) => match join.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                // Cancelled: the runtime is shutting down and drops this batch's task too.
                Err(_) => std::future::pending().await,
            },
        };
        Ok(map.into())
    }
}
