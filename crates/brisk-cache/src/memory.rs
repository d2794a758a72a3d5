//! [`MemoryCache`]: the in-process level, sharded, each shard an `lru::LruCache` pair with a
//! TinyLFU admission filter between them.

mod load;

use std::{
    fmt,
    hash::Hash,
    num::NonZeroUsize,
    sync::{
        Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use ahash::RandomState;
use brisk_dedup::SingleFlight;
use brisk_metrics::Recorder;
use lru::LruCache;
use tokio::time::Instant;

use crate::{
    Cache, Error, Result,
    flight::Flights,
    jitter,
    metrics::Metrics,
    sketch::{self, SAMPLE_EVERY, Sketch},
};

/// Why an entry left the cache, as the [eviction listener](MemoryCacheBuilder::eviction_listener)
/// is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cause {
    /// Its time to live or time to idle ran out.
    Expired,
    /// Evicted to make room, or refused admission (a newcomer less popular than what it
    /// would displace, or heavier than a shard can hold).
    Size,
    /// Overwritten by an insert of the same key.
    Replaced,
    /// Removed by [`MemoryCache::remove`], [`invalidate_all`](MemoryCache::invalidate_all) or
    /// [`invalidate_if`](MemoryCache::invalidate_if).
    Removed,
}

type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;
type Listener<K, V> = Arc<dyn Fn(K, V, Cause) + Send + Sync>;

/// A stored value with what the policy needs to know about it.
struct Entry<V> {
    value: V,
    weight: u32,
    /// Nanoseconds since the cache's epoch after which the entry is gone; `u64::MAX`: never.
    expires: u64,
    /// Nanoseconds since the epoch of the last read or write, for time-to-idle.
    touched: AtomicU64,
    /// Read since it was last considered for eviction: a hit sets it under the read lock, and
    /// eviction gives such an entry a second chance (moves it to the most recent end) instead
    /// of moving it on every hit.
    referenced: AtomicBool,
}

/// One shard: a small window that every newcomer enters, and the main space that admission
/// guards (W-TinyLFU's structure, Einziger et al. 2017), each an LRU order.
struct Shard<K, V> {
    window: LruCache<K, Entry<V>, RandomState>,
    main: LruCache<K, Entry<V>, RandomState>,
    window_weight: u64,
    main_weight: u64,
    /// This shard's share of the bound, and the part of it the window takes.
    max: u64,
    window_max: u64,
    main_max: u64,
    sketch: Sketch,
    climber: Climber,
}

/// Sampled lookups per climbing period for a shard of `entries`.
fn period(entries: u64) -> u64 {
    (entries.saturating_mul(10) / SAMPLE_EVERY).clamp(64, MAX_PERIOD)
}

/// Sizes the window by hill climbing, as Caffeine does: every sample period, compare the hit
/// rate with the last period's; if it improved, move the window size further the same way,
/// else turn back, with steps that shrink as the rate settles (and grow again when the
/// workload changes). Recency-heavy traces end with a large window, frequency-heavy ones with
/// a small one.
struct Climber {
    /// Sampled (one in [`SAMPLE_EVERY`] per thread) lookups in the low 32 bits and hits in
    /// the high 32, so that a sample is one atomic add; written under the read lock.
    samples: AtomicU64,
    /// Sampled lookups per period: ten per entry the shard holds, at most [`MAX_PERIOD`]
    /// (for a weight-bounded shard, per entry it holds now: see [`Climber::fit`]).
    period: u64,
    previous_rate: f64,
    /// Whether the shard has been half full; no climb before.
    warm: bool,
    /// The next change of the window size, in weight; its sign is the direction.
    step: f64,
}

/// The first step, and the one after a jump in the hit rate: 6.25 % of the shard.
const INITIAL_STEP: f64 = 0.0625;
/// Steps shrink by this factor each period while the hit rate is steady...
const STEP_DECAY: f64 = 0.98;
/// ...and start over when it moves by more than this.
const RESTART_THRESHOLD: f64 = 0.05;
/// At most this many sampled lookups per period (16 Ki lookups of a shard). Ten per entry
/// would leave a large shard too few periods to find its size: on the OLTP trace at capacity
/// 100k, capping the period lifted the hit ratio from .772 to .778. The rate's standard error
/// at 2048 samples is at most 1.1 points, and the noise gate below allows for it.
const MAX_PERIOD: u64 = 2048;

impl Climber {
    /// A climber for a shard of about `entries` entries and `max` weight (the same without a
    /// weigher).
    fn new(entries: u64, max: u64) -> Self {
        Self {
            samples: AtomicU64::new(0),
            period: period(entries),
            previous_rate: 0.0,
            warm: false,
            step: INITIAL_STEP * max as f64,
        }
    }

    /// Follows the entries a weight-bounded shard holds.
    fn fit(&mut self, entries: u64) {
        self.period = period(entries);
    }

    fn sample(&self, hit: bool) {
        // Once a period's samples are in, sampling stops until the next write climbs: a
        // read-only spell writes nothing here, and the lookup count cannot carry into the
        // hits. Concurrent samples may overshoot the period by a few.
        if sketch::tick(&sketch::LOOKUP_TICKS)
            && self.samples.load(Ordering::Relaxed) & u64::from(u32::MAX) < self.period
        {
            self.samples
                .fetch_add(1 | (u64::from(hit) << 32), Ordering::Relaxed);
        }
    }
}

/// A sharded, bounded, in-memory cache whose hits take only a shared lock.
///
/// - **Bounded** by entry count ([`max_entries`](MemoryCacheBuilder::max_entries)) or by a
///   [weigher](MemoryCacheBuilder::weigher) (bytes, say). Each of its shards holds an equal
///   share of the bound, so the whole never exceeds it.
/// - **Scan-resistant**: newcomers enter a window (1 % of each shard at first, then sized by
///   hill climbing on the hit rate); to move on into the main space they must be more popular
///   than the entry they would displace, per a TinyLFU frequency sketch. A scan or a burst of one-hit wonders passes through the window
///   and leaves the hot set in place.
/// - **Hits never take an exclusive lock**: a read lock, a flag set on the entry and an
///   atomic count in the sketch. Recency is kept lazily: a flagged entry gets a second chance
///   when it reaches the eviction end.
/// - **Expiry**: a time to live per cache and per entry, and a time to idle. Expired entries
///   are never returned; they are removed when met, when they reach the eviction end, or by
///   [`run_pending_tasks`](Self::run_pending_tasks).
///
/// Cheap to clone: clones share the entries.
///
/// ```
/// use std::time::Duration;
/// use brisk_cache::MemoryCache;
///
/// let cache: MemoryCache<u64, String> = MemoryCache::builder()
///     .max_entries(10_000)
///     .ttl(Duration::from_secs(300))
///     .build()?;
/// cache.insert(42, "Ada".to_owned());
/// assert_eq!(cache.get(&42).as_deref(), Some("Ada"));
/// assert_eq!(cache.get(&7), None);
/// # Ok::<(), brisk_cache::Error>(())
/// ```
pub struct MemoryCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

struct Inner<K, V> {
    shards: Box<[Locked<K, V>]>,
    /// `shards.len() - 1`; the count is a power of two.
    shard_mask: u64,
    hasher: RandomState,
    /// The bound, split over the shards.
    capacity: u64,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Listener<K, V>>,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    /// The most of each TTL taken off at random (a fraction).
    ttl_jitter: f64,
    /// Whether any entry may expire (a TTL or TTI is set, or an entry was inserted with its
    /// own TTL): the background cleanup skips the scan while none can.
    expiring: AtomicBool,
    epoch: Instant,
    metrics: Metrics,
    /// Loads in flight, each answered with the write epoch it began at.
    flights: Flights<K, (V, crate::epochs::Epoch)>,
    /// Bumped by every insert and removal, so that a load that read its source before one
    /// does not store the old value after it (see `crate::epochs`).
    writes: crate::epochs::Epochs,
}

impl<K, V> Clone for MemoryCache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> fmt::Debug for MemoryCache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCache")
            .field("shards", &self.inner.shards.len())
            .field("capacity", &self.inner.capacity)
            .field("ttl", &self.inner.ttl)
            .field("tti", &self.inner.tti)
            .finish_non_exhaustive()
    }
}

