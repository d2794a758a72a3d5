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

/// A value and the time it has left in its level (`None`: no expiry).
pub type WithTtl<V> = (V, Option<Duration>);

/// A level that can say how long an entry has left, so that a faster level in front of it
/// (see [`Tiered`](crate::Tiered)) keeps its copy no longer: `RedisCache` (feature `redis`)
/// reads it in the same round trip as the value.
pub trait Remote<K, V>: Cache<K, V> {
    /// The live value for `key` and its remaining time to live (`None`: no expiry).
    fn get_with_ttl(&self, key: &K) -> impl Future<Output = Result<Option<WithTtl<V>>>> + Send;

    /// The live values for `keys`, in their order, each with its remaining time to live.
    fn get_many_with_ttl(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<Vec<Option<WithTtl<V>>>>> + Send;

    /// `key`'s write fence as it is now: read by a load before it reads its source, and
    /// handed back to [`insert_fenced`](Self::insert_fenced), so that a load that read the
    /// source before a write (made by any instance sharing this level) does not store the
    /// old value after it. The default has no fence: every fenced insert stores.
    fn write_fence(&self, key: &K) -> impl Future<Output = Result<WriteFence>> + Send {
        let _ = key;
        std::future::ready(Ok(WriteFence::default()))
    }

    /// Stores `value` as [`insert`](Cache::insert) does if no write of `key` happened since
    /// `fence` was read: whether it stored. The default stores unconditionally.
    fn insert_fenced(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        fence: &WriteFence,
    ) -> impl Future<Output = Result<bool>> + Send
    where
        K: Send,
        V: Send,
    {
        let _ = fence;
        async move { self.insert(key, value, ttl).await.map(|()| true) }
    }
}

/// What a [`Remote`] level knew of a key's writes when a load began (see
/// [`Remote::write_fence`]): opaque; the default is "no fence".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteFence {
    /// The fence's token as the level stores it (`None`: no write within the fence's life).
    pub(crate) token: Option<Vec<u8>>,
    /// When it was read, if the level fences writes: a fence read longer ago than the
    /// level keeps fences cannot vouch for anything.
    pub(crate) read_at: Option<std::time::Instant>,
    /// The level's namespace then (the Redis level's `invalidate_all` changes it).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) namespace: u64,
}

/// No second level: a [`Tiered`](crate::Tiered) cache over memory alone, the embedded
/// default. Holds nothing; every read misses.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRemote;

impl<K: Send + Sync, V: Send> Cache<K, V> for NoRemote {
    async fn get(&self, _: &K) -> Result<Option<V>> {
        Ok(None)
    }

    async fn insert(&self, _: K, _: V, _: Option<Duration>) -> Result<()> {
        Ok(())
    }

    async fn remove(&self, _: &K) -> Result<()> {
        Ok(())
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        Ok(keys.iter().map(|_| None).collect())
    }

    async fn insert_many(&self, _: Vec<(K, V)>, _: Option<Duration>) -> Result<()> {
        Ok(())
    }
}

impl<K: Send + Sync, V: Send> Remote<K, V> for NoRemote {
    async fn get_with_ttl(&self, _: &K) -> Result<Option<WithTtl<V>>> {
        Ok(None)
    }

    async fn get_many_with_ttl(&self, keys: &[K]) -> Result<Vec<Option<WithTtl<V>>>> {
        Ok(keys.iter().map(|_| None).collect())
    }
}
