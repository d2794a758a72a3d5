//! The [`Cache`] trait: what every level of brisk-cache offers, so call sites do not change
//! when a level is swapped.

use std::{future::Future, time::Duration};

use crate::Result;

/// A cache level: in memory ([`MemoryCache`](crate::MemoryCache)) today; the Redis level and
/// the tiered cache implement it too, so code written against `Cache` works with any of them.
///
/// # Contract
/// - `get` returns a value only while it is live (not expired); a miss is `Ok(None)`, an error
///   means the level could not answer (an in-memory level never fails).
/// - `insert` with `ttl: None` uses the level's own time to live; `Some(ttl)` overrides it.
///   A level may refuse an entry (too heavy, or less popular than what it would displace):
///   that is not an error, the value is simply not cached.
/// - `get_many` answers in the order of `keys`.
/// - Dropping a future before it completes leaves the level consistent: an insert either
///   happened or did not.
pub trait Cache<K, V>: Send + Sync {
    /// The live value for `key`, if any.
    fn get(&self, key: &K) -> impl Future<Output = Result<Option<V>>> + Send;

    /// Stores `value` for `key`, replacing any value there.
    fn insert(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes `key`, if present.
    fn remove(&self, key: &K) -> impl Future<Output = Result<()>> + Send;

    /// The live values for `keys`, in their order.
    fn get_many(&self, keys: &[K]) -> impl Future<Output = Result<Vec<Option<V>>>> + Send;

    /// Stores every entry, all with the same time to live.
    fn insert_many(
        &self,
        entries: Vec<(K, V)>,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;
}