/// Entries that left the cache while a shard was locked, told to the listener once it is not.
struct Departed<K, V>(Vec<(K, V, Cause)>);

impl<K, V> Departed<K, V> {
    fn new() -> Self {
        Self(Vec::new())
    }
}

impl<K, V> MemoryCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts configuring a cache.
    pub fn builder() -> MemoryCacheBuilder<K, V> {
        MemoryCacheBuilder {
            max_entries: None,
            max_weight: None,
            weigher: None,
            listener: None,
            ttl: None,
            tti: None,
            shards: None,
            metrics: Metrics::noop(),
            load_wait_timeout: None,
            cleanup_interval: None,
            ttl_jitter: 0.0,
        }
    }

    /// The value for `key`, if present and not expired. Takes only a shared lock.
    pub fn get(&self, key: &K) -> Option<V> {
        let value = self.lookup(key);
        let metrics = &self.inner.metrics;
        if metrics.enabled {
            if value.is_some() {
                metrics.hits.increment();
            } else {
                metrics.misses.increment();
            }
        }
        value
    }

    /// `get` without counting a hit or miss in the metrics.
    fn lookup(&self, key: &K) -> Option<V> {
        let hash = self.inner.hasher.hash_one(key);
        let shard = self.inner.read(hash);
        // Most hits are in the main space (the window is small, at first 1 % of the shard).
        let found = shard.main.peek(key).or_else(|| shard.window.peek(key));
        let mut expired = false;
        let mut counted = false;
        let value = found.and_then(|entry| {
            if entry.expires != u64::MAX || self.inner.tti.is_some() {
                let now = self.inner.now();
                if self.inner.expired(entry, now) {
                    expired = true;
                    return None;
                }
                if self.inner.tti.is_some() {
                    entry.touched.store(now, Ordering::Relaxed);
                }
            }
            // The first hit since the entry was last considered for eviction counts in the
            // sketch and sets the bit; later hits find the bit set and write nothing shared.
            if entry.referenced.load(Ordering::Relaxed) {
                counted = true;
            } else {
                entry.referenced.store(true, Ordering::Relaxed);
            }
            Some(entry.value.clone())
        });
        if !counted {
            shard.sketch.record(hash);
        }
        shard.climber.sample(value.is_some());
        drop(shard);
        if expired {
            self.remove_expired(key, hash);
        }
        value
    }

    /// Whether `key` is present and not expired, without counting an access.
    pub fn contains_key(&self, key: &K) -> bool {
        let hash = self.inner.hasher.hash_one(key);
        let shard = self.inner.read(hash);
        let now = self.inner.now();
        shard
            .window
            .peek(key)
            .or_else(|| shard.main.peek(key))
            .is_some_and(|entry| !self.inner.expired(entry, now))
    }

    /// Inserts `value` for `key` with the cache's time to live, replacing any value there.
    ///
    /// A newcomer may be refused (told to the listener as [`Cause::Size`]) when it is heavier
    /// than a shard can hold, or later, when it leaves the window less popular than the entry
    /// it would displace.
    pub fn insert(&self, key: K, value: V) {
        self.insert_entry(key, value, self.inner.ttl, true);
    }

    /// Inserts with its own time to live, which overrides the cache's.
    pub fn insert_with_ttl(&self, key: K, value: V, ttl: Duration) {
        if !self.inner.expiring.load(Ordering::Relaxed) {
            self.inner.expiring.store(true, Ordering::Relaxed);
        }
        self.insert_entry(key, value, Some(ttl), true);
    }

    /// Inserts as a load does: not counted as a write (see `crate::epochs`).
    pub(crate) fn insert_loaded(&self, key: K, value: V) {
        self.insert_entry(key, value, self.inner.ttl, false);
    }

    /// The write epoch of `key` now (see `crate::epochs`).
    pub(crate) fn write_epoch(&self, key: &K) -> crate::epochs::Epoch {
        self.inner
            .writes
            .read_hashed(self.inner.hasher.hash_one(key))
    }

    /// Whether a write of the key `epoch` was read for may have happened since.
    pub(crate) fn written_since(&self, epoch: crate::epochs::Epoch) -> bool {
        self.inner.writes.moved(epoch)
    }

    fn insert_entry(&self, key: K, value: V, ttl: Option<Duration>, write: bool) {
        let inner = &*self.inner;
        inner.metrics.inserts.increment();
        let weight = inner.weigh(&key, &value);
        // The clock is read only when some entry can expire.
        let now = if ttl.is_some() || inner.expiring.load(Ordering::Relaxed) {
            inner.now()
        } else {
            0
        };
        let expires = ttl.map_or(u64::MAX, |ttl| {
            let ttl = jitter::apply(ttl, inner.ttl_jitter);
            now.saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX))
        });
        let entry = Entry {
            value,
            weight,
            expires,
            touched: AtomicU64::new(now),
            referenced: AtomicBool::new(false),
        };
        let hash = inner.hasher.hash_one(&key);
        if write {
            inner.writes.bump_hashed(hash);
        }
        let mut departed = Departed::new();
        inner.update(inner.shard(hash), |shard| {
            if inner.weigher.is_some() {
                // A weight bound does not tell how many entries a shard holds: the sketch and
                // the climber follow the count (see `Sketch::fit`; growing the sketch is
                // amortised over the inserts that filled it). Hits never do this.
                let entries = (shard.window.len() + shard.main.len()) as u64 + 1;
                shard.sketch.fit(entries);
                shard.climber.fit(entries);
            }
            if shard.sketch.due() {
                shard.sketch.age();
            }
            shard.climb();
            if u64::from(weight) > shard.window_max.max(shard.main_max) {
                // Heavier than a shard can hold: refused, and the value it would have
                // replaced goes too (it is stale).
                if let Some(old) = shard.take(&key) {
                    departed.0.push((key.clone(), old.value, Cause::Replaced));
                }
                departed.0.push((key, entry.value, Cause::Size));
                inner.metrics.rejected.increment();
            } else if let Some(old) = shard.main.peek_mut(&key) {
                // An update keeps the entry in the main space, now most recent.
                shard.main_weight = shard.main_weight - u64::from(old.weight) + u64::from(weight);
                let old = std::mem::replace(old, entry);
                departed.0.push((key.clone(), old.value, Cause::Replaced));
                shard.main.promote(&key);
            } else {
                if let Some((old_key, old)) = shard.window.push(key, entry) {
                    shard.window_weight -= u64::from(old.weight);
                    departed.0.push((old_key, old.value, Cause::Replaced));
                }
                shard.window_weight += u64::from(weight);
            }
            inner.rebalance(shard, now, &mut departed);
        });
        inner.tell(departed);
    }

    /// Removes `key`, returning its value if it was present and not expired.
    pub fn remove(&self, key: &K) -> Option<V> {
        self.inner
            .writes
            .bump_hashed(self.inner.hasher.hash_one(key));
        self.take_loaded(key)
    }

    /// [`remove`](Self::remove), not counted as a write: a load taking back its value.
    pub(crate) fn take_loaded(&self, key: &K) -> Option<V> {
        let hash = self.inner.hasher.hash_one(key);
        let removed = self
            .inner
            .update(self.inner.shard(hash), |shard| shard.take(key));
        let entry = removed?;
        let now = self.inner.now();
        if self.inner.expired(&entry, now) {
            self.inner
                .tell(Departed(vec![(key.clone(), entry.value, Cause::Expired)]));
            return None;
        }
        let value = entry.value.clone();
        self.inner
            .tell(Departed(vec![(key.clone(), entry.value, Cause::Removed)]));
        Some(value)
    }

    fn remove_expired(&self, key: &K, hash: u64) {
        let now = self.inner.now();
        let removed = self.inner.update(self.inner.shard(hash), |shard| {
            // Look again: it may have been replaced since the read lock was released.
            let still_expired = shard
                .window
                .peek(key)
                .or_else(|| shard.main.peek(key))
                .is_some_and(|entry| self.inner.expired(entry, now));
            if still_expired { shard.take(key) } else { None }
        });
        if let Some(entry) = removed {
            self.inner
                .tell(Departed(vec![(key.clone(), entry.value, Cause::Expired)]));
        }
    }

    /// Removes every entry (each told to the listener as [`Cause::Removed`]).
    pub fn invalidate_all(&self) {
        self.invalidate_if(|_, _| true);
    }

    /// Removes every entry for which `predicate` returns true, one shard at a time. Expired
    /// entries met on the way are removed too.
    pub fn invalidate_if(&self, mut predicate: impl FnMut(&K, &V) -> bool) {
        self.inner.writes.bump_all();
        for shard in &self.inner.shards {
            self.inner.sweep(shard, &mut predicate);
        }
    }

    /// Removes expired entries now, one shard at a time; without it they are removed when
    /// met, when they reach the eviction end, or by the
    /// [background cleanup](MemoryCacheBuilder::cleanup_interval).
    pub fn run_pending_tasks(&self) {
        // No write: loads under way may store.
        for shard in &self.inner.shards {
            self.inner.sweep(shard, &mut |_, _| false);
        }
    }

    /// Entries held, expired ones not yet removed included.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| {
                let shard = read(shard);
                shard.window.len() + shard.main.len()
            })
            .sum()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The total weight held (the entry count without a weigher).
    pub fn weighted_size(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|shard| {
                let shard = read(shard);
                shard.window_weight + shard.main_weight
            })
            .sum()
    }

    /// The most weight (or entries) the cache holds: the configured bound.
    pub fn capacity(&self) -> u64 {
        self.inner.capacity
    }

    /// The time to live entries get when inserted without their own, if any.
    pub fn ttl(&self) -> Option<Duration> {
        self.inner.ttl
    }

    /// The live entries, a shard at a time: each shard is copied under its read lock, so
    /// iterating holds no lock and sees each shard as it was when reached.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            cache: self,
            next_shard: 0,
            buffered: Vec::new().into_iter(),
        }
    }
}

