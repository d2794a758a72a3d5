//! [`Cached`]: a function whose results are cached, keyed by its arguments (a `#[cached]`
//! decorator, as a value).

use std::{fmt, future::Future, hash::Hash, marker::PhantomData, sync::Arc};

use crate::{Error, NoRemote, Remote, Stamped, Tiered};

/// An async function memoized in a [`Tiered`] cache: the arguments, as one `Hash + Eq` value
/// (a tuple, say), are the key. Concurrent calls with the same arguments run the function
/// once; a failing call caches nothing.
///
/// ```
/// use brisk_cache::{Cached, MemoryCache, Tiered};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Tiered::builder()
///     .memory(MemoryCache::builder().max_entries(10_000).build()?)
///     .build()?;
/// // A page of a user's orders, as the database would answer it.
/// let orders = Cached::new(cache, |(user, page): (u64, u32)| async move {
///     Ok::<_, std::io::Error>(format!("orders of user {user}, page {page}"))
/// });
/// assert_eq!(orders.call((7, 1)).await?, "orders of user 7, page 1");
/// assert_eq!(orders.call((7, 1)).await?, "orders of user 7, page 1"); // cached
/// # Ok(())
/// # }
/// ```
pub struct Cached<A, V, F, R = NoRemote> {
    cache: Tiered<A, V, R>,
    function: Arc<F>,
    _returns: PhantomData<fn() -> V>,
}

impl<A, V, F, R> Clone for Cached<A, V, F, R> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            function: Arc::clone(&self.function),
            _returns: PhantomData,
        }
    }
}

impl<A, V, F, R: fmt::Debug> fmt::Debug for Cached<A, V, F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl<A, V, F, Fut, E, R> Cached<A, V, F, R>
where
    A: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<V, E>> + Send + 'static,
    E: Send + Sync + 'static,
    R: Remote<A, Stamped<V>> + 'static,
{
    /// Memoizes `function` in `cache`.
    pub fn new(cache: Tiered<A, V, R>, function: F) -> Self {
        Self {
            cache,
            function: Arc::new(function),
            _returns: PhantomData,
        }
    }

    /// The function's value for `args`: cached, or computed (once for concurrent callers)
    /// and cached.
    ///
    /// # Errors
    /// [`Error::Load`] with the function's error (nothing cached), [`Error::LoadPanicked`].
    pub async fn call(&self, args: A) -> Result<V, Error<Arc<E>>> {
        let function = Arc::clone(&self.function);
        let called = args.clone();
        self.cache
            .try_get_with(args, move || function(called))
            .await
    }

    /// The cache behind it, to invalidate an entry (`remove`) when its data changes.
    pub fn cache(&self) -> &Tiered<A, V, R> {
        &self.cache
    }
}