/// The iterator of [`MemoryCache::iter`].
pub struct Iter<'a, K, V> {
    cache: &'a MemoryCache<K, V>,
    next_shard: usize,
    buffered: std::vec::IntoIter<(K, V)>,
}

impl<K, V> fmt::Debug for Iter<'_, K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter")
            .field("next_shard", &self.next_shard)
            .finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Iterator for Iter<'_, K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            if let Some(item) = self.buffered.next() {
                return Some(item);
            }
            let inner = &*self.cache.inner;
            let shard = inner.shards.get(self.next_shard)?;
            self.next_shard += 1;
            let now = inner.now();
            let shard = read(shard);
            let live: Vec<(K, V)> = shard
                .window
                .iter()
                .chain(shard.main.iter())
                .filter(|(_, entry)| !inner.expired(entry, now))
                .map(|(key, entry)| (key.clone(), entry.value.clone()))
                .collect();
            self.buffered = live.into_iter();
        }
    }
}

impl<K: Hash + Eq, V> Shard<K, V> {
    /// Moves the window size one step, once per sample period (see [`Climber`]). The next
    /// rebalance moves what no longer fits.
    fn climb(&mut self) {
        let climber = &mut self.climber;
        let samples = *climber.samples.get_mut();
        let (lookups, hits) = (samples & u64::from(u32::MAX), samples >> 32);
        if lookups < climber.period || self.max < 2 {
            return;
        }
        if !climber.warm {
            // While the shard fills, the hit rate rises whatever the window, and a climb would
            // take the warm-up for an improvement (on the loop trace that grew the window to
            // 13 % and cost 3.5 points). Start once it is half full, as Caffeine does.
            *climber.samples.get_mut() = 0;
            climber.warm = self.window_weight + self.main_weight >= self.max / 2;
            return;
        }
        let rate = hits as f64 / lookups as f64;
        *climber.samples.get_mut() = 0;
        let change = rate - climber.previous_rate;
        climber.previous_rate = rate;
        // The rate is estimated from samples: a change within two standard errors is noise,
        // and the window holds still (a random walk would drift it away from a good size).
        let noise = 2.0 * (rate * (1.0 - rate) / lookups as f64).sqrt();
        if change.abs() < noise {
            climber.step *= STEP_DECAY;
            return;
        }
        let amount = if change >= 0.0 {
            climber.step
        } else {
            -climber.step
        };
        climber.step = if change.abs() >= RESTART_THRESHOLD {
            INITIAL_STEP * self.max as f64 * amount.signum()
        } else {
            amount * STEP_DECAY
        };
        // Between 1 % of the shard (at least one entry's worth) and all but one.
        let least = (self.max / 100).max(1);
        let window = (self.window_max as f64 + amount).clamp(least as f64, (self.max - 1) as f64);
        self.window_max = window as u64;
        self.main_max = self.max - self.window_max;
    }

    /// Entries and weight held.
    fn size(&self) -> (u64, u64) {
        (
            (self.window.len() + self.main.len()) as u64,
            self.window_weight + self.main_weight,
        )
    }

    fn take(&mut self, key: &K) -> Option<Entry<V>> {
        if let Some(entry) = self.window.pop(key) {
            self.window_weight -= u64::from(entry.weight);
            return Some(entry);
        }
        let entry = self.main.pop(key)?;
        self.main_weight -= u64::from(entry.weight);
        Some(entry)
    }
}

impl<K: Hash + Eq + Clone, V> Inner<K, V> {
    fn read(&self, hash: u64) -> RwLockReadGuard<'_, Shard<K, V>> {
        read(self.shard(hash))
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<K, V>> {
        &self.shards[self.shard_of(hash)]
    }

    /// Runs `change` under the shard's write lock, and moves the entry and weight gauges by
    /// what it changed.
    fn update<R>(
        &self,
        shard: &RwLock<Shard<K, V>>,
        change: impl FnOnce(&mut Shard<K, V>) -> R,
    ) -> R {
        let mut shard = write(shard);
        if !self.metrics.enabled {
            return change(&mut shard);
        }
        let (entries, weight) = shard.size();
        let outcome = change(&mut shard);
        let (entries_after, weight_after) = shard.size();
        drop(shard);
        let delta = |after: u64, before: u64| after.wrapping_sub(before) as i64;
        self.metrics.entries.add(delta(entries_after, entries));
        self.metrics.weight.add(delta(weight_after, weight));
        outcome
    }

    /// Removes from one shard every expired entry and every entry `predicate` picks.
    fn sweep(&self, shard: &RwLock<Shard<K, V>>, predicate: &mut impl FnMut(&K, &V) -> bool) {
        let now = self.now();
        let mut departed = Departed::new();
        self.update(shard, |shard| {
            for (space, weight) in [
                (&mut shard.window, &mut shard.window_weight),
                (&mut shard.main, &mut shard.main_weight),
            ] {
                let doomed: Vec<(K, Cause)> = space
                    .iter()
                    .filter_map(|(key, entry)| {
                        if self.expired(entry, now) {
                            Some((key.clone(), Cause::Expired))
                        } else if predicate(key, &entry.value) {
                            Some((key.clone(), Cause::Removed))
                        } else {
                            None
                        }
                    })
                    .collect();
                for (key, cause) in doomed {
                    if let Some(entry) = space.pop(&key) {
                        *weight -= u64::from(entry.weight);
                        departed.0.push((key, entry.value, cause));
                    }
                }
            }
        });
        self.tell(departed);
    }

    fn shard_of(&self, hash: u64) -> usize {
        // The high bits pick the shard; the maps and the sketch mix the whole hash.
        ((hash >> 40) & self.shard_mask) as usize
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn expired(&self, entry: &Entry<V>, now: u64) -> bool {
        if now >= entry.expires {
            return true;
        }
        self.tti.is_some_and(|tti| {
            now.saturating_sub(entry.touched.load(Ordering::Relaxed))
                >= u64::try_from(tti.as_nanos()).unwrap_or(u64::MAX)
        })
    }

    fn weigh(&self, key: &K, value: &V) -> u32 {
        self.weigher.as_ref().map_or(1, |weigh| weigh(key, value))
    }

    /// Moves what overflows the window into the main space, through admission, and evicts
    /// from the main space what no longer fits (after an update made an entry heavier).
    fn rebalance(&self, shard: &mut Shard<K, V>, now: u64, departed: &mut Departed<K, V>) {
        while shard.window_weight > shard.window_max {
            let Some((key, entry)) = shard.window.pop_lru() else {
                break;
            };
            shard.window_weight -= u64::from(entry.weight);
            if self.expired(&entry, now) {
                departed.0.push((key, entry.value, Cause::Expired));
                continue;
            }
            self.admit(shard, key, entry, now, departed);
        }
        while shard.main_weight > shard.main_max {
            let Some((key, entry)) = shard.main.pop_lru() else {
                break;
            };
            shard.main_weight -= u64::from(entry.weight);
            let cause = if self.expired(&entry, now) {
                Cause::Expired
            } else {
                Cause::Size
            };
            departed.0.push((key, entry.value, cause));
        }
    }

    /// Moves a candidate from the window into the main space if it fits, or if it is more
    /// popular than each entry it would displace; otherwise it is evicted.
    fn admit(
        &self,
        shard: &mut Shard<K, V>,
        key: K,
        entry: Entry<V>,
        now: u64,
        departed: &mut Departed<K, V>,
    ) {
        let weight = u64::from(entry.weight);
        let candidate = shard.sketch.frequency(self.hasher.hash_one(&key));
        // Second chances are bounded, so a space whose entries are all referenced cannot loop.
        let mut chances = shard.main.len();
        while shard.main_weight + weight > shard.main_max {
            let Some((victim_key, victim)) = shard.main.peek_lru() else {
                // Nothing left to displace and still no room: the candidate cannot stay.
                departed.0.push((key, entry.value, Cause::Size));
                self.metrics.rejected.increment();
                return;
            };
            let expired = self.expired(victim, now);
            let second_chance =
                !expired && chances > 0 && victim.referenced.swap(false, Ordering::Relaxed);
            let victim_hash = self.hasher.hash_one(victim_key);
            if second_chance {
                chances -= 1;
                let victim_key = victim_key.clone();
                shard.main.promote(&victim_key);
                continue;
            }
            if !expired && candidate <= shard.sketch.frequency(victim_hash) {
                departed.0.push((key, entry.value, Cause::Size));
                self.metrics.rejected.increment();
                return;
            }
            let Some((victim_key, victim)) = shard.main.pop_lru() else {
                break;
            };
            shard.main_weight -= u64::from(victim.weight);
            let cause = if expired { Cause::Expired } else { Cause::Size };
            departed.0.push((victim_key, victim.value, cause));
        }
        shard.main_weight += weight;
        shard.main.push(key, entry);
    }

    fn tell(&self, departed: Departed<K, V>) {
        if self.metrics.enabled {
            for (_, _, cause) in &departed.0 {
                self.metrics.evicted(*cause);
            }
        }
        if let Some(listener) = &self.listener {
            for (key, value, cause) in departed.0 {
                listener(key, value, cause);
            }
        }
    }
}

/// The background cleanup: every `interval`, removes the expired entries of each shard in
/// turn, yielding between shards. Holds the cache only while it sweeps, and ends once the
/// cache is dropped.
async fn cleanup<K, V>(cache: Weak<Inner<K, V>>, interval: Duration)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let shards = match cache.upgrade() {
            Some(inner) if inner.expiring.load(Ordering::Relaxed) => inner.shards.len(),
            Some(_) => continue,
            None => return,
        };
        for index in 0..shards {
            let Some(inner) = cache.upgrade() else {
                return;
            };
            inner.sweep(&inner.shards[index], &mut |_, _| false);
            drop(inner);
            tokio::task::yield_now().await;
        }
    }
}

/// A shard behind its lock, on lines of its own.
type Locked<K, V> = Padded<RwLock<Shard<K, V>>>;

/// A shard on cache lines of its own, so that taking one shard's lock does not slow readers
/// of its neighbours (128 bytes: adjacent-line prefetchers fetch lines in pairs).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Shards stay consistent if a listener or weigher panics elsewhere: recover the guard.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Configures a [`MemoryCache`]; from [`MemoryCache::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct MemoryCacheBuilder<K, V> {
    max_entries: Option<u64>,
    max_weight: Option<u64>,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Listener<K, V>>,
    ttl: Option<Duration>,
    tti: Option<Duration>,
    shards: Option<usize>,
    metrics: Metrics,
    load_wait_timeout: Option<Duration>,
    cleanup_interval: Option<Duration>,
    ttl_jitter: f64,
}

impl<K, V> fmt::Debug for MemoryCacheBuilder<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryCacheBuilder")
            .field("max_entries", &self.max_entries)
            .field("max_weight", &self.max_weight)
            .field("weigher", &self.weigher.is_some())
            .field("eviction_listener", &self.listener.is_some())
            .field("ttl", &self.ttl)
            .field("tti", &self.tti)
            .field("shards", &self.shards)
            .field("metrics", &self.metrics.enabled)
            .field("load_wait_timeout", &self.load_wait_timeout)
            .field("cleanup_interval", &self.cleanup_interval)
            .field("ttl_jitter", &self.ttl_jitter)
            .finish()
    }
}

impl<K, V> MemoryCacheBuilder<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Holds at most this many entries. One of `max_entries` or `max_weight` is required.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.max_entries = Some(entries);
        self
    }

    /// Holds at most this much weight, as the [`weigher`](Self::weigher) counts it.
    ///
    /// Nothing is sized per unit of weight: each shard's frequency sketch starts at 128 bytes
    /// and grows with the entries it holds (8 bytes an entry, at most 8 MiB a shard), so an
    /// empty cache costs the same whatever its bound.
    pub fn max_weight(mut self, weight: u64) -> Self {
        self.max_weight = Some(weight);
        self
    }

    /// How much an entry weighs (bytes, say); required with `max_weight`. An entry heavier
    /// than one shard's share of `max_weight` is refused.
    pub fn weigher(mut self, weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static) -> Self {
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// Called with each entry that leaves the cache and why, after the shard's lock is
    /// released, on the thread that caused it.
    pub fn eviction_listener(
        mut self,
        listener: impl Fn(K, V, Cause) + Send + Sync + 'static,
    ) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Entries expire this long after they are written. Default: never.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Shortens every time to live (the cache's and each insert's own) by a random part of up
    /// to `fraction` of it, so that entries written together do not expire together.
    /// Default: 0 (none); 0.1 is a common choice.
    pub fn ttl_jitter(mut self, fraction: f64) -> Self {
        self.ttl_jitter = fraction;
        self
    }

    /// Entries expire this long after they were last read or written. Default: never.
    pub fn tti(mut self, tti: Duration) -> Self {
        self.tti = Some(tti);
        self
    }

    /// How many shards (rounded up to a power of two). Default: four per core, fewer for
    /// small caches so that each shard holds at least 64 entries' worth.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Reports to `recorder`, each series labelled `name="<name>"`:
    /// `brisk_cache_hits_total`, `brisk_cache_misses_total`, `brisk_cache_inserts_total`,
    /// `brisk_cache_admissions_rejected_total`, `brisk_cache_evictions_total` (with a `cause`
    /// label: `expired`, `size`, `replaced`, `removed`), `brisk_cache_load_duration_seconds`,
    /// `brisk_cache_load_failures_total`, and the gauges `brisk_cache_entries` and
    /// `brisk_cache_weight`. Default: none (a hit then counts nothing).
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// How long a [`get_with`](MemoryCache::get_with) or
    /// [`try_get_with`](MemoryCache::try_get_with) caller waits for the load another caller
    /// runs for the same key before it gives up with [`Error::LoadWaitTimeout`]; the load goes
    /// on for the others. Default: no limit. Needs tokio's time driver.
    pub fn load_wait_timeout(mut self, timeout: Duration) -> Self {
        self.load_wait_timeout = Some(timeout);
        self
    }

    /// Removes expired entries in the background every `interval`, one shard at a time,
    /// so that memory held by entries nobody reads again is freed without waiting for them
    /// to reach the eviction end. The task runs on the tokio runtime `build` is called in
    /// and ends when the last clone of the cache is dropped. Default: off (expired entries
    /// are removed when met, at the eviction end, or by
    /// [`run_pending_tasks`](MemoryCache::run_pending_tasks)).
    pub fn cleanup_interval(mut self, interval: Duration) -> Self {
        self.cleanup_interval = Some(interval);
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    /// [`Error::Config`] for a missing or zero bound, both bounds at once, a weigher without
    /// `max_weight` or the reverse, a zero duration, zero shards, or a `cleanup_interval`
    /// outside a tokio runtime.
    pub fn build(self) -> Result<MemoryCache<K, V>> {
        let config = |setting: &'static str, value: String, reason: &'static str| Error::Config {
            setting,
            value,
            reason,
        };
        let max = match (self.max_entries, self.max_weight) {
            (Some(_), Some(_)) => {
                return Err(config(
                    "max_weight",
                    format!("{:?}", self.max_weight),
                    "set max_entries or max_weight, not both",
                ));
            }
            (None, None) => {
                return Err(config(
                    "max_entries",
                    "none".into(),
                    "a bound is required: max_entries or max_weight",
                ));
            }
            (Some(0), None) => return Err(config("max_entries", "0".into(), "must be at least 1")),
            (None, Some(0)) => return Err(config("max_weight", "0".into(), "must be at least 1")),
            (Some(entries), None) => {
                if self.weigher.is_some() {
                    return Err(config(
                        "weigher",
                        "set".into(),
                        "a weigher needs max_weight, not max_entries",
                    ));
                }
                entries
            }
            (None, Some(weight)) => {
                if self.weigher.is_none() {
                    return Err(config("max_weight", weight.to_string(), "needs a weigher"));
                }
                weight
            }
        };
        let ttl_jitter = jitter::check(self.ttl_jitter)?;
        for (setting, duration) in [
            ("ttl", self.ttl),
            ("tti", self.tti),
            ("load_wait_timeout", self.load_wait_timeout),
            ("cleanup_interval", self.cleanup_interval),
        ] {
            if duration == Some(Duration::ZERO) {
                return Err(config(setting, "0s".into(), "must be longer than zero"));
            }
        }
        let shards = match self.shards {
            Some(0) => return Err(config("shards", "0".into(), "must be at least 1")),
            Some(shards) => shards.next_power_of_two(),
            None => {
                let cores = std::thread::available_parallelism().map_or(4, NonZeroUsize::get);
                let by_size = usize::try_from(max / 64).unwrap_or(usize::MAX).max(1);
                (cores * 4).min(by_size).next_power_of_two()
            }
        };
        let count = shards.min(1 << 16) as u64;
        if count > max {
            return Err(config(
                "shards",
                count.to_string(),
                "must not exceed the bound: each shard holds at least one entry",
            ));
        }
        let hasher = RandomState::new();
        let shards: Box<[Locked<K, V>]> = (0..count)
            .map(|index| {
                // The bound split evenly, the remainder one each to the first shards.
                let max = max / count + u64::from(index < max % count);
                // The window is 1 % of a shard, at least one entry's worth (W-TinyLFU).
                let window_max = if max >= 2 { (max / 100).max(1) } else { max };
                // Entry-bounded: the sketch and the climber's period are sized for the bound
                // once. Weight-bounded: sized per unit of weight they would take 8 bytes per
                // byte of bound (512 MiB for an empty 64 MiB cache on 64 shards) and age too
                // rarely to follow anything; they start small and follow the entry count,
                // the sketch up to a million entries a shard (8 MiB), and never past the
                // weight bound (entries weigh at least one, zero-weight ones aside).
                let (sketch, climber) = if self.weigher.is_some() {
                    (Sketch::growing(max.min(1 << 20)), Climber::new(0, max))
                } else {
                    (Sketch::new(max), Climber::new(max, max))
                };
                Padded(RwLock::new(Shard {
                    window: LruCache::unbounded_with_hasher(hasher.clone()),
                    main: LruCache::unbounded_with_hasher(hasher.clone()),
                    window_weight: 0,
                    main_weight: 0,
                    max,
                    window_max,
                    main_max: max - window_max,
                    sketch,
                    climber,
                }))
            })
            .collect();
        let runtime = match self.cleanup_interval {
            Some(interval) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => Some((runtime, interval)),
                Err(_) => {
                    return Err(config(
                        "cleanup_interval",
                        format!("{interval:?}"),
                        "the background cleanup needs a tokio runtime: build the cache inside one",
                    ));
                }
            },
            None => None,
        };
        let mut flights = SingleFlight::builder().shards(count.min(64) as usize);
        if let Some(timeout) = self.load_wait_timeout {
            flights = flights.wait_timeout(timeout);
        }
        let inner = Arc::new(Inner {
            shard_mask: count - 1,
            shards,
            hasher,
            capacity: max,
            weigher: self.weigher,
            listener: self.listener,
            ttl: self.ttl,
            tti: self.tti,
            ttl_jitter,
            expiring: AtomicBool::new(self.ttl.is_some() || self.tti.is_some()),
            epoch: Instant::now(),
            metrics: self.metrics,
            flights: flights
                .build()
                .expect("1 to 64 shards are a valid single-flight group"),
            writes: crate::epochs::Epochs::new(),
        });
        if let Some((runtime, interval)) = runtime {
            runtime.spawn(cleanup(Arc::downgrade(&inner), interval));
        }
        Ok(MemoryCache { inner })
    }
}

impl<K, V> Cache<K, V> for MemoryCache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    async fn get(&self, key: &K) -> Result<Option<V>> {
        Ok(MemoryCache::get(self, key))
    }

    async fn insert(&self, key: K, value: V, ttl: Option<Duration>) -> Result<()> {
        match ttl {
            Some(ttl) => self.insert_with_ttl(key, value, ttl),
            None => MemoryCache::insert(self, key, value),
        }
        Ok(())
    }

    async fn remove(&self, key: &K) -> Result<()> {
        MemoryCache::remove(self, key);
        Ok(())
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        Ok(keys.iter().map(|key| MemoryCache::get(self, key)).collect())
    }

    async fn insert_many(&self, entries: Vec<(K, V)>, ttl: Option<Duration>) -> Result<()> {
        for (key, value) in entries {
            Cache::insert(self, key, value, ttl).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window_of(cache: &MemoryCache<u64, u64>) -> u64 {
        read(&cache.inner.shards[0]).window_max
    }

    fn read_through(cache: &MemoryCache<u64, u64>, key: u64) {
        if cache.get(&key).is_none() {
            cache.insert(key, key);
        }
    }

    /// One period's sampled lookups at `rate`, then a climb; returns the window size.
    fn feed(cache: &MemoryCache<u64, u64>, rate: f64) -> u64 {
        let mut shard = write(&cache.inner.shards[0]);
        let lookups = shard.climber.period;
        *shard.climber.samples.get_mut() = lookups | ((lookups as f64 * rate) as u64) << 32;
        shard.climb();
        assert_eq!(shard.window_max + shard.main_max, 1000);
        shard.window_max
    }

    /// [`feed`] to a climber past its warm-up.
    fn period_at(cache: &MemoryCache<u64, u64>, rate: f64) -> u64 {
        write(&cache.inner.shards[0]).climber.warm = true;
        feed(cache, rate)
    }

    fn sketch_bytes<K, V>(cache: &MemoryCache<K, V>) -> usize {
        cache
            .inner
            .shards
            .iter()
            .map(|shard| read(shard).sketch.bytes())
            .sum()
    }

    /// A weight bound sizes nothing per unit of weight: an empty 64 MiB cache on 64 shards
    /// has two blocks of sketch a shard (it had 8 MiB a shard), and the sketch grows with the
    /// entries held, up to the weight bound when entries weigh nothing.
    #[test]
    fn a_weighted_cache_sizes_its_sketch_by_its_entries() {
        let cache: MemoryCache<u64, u64> = MemoryCache::builder()
            .max_weight(64 << 20)
            .weigher(|_, _| 1024)
            .shards(64)
            .build()
            .unwrap();
        assert_eq!(sketch_bytes(&cache), 64 * 16 * 8);
        for key in 0..64_000 {
            cache.insert(key, key);
        }
        // About 1 000 entries a shard: a 1 024- or 2 048-word sketch each.
        let bytes = sketch_bytes(&cache);
        assert!((64 * 1024 * 8..=64 * 2048 * 8).contains(&bytes), "{bytes}");
        let shard = read(&cache.inner.shards[0]);
        let entries = (shard.window.len() + shard.main.len()) as u64;
        // Fitted at the shard's last insert, to its count with the newcomer; the insert may
        // then have evicted one.
        let fitted = shard.climber.period;
        assert!(
            (period(entries)..=period(entries + 1)).contains(&fitted),
            "period {fitted} for {entries} entries"
        );
        drop(shard);

        let weightless: MemoryCache<u64, u64> = MemoryCache::builder()
            .max_weight(1000)
            .weigher(|_, _| 0)
            .shards(1)
            .build()
            .unwrap();
        for key in 0..5000 {
            weightless.insert(key, key);
        }
        assert_eq!(weightless.len(), 5000);
        assert_eq!(
            sketch_bytes(&weightless),
            1024 * 8,
            "bounded by the weight bound"
        );
    }

    /// An entry-bounded cache sizes its sketch for the bound at once, as before.
    #[test]
    fn an_entry_bounded_cache_sizes_its_sketch_once() {
        let cache: MemoryCache<u64, u64> = MemoryCache::builder()
            .max_entries(4000)
            .shards(1)
            .build()
            .unwrap();
        assert_eq!(sketch_bytes(&cache), 4096 * 8);
        assert_eq!(read(&cache.inner.shards[0]).climber.period, period(4000));
    }

    /// While the shard fills, its hit rate rises whatever the window: the climber waits until
    /// it is half full.
    #[test]
    fn the_climber_waits_for_the_shard_to_fill() {
        let cache: MemoryCache<u64, u64> = MemoryCache::builder()
            .max_entries(1000)
            .shards(1)
            .build()
            .unwrap();
        let fed = |rate: f64| feed(&cache, rate);
        for rate in [0.1, 0.3, 0.5, 0.7] {
            assert_eq!(fed(rate), 10, "climbed while empty");
        }
        for key in 0..500 {
            cache.insert(key, key);
        }
        // Half full: the next period finds it warm, the one after climbs.
        assert_eq!(fed(0.5), 10);
        assert_eq!(fed(0.6), 72);
    }

    /// The climber's decisions, on hit rates fed to it directly: keep going while the rate
    /// improves, turn back when it falls, hold still within the noise, stay within bounds.
    #[test]
    fn the_climber_follows_the_hit_rate() {
        let cache: MemoryCache<u64, u64> = MemoryCache::builder()
            .max_entries(1000)
            .shards(1)
            .build()
            .unwrap();
        assert_eq!(window_of(&cache), 10);
        // The first period always improves on "nothing": grow by 6.25 %.
        let first = period_at(&cache, 0.50);
        assert_eq!(first, 72);
        // Within two standard errors (about 2.8 points at 1250 samples): hold still.
        assert_eq!(period_at(&cache, 0.51), first);
        // Better: the same way again.
        let second = period_at(&cache, 0.60);
        assert!(second > first, "{second} after {first}");
        // Worse: turn back.
        let third = period_at(&cache, 0.55);
        assert!(third < second, "{third} after {second}");
        // Worse again after shrinking: turn back once more (grow).
        let fourth = period_at(&cache, 0.45);
        assert!(fourth > third, "{fourth} after {third}");
        // However long it shrinks, the window keeps 1 % of the shard...
        let mut rate = 0.9;
        for _ in 0..100 {
            period_at(&cache, rate);
            rate = if rate > 0.5 { 0.1 } else { 0.9 };
        }
        let window = window_of(&cache);
        assert!((10..=999).contains(&window), "{window}");
    }

    /// A working set that keeps moving rewards recency: on a real workload the climber grows
    /// the window from its first 1 % (how far varies with the sampled noise).
    #[test]
    fn the_window_grows_for_recency() {
        let moving: MemoryCache<u64, u64> = MemoryCache::builder()
            .max_entries(1000)
            .shards(1)
            .build()
            .unwrap();
        assert_eq!(window_of(&moving), 10);
        let mut seed = 1u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for n in 0..400_000u64 {
            // New keys appear at a frontier that moves one key every 4 accesses; accesses
            // fall at a geometric distance behind it (mean 600 keys): popularity is recency,
            // and a new key is the most likely to be read again soon.
            let unit = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let distance = (-(1.0 - unit).ln() * 600.0) as u64;
            read_through(&moving, (n / 4).saturating_sub(distance));
        }
        let grown = window_of(&moving);
        assert!(grown >= 30, "window {grown} of 1000");
        let shard = read(&moving.inner.shards[0]);
        assert_eq!(shard.window_max + shard.main_max, 1000);
        assert!(shard.window_weight <= shard.window_max && shard.main_weight <= shard.main_max);
    }
}
