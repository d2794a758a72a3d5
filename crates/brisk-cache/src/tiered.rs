//! [`Tiered`]: a memory level in front of a remote one, and a loader behind both.

use std::{
    any::TypeId,
    collections::HashMap,
    convert::Infallible,
    fmt,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use brisk_dedup::SingleFlight;
use brisk_metrics::{Counter, Histogram, Recorder, Unit};

use crate::metrics::Series;
use crate::{
    Cache, Error, MemoryCache, NoRemote, Remote, Result, WithTtl, WriteFence,
    epochs::{Epoch, Epochs},
    flight::{self, Flights, LoadTimedOut, LoadedElsewhere, SharedError},
    fresh::{self, Clock, Freshness, Now, Stamped},
    jitter,
    recovery::{self, Intent, Recovery, RecoveryMetrics, Work},
};

/// Memory (L1) in front of a remote level (L2, e.g. `RedisCache`), read through to a loader:
/// L1 → L2 → load.
///
/// - **An L2 hit fills L1** with a time to live no longer than the entry has left in L2 (read
///   in the same round trip) nor than L1's own: L1 never serves a value L2 has expired.
/// - **`get_many`** answers L1's hits and fetches the rest from L2 in one round trip.
/// - **Writes and removals reach both levels**, L2 first.
/// - **Either level may be absent**: memory alone (the embedded default, with [`NoRemote`]) or
///   the remote level alone.
/// - **[`try_get_with`](Self::try_get_with)** runs one load per key in this process however
///   many callers miss it, and keeps serving when L2 fails: an L2 error on the way counts in
///   `brisk_cache_tiered_remote_errors_total` and the load goes on, its value kept in L1.
///
/// The [`Cache`] methods report L2 errors to the caller; `try_get_with`/`get_with` do not.
///
/// # Freshness
/// Each level holds a [`Stamped`] value: the value, when it goes stale, and how long its load
/// took. The stamp travels through Redis, so every instance agrees on it. With
/// [`fresh_for`](TieredBuilder::fresh_for) a value goes stale before it expires, and
/// `try_get_with` can keep answering from it while the source is slow or down:
/// - **early refresh** ([`early_refresh`](TieredBuilder::early_refresh), XFetch): a reader
///   shortly before expiry refreshes the value in the background, with a probability that
///   grows with the value's load time, so hot keys rarely miss at all;
/// - **stale-while-revalidate**: a stale value is answered at once while one refresh runs
///   behind it;
/// - **soft and hard load timeouts**: past the soft one a stale value is answered and the
///   load finishes behind; past the hard one the caller gets [`Error::LoadTimeout`] (the
///   load still finishes behind and stores its value);
/// - **fail-safe**: a failed or timed-out load answers the stale value, up to a maximum age,
///   and that value is then served for the [throttle](TieredBuilder::fail_safe_throttle)
///   before the source is asked again.
///
/// The [`Cache`] methods answer fresh values only.
///
/// ```
/// use brisk_cache::{Cache, MemoryCache, Stamped, Tiered};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The levels hold stamped values (the value and its freshness).
/// let memory: MemoryCache<u64, Stamped<String>> =
///     MemoryCache::builder().max_entries(10_000).build()?;
/// // Memory alone; with the `redis` feature: `.remote(redis_cache)`.
/// let cache = Tiered::builder().memory(memory).build()?;
/// let name = cache.get_with(42, || async { "Ada".to_owned() }).await?;
/// assert_eq!(cache.get(&42).await?.as_deref(), Some(name.as_str()));
/// # Ok(())
/// # }
/// ```
///
/// # Cache-aside
/// Where the application decides when to read the database and when to fill the cache (a
/// value computed from several queries, or written in the same transaction as the row), the
/// [`Cache`] methods are the cache-aside helpers: look, load on a miss, store; and on a write,
/// update the database, then remove (or overwrite) the cached value.
///
/// ```
/// use std::collections::HashMap;
/// use brisk_cache::{Cache, MemoryCache, Tiered};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut table = HashMap::from([(1u64, "kettle".to_owned())]); // the database
/// let cache = Tiered::builder()
///     .memory(MemoryCache::builder().max_entries(1000).build()?)
///     .build()?;
///
/// // Read: the cache first, the table on a miss, then fill the cache.
/// let name = match cache.get(&1).await? {
///     Some(name) => name,
///     None => {
///         let name = table[&1].clone();
///         cache.insert(1, name.clone(), None).await?;
///         name
///     }
/// };
/// assert_eq!(name, "kettle");
///
/// // Write: the table first, then drop the cached copy so the next read loads the new row.
/// table.insert(1, "teapot".to_owned());
/// cache.remove(&1).await?;
/// assert_eq!(cache.get(&1).await?, None);
/// # Ok(())
/// # }
/// ```
pub struct Tiered<K, V, R = NoRemote> {
    inner: Arc<Inner<K, V, R>>,
}

/// What a backplane tells the cache it serves.
// Sent by the Redis backplane only.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) enum Event<K> {
    /// Another instance wrote or removed these keys.
    Changed(Vec<K>),
    /// Another instance removed every key this matches (a prefix).
    Matching(Box<dyn Fn(&K) -> bool + Send + Sync>),
    /// Messages may have been missed: every value in memory may be out of date.
    Gap,
}

impl<K> fmt::Debug for Event<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Changed(keys) => write!(f, "Changed({} keys)", keys.len()),
            Event::Matching(_) => f.write_str("Matching"),
            Event::Gap => f.write_str("Gap"),
        }
    }
}

/// Where a backplane's events go: a tiered cache's memory level.
pub(crate) type Sink<K> = Box<dyn Fn(Event<K>) + Send + Sync>;

/// A single-flight across instances as a tiered cache sees it (brisk-dedup's `RedisFlight`
/// with feature `redis`): runs `work` in one instance at a time per key, and tells the others
/// when it finished.
pub(crate) trait Across: Send + Sync {
    fn run<'a>(
        &'a self,
        key: &'a str,
        work: Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), brisk_dedup::Error<String>>> + Send + 'a>>;
}

/// Loads coordinated across instances, and the text a key is known by there.
struct Shared<K> {
    flight: Box<dyn Across>,
    name: Box<dyn Fn(&K) -> String + Send + Sync>,
}

/// Why a load gave no value.
enum Failure<E> {
    /// The loader, here.
    Here(E),
    /// Another instance's load, whose error arrives as text.
    Elsewhere(String),
}

impl<E: 'static> Failure<E> {
    /// Whether this is a failure: counted, and answered by a stale value within fail-safe.
    fn counts(&self) -> bool {
        match self {
            Failure::Here(error) => is_failure(error),
            Failure::Elsewhere(_) => true,
        }
    }
}

/// A loader's error that tells its value is not to be cached (the HTTP response cache's
/// loader, for a response it may not store), or that it failed (`failed`). Only a failure is
/// counted and answered by a stale value within fail-safe.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // Returned by the response cache only.
#[derive(Debug)]
pub(crate) struct NotStored {
    pub(crate) failed: bool,
}

/// [`NotStored`] from a loader whose loads are kept apart from the others' of the same key
/// (loads are single-flighted per key and error type): the response cache's loads for
/// requests carrying credentials, so that one never leads the load other users wait for.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // Returned by the response cache only.
#[derive(Debug)]
pub(crate) struct NotStoredApart(pub(crate) NotStored);

/// Whether a loader's error is a failure: every error but a [`NotStored`] (or
/// [`NotStoredApart`]) that did not fail.
fn is_failure<E: 'static>(error: &E) -> bool {
    let error = error as &dyn std::any::Any;
    let not_stored = error
        .downcast_ref::<NotStored>()
        .or_else(|| error.downcast_ref::<NotStoredApart>().map(|apart| &apart.0));
    not_stored.is_none_or(|not_stored| not_stored.failed)
}

/// A backplane as a tiered cache sees it (the Redis one with feature `redis`).
pub(crate) trait Link<K>: Send + Sync {
    /// Sends events to `sink` from now on.
    fn attach(&self, sink: Sink<K>);

    /// Tells the other instances that `keys` changed; failures are the backplane's to count.
    fn publish<'a>(&'a self, keys: &'a [K]) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

    /// Tells the other instances that every key starting with `prefix` was removed.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))] // Called with the Redis level only.
    fn publish_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

struct Inner<K, V, R> {
    memory: Option<MemoryCache<K, Stamped<V>>>,
    remote: Option<R>,
    /// Loads callers wait for: what they are answered, and whether it was stale.
    flights: Flights<K, (Served<V>, Epoch)>,
    /// Refreshes no caller waits for (early refresh, stale-while-revalidate): one per key.
    refreshes: SingleFlight<(K, TypeId), (), ()>,
    metrics: Metrics,
    negative_ttl: Option<Duration>,
    freshness: Freshness,
    clock: Clock,
    /// L1 copies filled in an older generation are stale: a backplane gap starts a new one.
    /// Starts at 1; 0 marks a copy stale in any generation.
    generation: AtomicU32,
    backplane: Option<Box<dyn Link<K>>>,
    across: Option<Shared<K>>,
    /// Bumped by every write, so that a load or fill that read the old value does not
    /// store it after the write.
    epochs: Epochs,
    /// Loads whose callers stopped waiting at a timeout and that still run: a new caller
    /// of the key waits for the one running rather than starting another. An entry lives
    /// as long as its load's task.
    behind: Mutex<HashMap<(K, TypeId), Listed>>,
    /// L2 writes that failed in an outage, replayed when L2 answers again (`None`: no
    /// remote level, or auto-recovery turned off).
    recovery: Option<Recovery<K, V, Tiered<K, V, R>>>,
}

/// Auto-recovery's default bound: queued L2 writes (one per key).
const RECOVERY_ENTRIES: usize = 10_000;
/// The pause between replay attempts while L2 is down: it starts short and doubles up to
/// the longest, so that L2 is in use again soon after it answers.
const REPLAY_PAUSE: (Duration, Duration) = (Duration::from_millis(25), Duration::from_millis(200));

/// A write's L2 call under way. Dropped before the call answered (its caller was cancelled),
/// whether L2 took the write is unknown, and the connection may die before it does: the keys
/// are queued for removal from L2, so that no old value survives there (a removal is right
/// whichever way the write went; the next reader loads the current value).
struct UnderWay<'a, K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<V>> + 'static,
{
    cache: &'a Tiered<K, V, R>,
    keys: &'a [K],
    armed: bool,
}

impl<K, V, R> Drop for UnderWay<'_, K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<V>> + 'static,
{
    fn drop(&mut self) {
        if self.armed {
            let inner = &self.cache.inner;
            for key in self.keys {
                // As a write's second half: queued, then bumped (see `Epochs`), then out of
                // memory (a removal drops L1's copy only after L2's).
                self.cache.defer(key.clone(), Intent::Remove);
                inner.epochs.bump(key);
                if let Some(memory) = &inner.memory {
                    memory.remove(key);
                }
            }
        }
    }
}

/// A load listed in `behind`: its end, and when it started.
type Listed = (tokio::sync::watch::Receiver<bool>, tokio::time::Instant);

/// How long a load given up on counts as its key's one load, at the least, and in deadlines:
/// past that it is taken as hung, and a caller loads anew (a hung source must not make a key
/// unloadable until the process restarts).
const BEHIND_AT_LEAST: Duration = Duration::from_secs(60);
const BEHIND_DEADLINES: u32 = 10;

/// A value as a caller is answered, and why it is stale if it is.
type Served<V> = (V, Option<Stale>);

/// Why a stale value was answered; the `reason` label of
/// `brisk_cache_tiered_stale_served_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stale {
    /// Within stale-while-revalidate; a refresh runs behind.
    Revalidating,
    /// The load failed.
    LoadFailed,
    /// The load ran past its soft (or hard) timeout; it finishes behind.
    LoadTimeout,
}

/// What a [`Tiered`] cache reports, each series labelled `name="<name>"`.
#[derive(Debug, Clone)]
struct Metrics {
    /// `brisk_cache_tiered_hits_total{level="l1"}`
    l1_hits: Counter,
    /// `brisk_cache_tiered_hits_total{level="l2"}`
    l2_hits: Counter,
    /// `brisk_cache_tiered_misses_total`: lookups neither level answered fresh.
    misses: Counter,
    /// `brisk_cache_tiered_load_duration_seconds`: loads that returned.
    loads: Histogram,
    /// `brisk_cache_tiered_load_failures_total`: loads that failed or panicked.
    load_failures: Counter,
    /// `brisk_cache_tiered_load_timeouts_total`: loads past a soft or hard timeout.
    load_timeouts: Counter,
    /// `brisk_cache_tiered_remote_errors_total`: L2 errors a load went past.
    remote_errors: Counter,
    /// `brisk_cache_tiered_stale_served_total{reason=…}`
    stale_revalidating: Counter,
    stale_load_failed: Counter,
    stale_load_timeout: Counter,
    /// `brisk_cache_tiered_early_refreshes_total`
    early_refreshes: Counter,
}

impl Metrics {
    fn noop() -> Self {
        Self {
            l1_hits: Counter::noop(),
            l2_hits: Counter::noop(),
            misses: Counter::noop(),
            loads: Histogram::noop(Unit::Seconds),
            load_failures: Counter::noop(),
            load_timeouts: Counter::noop(),
            remote_errors: Counter::noop(),
            stale_revalidating: Counter::noop(),
            stale_load_failed: Counter::noop(),
            stale_load_timeout: Counter::noop(),
            early_refreshes: Counter::noop(),
        }
    }

    fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        let level =
            |level| series.counter_with("brisk_cache_tiered_hits_total", Some(("level", level)));
        let stale = |reason| {
            series.counter_with(
                "brisk_cache_tiered_stale_served_total",
                Some(("reason", reason)),
            )
        };
        Self {
            l1_hits: level("l1"),
            l2_hits: level("l2"),
            misses: series.counter("brisk_cache_tiered_misses_total"),
            loads: series.seconds("brisk_cache_tiered_load_duration_seconds"),
            load_failures: series.counter("brisk_cache_tiered_load_failures_total"),
            load_timeouts: series.counter("brisk_cache_tiered_load_timeouts_total"),
            remote_errors: series.counter("brisk_cache_tiered_remote_errors_total"),
            stale_revalidating: stale("stale_while_revalidate"),
            stale_load_failed: stale("load_failed"),
            stale_load_timeout: stale("load_timeout"),
            early_refreshes: series.counter("brisk_cache_tiered_early_refreshes_total"),
        }
    }

    fn stale_served(&self, reason: Stale) {
        match reason {
            Stale::Revalidating => self.stale_revalidating.increment(),
            Stale::LoadFailed => self.stale_load_failed.increment(),
            Stale::LoadTimeout => self.stale_load_timeout.increment(),
        }
    }
}

/// A load listed as running in its cache's `behind` until it ends (returns, fails, panics or
/// is dropped with its runtime): then it is unlisted and its waiters are woken.
struct Behind<K: Hash + Eq, V, R> {
    cache: Weak<Inner<K, V, R>>,
    flight: (K, TypeId),
    finished: tokio::sync::watch::Sender<bool>,
    /// The receiver listed for this load, to tell its entry from a later load's.
    listed: tokio::sync::watch::Receiver<bool>,
}

impl<K: Hash + Eq, V, R> Drop for Behind<K, V, R> {
    fn drop(&mut self) {
        if let Some(inner) = self.cache.upgrade() {
            let mut behind = inner.behind.lock().unwrap_or_else(PoisonError::into_inner);
            // Unlisted only if the entry is this load's (a later load may have listed its own).
            if behind
                .get(&self.flight)
                .is_some_and(|(listed, _)| self.listed.same_channel(listed))
            {
                behind.remove(&self.flight);
            }
        }
        self.finished.send_replace(true);
    }
}

/// Counts a load as failed unless it is disarmed: a panicking loader unwinds past it.
struct FailureGuard<'a> {
    failures: &'a Counter,
    armed: bool,
}

impl Drop for FailureGuard<'_> {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            self.failures.increment();
        }
    }
}

impl<K, V, R> Tiered<K, V, R> {
    /// The `fresh_for` setting.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // Read by the response cache only.
    pub(crate) fn fresh_for(&self) -> Option<Duration> {
        self.inner.freshness.fresh_for
    }
}

impl<K, V, R> Clone for Tiered<K, V, R> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, R: fmt::Debug> fmt::Debug for Tiered<K, V, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tiered")
            .field("memory", &self.inner.memory)
            .field("remote", &self.inner.remote)
            .field("freshness", &self.inner.freshness)
            .finish_non_exhaustive()
    }
}

impl<K, V> Tiered<K, V, NoRemote>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Starts configuring a tiered cache.
    pub fn builder() -> TieredBuilder<K, V, NoRemote> {
        TieredBuilder {
            memory: None,
            remote: None,
            metrics: Metrics::noop(),
            negative_ttl: None,
            backplane: None,
            across: None,
            recovery: (Some(RECOVERY_ENTRIES), RecoveryMetrics::noop()),
            freshness: Freshness {
                fail_safe_throttle: fresh::DEFAULT_THROTTLE,
                ..Freshness::default()
            },
        }
    }
}

/// What L2 held for a key.
enum L2<V> {
    /// A value the reader took (and L1 now holds).
    Taken(Stamped<V>),
    /// A value the reader left (stale, or not fresher than what it had).
    Left(Stamped<V>),
    Missing,
}

/// What a lookup in the levels found.
enum Found<V> {
    /// A fresh value (already counted as a hit).
    Fresh(V),
    /// Only a stale one, the newer of the two levels'.
    Stale(Stamped<V>),
    Missing,
}

impl<K, V, R> Tiered<K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<V>>,
{
    /// Now, by the cache's clock (Unix ms; it follows tokio's clock).
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // Read by the response cache only.
    pub(crate) fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// `key`'s value in L1, else in L2 (filling L1), fresh or stale, without counting a hit
    /// or a miss; an L2 error reads as nothing.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // Read by the response cache only.
    pub(crate) async fn peek(&self, key: &K) -> Option<V> {
        if let Some(stamped) = self
            .inner
            .memory
            .as_ref()
            .and_then(|memory| memory.get(key))
        {
            return Some(stamped.into_value());
        }
        match self.read_l2(key, |_| true).await {
            Ok(L2::Taken(stamped)) => Some(stamped.into_value()),
            Ok(L2::Left(_) | L2::Missing) => None,
            Err(_) => {
                self.inner.metrics.remote_errors.increment();
                None
            }
        }
    }

    /// The memory level, if any.
    pub fn memory(&self) -> Option<&MemoryCache<K, Stamped<V>>> {
        self.inner.memory.as_ref()
    }

    /// The remote level, if any.
    pub fn remote(&self) -> Option<&R> {
        self.inner.remote.as_ref()
    }

    /// How long an absence is kept (see [`TieredBuilder::negative_ttl`]).
    pub(crate) fn negative_ttl(&self) -> Option<Duration> {
        self.inner.negative_ttl
    }

    /// When a value stored now for `ttl` (the freshness setting when `None`) goes stale,
    /// and how long the levels keep it: fresh, then stale for the longest window a stale
    /// value is served in. `(never, None)`: each level's own TTL, and it never goes stale.
    fn lifetime(&self, ttl: Option<Duration>) -> (u64, Option<Duration>) {
        match ttl.or(self.inner.freshness.fresh_for) {
            None => (u64::MAX, None),
            Some(fresh_for) => {
                let until = self
                    .inner
                    .clock
                    .now_ms()
                    .saturating_add(fresh::millis_up(fresh_for));
                let keep = fresh_for.saturating_add(self.inner.freshness.keep_stale());
                (until, Some(keep))
            }
        }
    }

    /// `value` stamped as stored now for `ttl` after a load that took `cost`, and how long
    /// the levels keep it (see [`lifetime`](Self::lifetime)).
    fn stamp(
        &self,
        value: V,
        ttl: Option<Duration>,
        cost: Duration,
    ) -> (Stamped<V>, Option<Duration>) {
        let cost = u32::try_from(fresh::millis_up(cost)).unwrap_or(u32::MAX);
        let (until, keep) = self.lifetime(ttl);
        (Stamped::new(value, until, cost), keep)
    }

    /// Keeps a value in L1, current, for no longer than `keep` (what it has left in L2, or
    /// what it was stored for), nor than L1's own TTL.
    fn fill(&self, key: K, stamped: Stamped<V>, keep: Option<Duration>) {
        let generation = self.inner.generation.load(Ordering::Acquire);
        self.put_l1(key, stamped.in_generation(generation), keep);
    }

    /// Drops `key` from L1 if a write of it (here, or announced by the backplane) came since
    /// `epoch`, besides the caller's own `own` bumps of that stripe: whether it did.
    fn drop_if_written(&self, key: &K, epoch: Epoch, own: u64) -> bool {
        if !self.inner.epochs.moved_besides(epoch, own) {
            return false;
        }
        if let Some(memory) = &self.inner.memory {
            memory.remove(key);
        }
        true
    }

    /// Whether an L1 copy answers as fresh at `now`: filled in the current generation, and
    /// fresh (or throttled) by its stamp.
    fn fresh_in_l1(&self, stamped: &Stamped<V>, now: &Now<'_>) -> bool {
        stamped.generation() == self.inner.generation.load(Ordering::Acquire) && now.fresh(stamped)
    }

    /// Tells the other instances, through the backplane if there is one, that `keys` changed.
    async fn publish(&self, keys: &[K]) {
        if let Some(backplane) = &self.inner.backplane {
            backplane.publish(keys).await;
        }
    }

    /// [`fill`](Self::fill) with the copy's generation as it is.
    fn put_l1(&self, key: K, stamped: Stamped<V>, keep: Option<Duration>) {
        let Some(memory) = &self.inner.memory else {
            return;
        };
        match (keep, memory.ttl()) {
            (Some(left), _) if left.is_zero() => {}
            (Some(left), Some(own)) => memory.insert_with_ttl(key, stamped, left.min(own)),
            (Some(left), None) => memory.insert_with_ttl(key, stamped, left),
            (None, _) => memory.insert(key, stamped),
        }
    }

    /// Stores a loaded value in both levels, L2 first, and tells the other instances; an L2
    /// error is counted, not returned. `epoch` and `fence` were read before the source was:
    /// if a write of the key may have completed since (here, or in any instance for L2's
    /// fence), the value is not stored, or is removed again from every level if the write
    /// came while it was being stored. L2 is skipped with no fence (it could not be read).
    /// Whether it stayed stored.
    async fn store(
        &self,
        key: K,
        stamped: Stamped<V>,
        keep: Option<Duration>,
        epoch: Epoch,
        fence: Option<WriteFence>,
    ) -> bool
    where
        R: 'static,
    {
        let epochs = &self.inner.epochs;
        if epochs.moved(epoch) {
            return false;
        }
        // A write of the key waits to reach L2: the value is not to overtake it there.
        let fence = fence.filter(|_| !self.recovery().is_some_and(|queue| queue.holds(&key)));
        // Whether L2 holds this value by a fenced store: then it is right there (a write
        // before the store refused it; one after overwrote it), and only L1 can be wrong.
        let mut fenced = false;
        if let (Some(remote), Some(fence)) = (&self.inner.remote, fence) {
            let vouched = fence.read_at.is_some();
            match remote
                .insert_fenced(key.clone(), stamped.clone(), keep, &fence)
                .await
            {
                // A write queued meanwhile never reached Redis' fence: the fence vouches for
                // nothing then.
                Ok(true) => {
                    fenced = vouched && !self.recovery().is_some_and(|queue| queue.holds(&key));
                }
                // Another write came first: this value is older than what the levels hold.
                Ok(false) => return false,
                Err(_) => self.inner.metrics.remote_errors.increment(),
            }
        }
        self.publish(std::slice::from_ref(&key)).await;
        self.fill(key.clone(), stamped, keep);
        // A write completed while this value was stored: it may have landed after the
        // write's. It leaves L1 at once (before any await: a cancelled caller leaves no old
        // value behind), and L2 too, as a removal would, unless a fence vouched for it.
        if !self.drop_if_written(&key, epoch, 0) {
            return true;
        }
        if !fenced {
            // In a task of its own where there is a runtime: a caller dropped now must not
            // leave the old value in L2.
            let this = self.clone();
            let undo = async move {
                if this.drop_everywhere(&key).await.is_err() {
                    this.inner.metrics.remote_errors.increment();
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(undo)),
                Err(_) => undo.await,
            }
        }
        false
    }

    /// Removes `key` from both levels (L2 first) and tells the other instances, with the
    /// epoch bumped before each level (see [`Epochs`]): loads and L2 reads of the old value
    /// that are under way do not store it after this returns. L1 loses its copy even if L2
    /// fails; the L2 error is returned.
    async fn drop_everywhere(&self, key: &K) -> Result<()>
    where
        R: 'static,
    {
        let epochs = &self.inner.epochs;
        epochs.bump(key);
        let removed = match &self.inner.remote {
            Some(remote) => self.write_l2(key, remote.remove(key)).await,
            None => Ok(true),
        };
        if let Ok(false) = removed {
            // Queued before the second bump: a read that starts after it finds the removal
            // pending, and one that started before does not fill L1 (see `Epochs`).
            self.defer(key.clone(), Intent::Remove);
        }
        epochs.bump(key);
        if let Some(memory) = &self.inner.memory {
            memory.remove(key);
        }
        self.publish(std::slice::from_ref(key)).await;
        removed.map(drop)
    }

    /// L2's answers for `keys`, with the keys whose writes wait for L2 answered as they will
    /// be once replayed. Checked after the answers came (and after the caller read the keys'
    /// epochs): an intent queued meanwhile is not missed.
    fn trusted(
        &self,
        keys: &[K],
        mut hits: Vec<Option<WithTtl<Stamped<V>>>>,
    ) -> Vec<Option<WithTtl<Stamped<V>>>> {
        if let Some(recovery) = self.recovery().filter(|queue| !queue.is_empty()) {
            for (key, hit) in keys.iter().zip(&mut hits) {
                if let Some(pending) = recovery.pending(key) {
                    *hit = pending.into_hit();
                }
            }
        }
        hits
    }

    /// Auto-recovery's queue, if it is on.
    fn recovery(&self) -> Option<&Recovery<K, V, Self>> {
        self.inner.recovery.as_ref()
    }

    /// Runs an L2 write of `key`: `Ok(true)` when it was applied, `Ok(false)` when it is for
    /// auto-recovery to queue (L2 failed in an outage; or a write of the key waits in the
    /// queue already, and L2 must take them in order, so `write` is not run), `Err` for the
    /// caller (auto-recovery off, or a refusal no replay would change).
    async fn write_l2(&self, key: &K, write: impl Future<Output = Result<()>>) -> Result<bool>
    where
        R: 'static,
    {
        self.write_l2_many(std::slice::from_ref(key), write).await
    }

    /// [`write_l2`](Self::write_l2) for a write of several keys.
    async fn write_l2_many(
        &self,
        keys: &[K],
        write: impl Future<Output = Result<()>>,
    ) -> Result<bool>
    where
        R: 'static,
    {
        let Some(recovery) = self.recovery() else {
            return write.await.map(|()| true);
        };
        if !recovery.is_empty() {
            // A task that ended with its runtime left the queue: this write restarts it.
            self.replay_soon();
            if keys.iter().any(|key| recovery.holds_key(key)) {
                return Ok(false);
            }
        }
        let mut under_way = UnderWay {
            cache: self,
            keys,
            armed: true,
        };
        let written = write.await;
        under_way.armed = false;
        match written {
            Ok(()) => Ok(true),
            Err(error) if recovery::is_outage(&error) => {
                self.inner.metrics.remote_errors.increment();
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Queues what a write meant for L2, and makes sure a task replays the queue.
    fn defer(&self, key: K, intent: Intent<V>)
    where
        R: 'static,
    {
        if let Some(recovery) = self.recovery() {
            recovery.queue(key, intent);
            self.replay_soon();
        }
    }

    /// [`defer`](Self::defer) for a value written: the value, unless another write of its
    /// stripe came since `epoch` (besides the write's `own` bumps), which may have been of
    /// this key and reached L2 first: then a removal, never an older value over a newer.
    fn defer_set(
        &self,
        key: K,
        stamped: &Stamped<V>,
        keep: Option<Duration>,
        (epoch, own): (Epoch, u64),
        tags: Vec<String>,
    ) where
        R: 'static,
    {
        let intent = if self.inner.epochs.moved_besides(epoch, own) {
            Intent::Remove
        } else {
            Intent::Set {
                stamped: stamped.clone(),
                keep,
                at: tokio::time::Instant::now(),
                tags,
            }
        };
        self.defer(key, intent);
    }

    /// Starts the task that replays auto-recovery's queue, unless one runs. Without a tokio
    /// runtime the queue waits for the next write made inside one.
    fn replay_soon(&self)
    where
        R: 'static,
    {
        let Some(recovery) = self.recovery() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if recovery.start() {
            let cache = Arc::downgrade(&self.inner);
            let running = Running(cache.clone(), false);
            drop(runtime.spawn(replay(cache, running)));
        }
    }

    /// Applies one queued intent to L2, then tells the other instances of its key.
    async fn replay_one(&self, work: Work<K, V, Self>) -> Result<()> {
        let Some(remote) = &self.inner.remote else {
            return Ok(());
        };
        let key = match work {
            Work::Group(replay) => return replay(self.clone()).await,
            Work::Key(key, Intent::Remove) => {
                remote.remove(&key).await?;
                key
            }
            Work::Key(
                key,
                Intent::Set {
                    stamped,
                    keep,
                    at,
                    tags,
                },
            ) => {
                let left = recovery::left(keep, at);
                let tagged = self
                    .recovery()
                    .and_then(|queue| queue.tagged.get())
                    .filter(|_| !tags.is_empty());
                if left.is_some_and(|left| left.is_zero()) || self.inner.backplane.is_some() {
                    // With a backplane there are other instances, and one may have written
                    // the key meanwhile, unheard (its message lost in the outage): the value
                    // queued here may be older than theirs. Removing L2's copy is never
                    // wrong; the next reader loads the current value.
                    remote.remove(&key).await?;
                } else if let Some(tagged) = tagged {
                    tagged(self.clone(), key.clone(), stamped, left, tags).await?;
                } else {
                    remote.insert(key.clone(), stamped, left).await?;
                }
                key
            }
        };
        self.publish(std::slice::from_ref(&key)).await;
        Ok(())
    }

    /// The first half of a write of `keys` (before its L2 call): bumps each key's epoch,
    /// then drops it from L1, so that no old value survives the write, even one whose caller
    /// is dropped midway. The epochs read after the bump, for [`fill_written`](Self::fill_written).
    fn begin_write<'k>(&self, keys: impl IntoIterator<Item = &'k K>) -> Vec<Epoch>
    where
        K: 'k,
    {
        let inner = &*self.inner;
        let keys: Vec<&K> = keys.into_iter().collect();
        keys.iter().for_each(|key| inner.epochs.bump(*key));
        // Read after every key's bump: the write's own bumps since are its second ones only.
        let epochs = keys.iter().map(|key| inner.epochs.read(*key)).collect();
        if let Some(memory) = &inner.memory {
            keys.iter().for_each(|key| drop(memory.remove(key)));
        }
        epochs
    }

    /// The second half of a write of `keys`, whether its L2 call succeeded or not (a timed-out
    /// call may have been applied): bumps each key again and tells the other instances.
    async fn end_write(&self, keys: &[K]) {
        keys.iter().for_each(|key| self.inner.epochs.bump(key));
        self.publish(keys).await;
    }

    /// Fills L1 with a written value, or one read from L2, unless another write of its key
    /// (here, or announced by the backplane) came since `epoch` (read before the L2 read, or
    /// by [`begin_write`](Self::begin_write); `own`: the write's own bumps of that stripe
    /// since): then L1 is left to the newer write, or empty, and reads go to L2. Without L2
    /// the value is always kept.
    fn fill_written(
        &self,
        key: K,
        stamped: Stamped<V>,
        keep: Option<Duration>,
        epoch: Epoch,
        own: u64,
    ) {
        if self.inner.remote.is_none() {
            // L1 is the only level: dropping the value would lose the write (a write-behind
            // source has not got it yet), and there is no L2 for L1 to disagree with.
            self.fill(key, stamped, keep);
            return;
        }
        if self.inner.epochs.moved_besides(epoch, own) {
            return;
        }
        self.fill(key.clone(), stamped, keep);
        self.drop_if_written(&key, epoch, own);
    }

    /// Stores `value` for `ttl` (the freshness setting when `None`) in both levels, as a load
    /// would: an L2 error is counted, and L1 keeps the value all the same. Not stored if a
    /// write of the key completes meanwhile.
    #[cfg_attr(not(feature = "http"), allow(dead_code))] // Called by the response cache only.
    pub(crate) async fn store_loaded(&self, key: K, value: V, ttl: Option<Duration>)
    where
        R: 'static,
    {
        let epoch = self.inner.epochs.read(&key);
        let (stamped, keep) = self.stamp(value, ttl, Duration::ZERO);
        // Unfenced: the response was made before this call.
        self.store(key, stamped, keep, epoch, Some(WriteFence::default()))
            .await;
    }

    /// L2's value for `key` and, when L1 is there to fill, what it has left.
    async fn remote_get(
        &self,
        remote: &R,
        key: &K,
    ) -> Result<Option<(Stamped<V>, Option<Duration>)>> {
        if let Some(pending) = self.recovery().and_then(|queue| queue.pending(key)) {
            // L2 is behind this instance's writes of the key: what it is to hold.
            return Ok(pending.into_hit());
        }
        let hit = if self.inner.memory.is_some() {
            remote.get_with_ttl(key).await?
        } else {
            // Nothing to fill: the remaining TTL is not needed (one command, not two).
            remote.get(key).await?.map(|stamped| (stamped, None))
        };
        // A write of the key that failed in L2 while this read ran.
        Ok(match self.recovery().and_then(|queue| queue.pending(key)) {
            Some(pending) => pending.into_hit(),
            None => hit,
        })
    }

    /// L2's copy of `key` (`None`: no remote level, or no entry). One that `takes` is kept
    /// in L1 too, for what it has left in L2, and comes back as `L2::Taken`.
    async fn read_l2(&self, key: &K, takes: impl FnOnce(&Stamped<V>) -> bool) -> Result<L2<V>> {
        let Some(remote) = &self.inner.remote else {
            return Ok(L2::Missing);
        };
        let epoch = self.inner.epochs.read(key);
        Ok(match self.remote_get(remote, key).await? {
            Some((stamped, left)) if takes(&stamped) => {
                self.fill_written(key.clone(), stamped.clone(), left, epoch, 0);
                L2::Taken(stamped)
            }
            Some((stamped, _)) => L2::Left(stamped),
            None => L2::Missing,
        })
    }

    /// The levels' value for `key`, L1 first; a stale L1 value sends the lookup on to L2,
    /// where another instance may have stored a fresh one. An L2 error is counted and read
    /// as a miss.
    async fn find(&self, key: &K, now: &Now<'_>) -> Found<V> {
        let inner = &*self.inner;
        let mut stale = None;
        if let Some(stamped) = inner.memory.as_ref().and_then(|memory| memory.get(key)) {
            if self.fresh_in_l1(&stamped, now) {
                inner.metrics.l1_hits.increment();
                return Found::Fresh(stamped.into_value());
            }
            stale = Some(stamped);
        }
        match self.read_l2(key, |stamped| now.fresh(stamped)).await {
            Ok(L2::Taken(stamped)) => {
                inner.metrics.l2_hits.increment();
                return Found::Fresh(stamped.into_value());
            }
            Ok(L2::Left(stamped)) => {
                if stale
                    .as_ref()
                    .is_none_or(|mine| mine.fresh_until_ms() < stamped.fresh_until_ms())
                {
                    stale = Some(stamped);
                }
            }
            Ok(L2::Missing) => {}
            Err(_) => inner.metrics.remote_errors.increment(),
        }
        inner.metrics.misses.increment();
        stale.map_or(Found::Missing, Found::Stale)
    }

    /// The fresh value for `key` with its stamp: from L1, else from L2 (filling L1). Counted
    /// as a hit or a miss.
    async fn get_stamped(&self, key: &K) -> Result<Option<Stamped<V>>> {
        let inner = &*self.inner;
        let now = Now::new(&inner.clock);
        if let Some(stamped) = inner
            .memory
            .as_ref()
            .and_then(|memory| memory.get(key))
            .filter(|stamped| self.fresh_in_l1(stamped, &now))
        {
            inner.metrics.l1_hits.increment();
            return Ok(Some(stamped));
        }
        match self.read_l2(key, |stamped| now.fresh(stamped)).await? {
            L2::Taken(stamped) => {
                inner.metrics.l2_hits.increment();
                Ok(Some(stamped))
            }
            L2::Left(_) | L2::Missing => {
                inner.metrics.misses.increment();
                Ok(None)
            }
        }
    }

    /// The [version](Stamped::version) of `key`'s fresh value, if cached: it changes with
    /// every write of the key, in every instance, so a response built from the value can be
    /// revalidated without building it (`http::ConditionalLayerBuilder::validator`, feature
    /// `http`). Reads like [`Cache::get`].
    ///
    /// # Errors
    /// As [`Cache::get`].
    pub async fn version(&self, key: &K) -> Result<Option<u64>> {
        Ok(self
            .get_stamped(key)
            .await?
            .map(|stamped| stamped.version()))
    }

    /// [`try_get_with`](Self::try_get_with) for a loader that cannot fail.
    ///
    /// # Errors
    /// [`Error::LoadPanicked`] if the loader panicked, [`Error::LoadTimeout`] past the hard
    /// load timeout.
    pub async fn get_with<F, Fut>(&self, key: K, load: F) -> Result<V>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = V> + Send + 'static,
        R: 'static,
    {
        self.try_get_with(key, || async { Ok::<_, Infallible>(load().await) })
            .await
            .map_err(|error| error.map_load(|source| match *source {}))
    }

    /// The value for `key` from L1, else L2 (filling L1), else `load` (storing its value in
    /// both levels). One load runs per key in this process however many callers miss it at
    /// once; a cancelled first caller hands it over, and a failing or panicking loader
    /// reaches every waiter and caches nothing. L2 errors do not fail the call: they are
    /// counted, and the load goes on.
    ///
    /// With [freshness](Self#freshness) settings, a stale value may answer instead of a
    /// load, or while a refresh runs behind: that is why the loader is `'static` (it may run
    /// in a task of its own, after this call returns).
    ///
    /// # Errors
    /// [`Error::Load`] with the loader's error, [`Error::LoadPanicked`],
    /// [`Error::LoadTimeout`] past the hard load timeout with no stale value to serve.
    pub async fn try_get_with<F, Fut, E>(&self, key: K, load: F) -> Result<V, Error<Arc<E>>>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
        R: 'static,
    {
        self.load_through(key, load, |_| None, |_| true)
            .await
            .map(|(value, _)| value)
    }

    /// `try_get_with`, storing a loaded value for `ttl_of(&value)` (the freshness setting,
    /// else each level's own TTL, when `None`); with the value, whether it is stale. A
    /// loader's [`NotStored`] error that is no failure is neither counted nor answered by a
    /// stale value. A stale value is answered only where `may_serve_stale` allows it (an
    /// HTTP response with `must-revalidate` does not).
    pub(crate) async fn load_through<F, Fut, E>(
        &self,
        key: K,
        load: F,
        ttl_of: impl FnOnce(&V) -> Option<Duration> + Send + 'static,
        may_serve_stale: fn(&V) -> bool,
    ) -> Result<(V, bool), Error<Arc<E>>>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
        R: 'static,
    {
        let inner = &*self.inner;
        if let Some(stamped) = inner.memory.as_ref().and_then(|memory| memory.get(&key)) {
            // A value that cannot go stale by time is a hit without a clock read.
            let now = Now::new(&inner.clock);
            if self.fresh_in_l1(&stamped, &now) {
                inner.metrics.l1_hits.increment();
                if inner.freshness.refresh_early(&stamped, &now, jitter::unit) {
                    self.refresh_behind::<_, _, E>(
                        key,
                        load,
                        ttl_of,
                        Some(stamped.fresh_until_ms()),
                    );
                    inner.metrics.early_refreshes.increment();
                }
                return Ok((stamped.into_value(), false));
            }
            if may_serve_stale(stamped.value()) && inner.freshness.revalidates(&stamped, now.get())
            {
                inner.metrics.stale_served(Stale::Revalidating);
                self.refresh_behind::<_, _, E>(key, load, ttl_of, None);
                return Ok((stamped.into_value(), true));
            }
        }
        let flight = (key, TypeId::of::<E>());
        // Writes of the key that completed before this call: a load under way that read its
        // source before one of them is not this caller's answer.
        let mine = inner.epochs.read(&flight.0);
        let mut pending = Some((load, ttl_of));
        let outcome = loop {
            let outcome = inner
                .flights
                .run(&flight, || {
                    // The flight's own start: its lookups and load all come after it.
                    let started = inner.epochs.read(&flight.0);
                    let (load, ttl_of) = pending.take().expect("a flight runs its closure once");
                    let resolved = self.resolve(flight.0.clone(), load, ttl_of, may_serve_stale);
                    async move { resolved.await.map(|served| (served, started)) }
                })
                .await;
            match outcome {
                // Joined a flight that began before a write this call came after: its
                // value, fresh or stale, may be the old one. This caller runs (or joins) a
                // newer flight.
                Ok((_, started)) if pending.is_some() && started.before(mine) => {}
                outcome => break outcome.map(|(served, _)| served),
            }
        };
        match outcome {
            Ok((value, stale)) => {
                if let Some(reason) = stale {
                    inner.metrics.stale_served(reason);
                }
                Ok((value, stale.is_some()))
            }
            Err(error) => Err(flight::caller_error(&flight.0, error)),
        }
    }

    /// What a load's callers are answered: the levels' fresh value, else a stale one within
    /// stale-while-revalidate (a refresh starts behind it), else a load's value, else (the
    /// load failed or timed out) a stale one within fail-safe.
    async fn resolve<F, Fut, E>(
        &self,
        key: K,
        load: F,
        ttl_of: impl FnOnce(&V) -> Option<Duration> + Send + 'static,
        may_serve_stale: fn(&V) -> bool,
    ) -> Result<Served<V>, SharedError>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
        R: 'static,
    {
        let inner = &*self.inner;
        let freshness = &inner.freshness;
        let clock = Now::new(&inner.clock);
        // A stale value found below is kept in L1 only if no write completes meanwhile.
        let epoch = inner.epochs.read(&key);
        let stale = match self.find(&key, &clock).await {
            Found::Fresh(value) => return Ok((value, None)),
            Found::Stale(stamped) => {
                Some(stamped).filter(|stamped| may_serve_stale(stamped.value()))
            }
            Found::Missing => None,
        };
        let now = clock.get();
        if let Some(stamped) = stale
            .as_ref()
            .filter(|stamped| freshness.revalidates(stamped, now))
        {
            let value = stamped.value().clone();
            // L1 serves it to the next callers while the refresh runs.
            self.keep_stale(key.clone(), stamped, now, Duration::ZERO, epoch);
            self.refresh_behind::<_, _, E>(key, load, ttl_of, None);
            return Ok((value, Some(Stale::Revalidating)));
        }
        let fallback = stale.filter(|stamped| freshness.fails_safe(stamped, now));
        let deadline = match &fallback {
            Some(_) => freshness.soft_timeout.or(freshness.hard_timeout),
            None => freshness.hard_timeout,
        };
        let loaded = match deadline.zip(tokio::runtime::Handle::try_current().ok()) {
            None => self.load_step(key.clone(), load, ttl_of).await,
            Some((deadline, runtime)) => {
                let flight = (key.clone(), TypeId::of::<E>());
                let gave_up = |fallback: Option<Stamped<V>>| -> Result<Served<V>, SharedError> {
                    inner.metrics.load_timeouts.increment();
                    match fallback {
                        Some(stamped) => {
                            let throttle = freshness.fail_safe_throttle;
                            self.keep_stale(key.clone(), &stamped, now, throttle, epoch);
                            Ok((stamped.into_value(), Some(Stale::LoadTimeout)))
                        }
                        None => Err(Arc::new(LoadTimedOut(deadline))),
                    }
                };
                // A load of this key whose callers gave up on it still runs: it is the one
                // load of the key, so this caller waits for it, then reads what it stored.
                if let Some(mut done) = self.running_behind(&flight, deadline) {
                    if tokio::time::timeout(deadline, done.wait_for(|done| *done))
                        .await
                        .is_err()
                    {
                        return gave_up(fallback);
                    }
                    if let Found::Fresh(value) = self.find(&key, &Now::new(&inner.clock)).await {
                        return Ok((value, None));
                    }
                    // It failed, or its value was not kept: this caller loads.
                }
                // The load runs in a task of its own, so that it finishes (and stores its
                // value) after its callers stop waiting; until then it is listed as running.
                let (finished, done) = tokio::sync::watch::channel(false);
                self.inner
                    .behind
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(flight.clone(), (done.clone(), tokio::time::Instant::now()));
                let listed = Behind {
                    cache: Arc::downgrade(&self.inner),
                    flight,
                    finished,
                    listed: done,
                };
                let this = self.clone();
                let stored = key.clone();
                let mut task = runtime.spawn(async move {
                    let _listed = listed;
                    this.load_step(stored, load, ttl_of).await
                });
                match tokio::time::timeout(deadline, &mut task).await {
                    Ok(Ok(loaded)) => loaded,
                    Ok(Err(joined)) => match joined.try_into_panic() {
                        Ok(panic) => std::panic::resume_unwind(panic),
                        Err(_) => std::panic::resume_unwind(Box::new(
                            "the runtime shut down while the load ran",
                        )),
                    },
                    Err(_) => return gave_up(fallback),
                }
            }
        };
        match loaded {
            Ok(value) => Ok((value, None)),
            Err(failure) => match fallback.filter(|_| failure.counts()) {
                Some(stamped) => {
                    self.keep_stale(key, &stamped, now, freshness.fail_safe_throttle, epoch);
                    Ok((stamped.into_value(), Some(Stale::LoadFailed)))
                }
                None => Err(match failure {
                    Failure::Here(error) => Arc::new(error),
                    Failure::Elsewhere(message) => Arc::new(LoadedElsewhere(message)),
                }),
            },
        }
    }

    /// The end of a load of `flight` that callers gave up on, if one still runs.
    /// Taken as hung (not returned) once it has run for [`BEHIND_DEADLINES`] × `deadline`,
    /// or [`BEHIND_AT_LEAST`] if that is longer.
    fn running_behind(
        &self,
        flight: &(K, TypeId),
        deadline: Duration,
    ) -> Option<tokio::sync::watch::Receiver<bool>> {
        let behind = self
            .inner
            .behind
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (done, started) = behind.get(flight)?;
        let hung_after = deadline
            .saturating_mul(BEHIND_DEADLINES)
            .max(BEHIND_AT_LEAST);
        (started.elapsed() < hung_after).then(|| done.clone())
    }

    /// Loads and stores the value: here, or, with loads coordinated across instances, in
    /// whichever instance leads, followers reading its value from L2. A follower that finds
    /// no value there, or cannot coordinate (Redis down), loads here.
    async fn load_step<F, Fut, E>(
        &self,
        key: K,
        load: F,
        ttl_of: impl FnOnce(&V) -> Option<Duration> + Send,
    ) -> Result<V, Failure<E>>
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future<Output = Result<V, E>> + Send,
        E: Send + 'static,
        R: 'static,
    {
        let Some(across) = &self.inner.across else {
            return self
                .load_and_store(key, load, ttl_of)
                .await
                .map_err(Failure::Here);
        };
        let name = (across.name)(&key);
        // Taken by the work if it runs here; left for a follower that must load after all.
        let mut pending = Some((load, ttl_of));
        let mut outcome = None;
        let ran = {
            let (pending, outcome, key) = (&mut pending, &mut outcome, key.clone());
            let work = Box::pin(async move {
                let Some((load, ttl_of)) = pending.take() else {
                    return Err("the load ran already".to_owned());
                };
                let loaded = self.load_and_store(key, load, ttl_of).await;
                // A value the loader says is not to be stored is no failure: the followers
                // find nothing in L2 and load themselves, never a stale copy (fail-safe).
                let failed = loaded.as_ref().err().is_some_and(is_failure);
                *outcome = Some(loaded);
                if failed {
                    Err("the loader returned an error".to_owned())
                } else {
                    Ok(())
                }
            });
            across.flight.run(&name, work).await
        };
        if let Some(loaded) = outcome {
            return loaded.map_err(Failure::Here);
        }
        match ran {
            Ok(()) => {
                // Finished in another instance, which stored the value in L2.
                let now = Now::new(&self.inner.clock);
                match self.read_l2(&key, |stamped| now.fresh(stamped)).await {
                    Ok(L2::Taken(stamped)) => return Ok(stamped.into_value()),
                    Ok(L2::Left(_) | L2::Missing) => {}
                    Err(_) => self.inner.metrics.remote_errors.increment(),
                }
            }
            Err(brisk_dedup::Error::Remote { message, .. }) => {
                return Err(Failure::Elsewhere(message));
            }
            Err(brisk_dedup::Error::Panicked { message, .. }) => {
                std::panic::resume_unwind(Box::new(message));
            }
            // Redis could not coordinate: load here.
            Err(_) => self.inner.metrics.remote_errors.increment(),
        }
        let Some((load, ttl_of)) = pending else {
            return Err(Failure::Elsewhere("the load ran already".to_owned()));
        };
        self.load_and_store(key, load, ttl_of)
            .await
            .map_err(Failure::Here)
    }

    /// Runs `load`, timed and counted, and stores its value in both levels.
    async fn load_and_store<F, Fut, E>(
        &self,
        key: K,
        load: F,
        ttl_of: impl FnOnce(&V) -> Option<Duration>,
    ) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: 'static,
        R: 'static,
    {
        let metrics = &self.inner.metrics;
        let started = std::time::Instant::now();
        let mut guard = FailureGuard {
            failures: &metrics.load_failures,
            armed: true,
        };
        // Read before the source is: a write that completes after them keeps this value out.
        let epoch = self.inner.epochs.read(&key);
        let fence = match &self.inner.remote {
            Some(remote) => match remote.write_fence(&key).await {
                Ok(fence) => Some(fence),
                Err(_) => {
                    metrics.remote_errors.increment();
                    None
                }
            },
            None => None,
        };
        let loaded = load().await;
        guard.armed = false;
        let took = started.elapsed();
        metrics.loads.record_duration(took);
        let value = loaded.inspect_err(|error| {
            if is_failure(error) {
                metrics.load_failures.increment();
            }
        })?;
        let ttl = ttl_of(&value);
        let (stamped, keep) = self.stamp(value.clone(), ttl, took);
        self.store(key, stamped, keep, epoch, fence).await;
        Ok(value)
    }

    /// Keeps a stale value in L1 for the next callers: as it is (`throttle` zero: it is
    /// answered within stale-while-revalidate), or answering as fresh for `throttle` more
    /// (fail-safe), so a failing source is not asked by every request. It leaves L1 when its
    /// window ends, counted from when it went stale; L2 keeps the value as it was.
    ///
    /// Not kept if a write of the key may have completed since `epoch` was read (before the
    /// stale value was): L1 is not given the value a write replaced.
    fn keep_stale(&self, key: K, stamped: &Stamped<V>, now: u64, throttle: Duration, epoch: Epoch) {
        let freshness = &self.inner.freshness;
        let window = if throttle.is_zero() {
            freshness.keep_stale()
        } else {
            freshness.fail_safe.unwrap_or_default()
        };
        let ends = stamped
            .fresh_until_ms()
            .saturating_add(fresh::millis_up(window));
        let left = Duration::from_millis(ends.saturating_sub(now));
        if throttle.is_zero() {
            // Stale as it is, in any generation.
            self.put_l1(key.clone(), stamped.clone().in_generation(0), Some(left));
        } else {
            let until = now.saturating_add(fresh::millis_up(throttle));
            self.fill(
                key.clone(),
                stamped.clone().answering_until(until),
                Some(left),
            );
        }
        self.drop_if_written(&key, epoch, 0);
    }

    /// Starts one refresh of `key` in the background, unless one runs already: it takes L2's
    /// value if that is fresher than `known` (another instance refreshed it), else loads. A
    /// failure is counted and leaves the value as it was.
    fn refresh_behind<F, Fut, E>(
        &self,
        key: K,
        load: F,
        ttl_of: impl FnOnce(&V) -> Option<Duration> + Send + 'static,
        known: Option<u64>,
    ) where
        K: fmt::Debug,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Send + Sync + 'static,
        R: 'static,
    {
        let flight = (key, TypeId::of::<E>());
        if self.inner.refreshes.is_in_flight(&flight) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let refresh = || async {
                let key = flight.0.clone();
                let now = Now::new(&this.inner.clock);
                let fresher = |stamped: &Stamped<V>| {
                    now.fresh(stamped) && known.is_none_or(|known| stamped.fresh_until_ms() > known)
                };
                if let Ok(L2::Taken(_)) = this.read_l2(&key, fresher).await {
                    return Ok(());
                }
                this.load_and_store(key, load, ttl_of)
                    .await
                    .map(drop)
                    .map_err(drop)
            };
            // A failure was counted by the load; a panic by its guard.
            let _ = this.inner.refreshes.run(&flight, refresh).await;
        });
    }
}

impl<K, T, R> Tiered<K, Option<T>, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    /// [`try_get_with`](Self::try_get_with) for a loader that may find nothing: an absence
    /// (`None`) is cached too, for the [`negative_ttl`](TieredBuilder::negative_ttl), so that
    /// lookups of a missing row do not reach the database every time; found values keep
    /// the cache's own lifetimes.
    ///
    /// # Errors
    /// As `try_get_with`.
    pub async fn try_get_optional_with<F, Fut, E>(
        &self,
        key: K,
        load: F,
    ) -> Result<Option<T>, Error<Arc<E>>>
    where
        K: fmt::Debug,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: Send + Sync + 'static,
    {
        let negative_ttl = self.inner.negative_ttl;
        self.load_through(
            key,
            load,
            move |value| value.is_none().then_some(negative_ttl).flatten(),
            |_| true,
        )
        .await
        .map(|(value, _)| value)
    }
}

impl<K, V, R> Cache<K, V> for Tiered<K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<V>> + 'static,
{
    async fn get(&self, key: &K) -> Result<Option<V>> {
        Ok(self.get_stamped(key).await?.map(Stamped::into_value))
    }

    async fn insert(&self, key: K, value: V, ttl: Option<Duration>) -> Result<()> {
        let (stamped, keep) = self.stamp(value, ttl, Duration::ZERO);
        let epoch = self.begin_write([&key])[0];
        let written = match &self.inner.remote {
            Some(remote) => {
                let write = remote.insert(key.clone(), stamped.clone(), keep);
                self.write_l2(&key, write).await
            }
            None => Ok(true),
        };
        if let Ok(false) = written {
            // Queued before the write's second bump (see `drop_everywhere`).
            self.defer_set(key.clone(), &stamped, keep, (epoch, 0), Vec::new());
        }
        // Failed or not, the old value is gone from memory here and told to the others: the
        // caller's source may hold the new one already.
        self.end_write(std::slice::from_ref(&key)).await;
        written?;
        self.fill_written(key, stamped, keep, epoch, 1);
        Ok(())
    }

    async fn remove(&self, key: &K) -> Result<()> {
        self.drop_everywhere(key).await
    }

    async fn get_many(&self, keys: &[K]) -> Result<Vec<Option<V>>> {
        let inner = &*self.inner;
        let metrics = &inner.metrics;
        let now = Now::new(&inner.clock);
        let fresh = |stamped: Stamped<V>| now.fresh(&stamped).then(|| stamped.into_value());
        let mut found: Vec<Option<V>> = match &inner.memory {
            Some(memory) => keys
                .iter()
                .map(|key| {
                    memory
                        .get(key)
                        .filter(|stamped| self.fresh_in_l1(stamped, &now))
                        .map(Stamped::into_value)
                })
                .collect(),
            None => vec![None; keys.len()],
        };
        let missing: Vec<usize> = (0..keys.len()).filter(|&at| found[at].is_none()).collect();
        metrics.l1_hits.add((keys.len() - missing.len()) as u64);
        let Some(remote) = inner.remote.as_ref().filter(|_| !missing.is_empty()) else {
            metrics.misses.add(missing.len() as u64);
            return Ok(found);
        };
        if inner.memory.is_none() {
            let fetched = remote.get_many(keys).await?;
            let fetched = fetched
                .into_iter()
                .map(|hit| hit.map(|stamped| (stamped, None)));
            found = self
                .trusted(keys, fetched.collect())
                .into_iter()
                .map(|hit| hit.and_then(|(stamped, _)| fresh(stamped)))
                .collect();
        } else {
            let missing_keys: Vec<K> = missing.iter().map(|&at| keys[at].clone()).collect();
            let epochs: Vec<Epoch> = missing_keys
                .iter()
                .map(|key| inner.epochs.read(key))
                .collect();
            let fetched = remote.get_many_with_ttl(&missing_keys).await?;
            let fetched = self.trusted(&missing_keys, fetched);
            for (((&at, key), hit), epoch) in
                missing.iter().zip(missing_keys).zip(fetched).zip(epochs)
            {
                if let Some((stamped, left)) = hit.filter(|(stamped, _)| now.fresh(stamped)) {
                    found[at] = Some(stamped.value().clone());
                    self.fill_written(key, stamped, left, epoch, 0);
                }
            }
        }
        let l2_hits = missing.iter().filter(|&&at| found[at].is_some()).count();
        metrics.l2_hits.add(l2_hits as u64);
        metrics.misses.add((missing.len() - l2_hits) as u64);
        Ok(found)
    }

    async fn insert_many(&self, entries: Vec<(K, V)>, ttl: Option<Duration>) -> Result<()> {
        let (until, keep) = self.lifetime(ttl);
        let stamped: Vec<(K, Stamped<V>)> = entries
            .into_iter()
            .map(|(key, value)| (key, Stamped::new(value, until, 0)))
            .collect();
        let epochs = self.begin_write(stamped.iter().map(|(key, _)| key));
        let keys: Vec<K> = stamped.iter().map(|(key, _)| key.clone()).collect();
        let written = match &self.inner.remote {
            Some(remote) => {
                let write = remote.insert_many(stamped.clone(), keep);
                self.write_l2_many(&keys, write).await
            }
            None => Ok(true),
        };
        if let Ok(false) = written {
            // Epochs were read after all of the batch's first bumps: none of its own since.
            for ((key, value), &epoch) in stamped.iter().zip(&epochs) {
                self.defer_set(key.clone(), value, keep, (epoch, 0), Vec::new());
            }
        }
        self.end_write(&keys).await;
        written?;
        let own = crate::epochs::shared_stripes(&epochs);
        for (((key, stamped), epoch), own) in stamped.into_iter().zip(epochs).zip(own) {
            self.fill_written(key, stamped, keep, epoch, own);
        }
        Ok(())
    }
}

/// Tags and prefixes, with the Redis level: groups of entries invalidated together in every
/// level and, through the backplane, in every instance's memory.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
impl<K, V, C> Tiered<K, V, crate::redis::RedisCache<K, Stamped<V>, C>>
where
    K: Hash + Eq + Clone + fmt::Display + serde::Serialize + serde::de::DeserializeOwned,
    K: Send + Sync + 'static,
    V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    /// Stores `value` in both levels like [`Cache::insert`], and files `key` under each of
    /// `tags` in Redis, so that [`invalidate_tag`](Self::invalidate_tag) removes it with the
    /// rest of its group (a product under `"category:7"` and `"brand:3"`, say).
    ///
    /// # Errors
    /// As [`Cache::insert`].
    pub async fn insert_with_tags(
        &self,
        key: K,
        value: V,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let (stamped, keep) = self.stamp(value, ttl, Duration::ZERO);
        let epoch = self.begin_write([&key])[0];
        let written = match &self.inner.remote {
            Some(remote) => {
                let write = remote.insert_with_tags(key.clone(), stamped.clone(), keep, tags);
                self.write_l2(&key, write).await
            }
            None => Ok(true),
        };
        if let Ok(false) = written {
            if let Some(recovery) = self.recovery() {
                recovery.tagged.get_or_init(|| {
                    Arc::new(|cache: Self, key, stamped, left, tags: Vec<String>| {
                        Box::pin(async move {
                            let Some(remote) = cache.remote() else {
                                return Ok(());
                            };
                            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                            remote.insert_with_tags(key, stamped, left, &tags).await
                        })
                    })
                });
            }
            let tags = tags.iter().map(|&tag| tag.to_owned()).collect();
            self.defer_set(key.clone(), &stamped, keep, (epoch, 0), tags);
        }
        self.end_write(std::slice::from_ref(&key)).await;
        written?;
        self.fill_written(key, stamped, keep, epoch, 1);
        Ok(())
    }

    /// Removes every entry filed under `tag` from both levels and from the other instances'
    /// memory, a page of keys at a time: how many keys the tag listed.
    ///
    /// With Redis down (and auto-recovery on, the default) the whole memory level is emptied,
    /// since the tag's keys cannot be listed, and the invalidation is queued and replayed when
    /// Redis answers again; until then no key is read from L2. The count is then of the keys
    /// listed before Redis failed.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Timeout`] or [`Error::CircuitOpen`] with auto-recovery off;
    /// the pages removed before the error stay removed.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        let Some(remote) = &self.inner.remote else {
            return Ok(0);
        };
        let mut listed = 0;
        let invalidated = self.invalidate_tag_in(remote, tag, &mut listed).await;
        let Err(error) = invalidated else {
            return Ok(listed);
        };
        let owned = tag.to_owned();
        let deferred = self.defer_group(&error, format!("tag:{tag}"), move |cache: Self| {
            let tag = owned.clone();
            Box::pin(async move {
                let Some(remote) = cache.remote() else {
                    return Ok(());
                };
                cache.invalidate_tag_in(remote, &tag, &mut 0).await
            })
        });
        if !deferred {
            return Err(error);
        }
        // Which keys Redis files under the tag is unknown: no queued value is written back
        // over the invalidation.
        self.demote_covered(|_, _| true);
        // Queued first: a read from now on does not trust L2; one under way does not fill L1
        // (see `Epochs`).
        self.inner.epochs.bump_all();
        if let Some(memory) = &self.inner.memory {
            memory.invalidate_all();
        }
        Ok(listed)
    }

    /// After L2 failed a tag or prefix invalidation: queues `replay` under `id` if the
    /// failure is an outage and auto-recovery is on (counted as an L2 error then), and makes
    /// sure a task replays it. Whether it did.
    fn defer_group(
        &self,
        error: &Error,
        id: String,
        replay: impl Fn(Self) -> recovery::Step + Send + Sync + 'static,
    ) -> bool {
        let Some(recovery) = self.recovery().filter(|_| recovery::is_outage(error)) else {
            return false;
        };
        self.inner.metrics.remote_errors.increment();
        recovery.queue_group(id, Arc::new(replay));
        self.replay_soon();
        true
    }

    /// Values queued for replay that a tag or prefix invalidation covers become removals:
    /// the invalidation came after them and must not be undone by their replay.
    fn demote_covered(&self, covered: impl Fn(&K, &[String]) -> bool) {
        if let Some(recovery) = self.recovery() {
            recovery.demote_if(covered);
        }
    }

    /// [`invalidate_tag`](Self::invalidate_tag)'s work in both levels, counting the keys
    /// listed into `listed`.
    async fn invalidate_tag_in(
        &self,
        remote: &crate::redis::RedisCache<K, Stamped<V>, C>,
        tag: &str,
        listed: &mut u64,
    ) -> Result<()> {
        let mut cursor = 0;
        let epochs = &self.inner.epochs;
        // Values queued here under the tag are not in Redis' list of it yet.
        self.demote_covered(|_, tags| tags.iter().any(|filed| filed == tag));
        loop {
            let (next, keys) = remote.tagged(tag, cursor).await?;
            *listed += keys.len() as u64;
            if !keys.is_empty() {
                let listed: std::collections::HashSet<&K> = keys.iter().collect();
                self.demote_covered(|key, _| listed.contains(key));
            }
            keys.iter().for_each(|key| epochs.bump(key));
            let removed = remote.remove_many(&keys).await;
            keys.iter().for_each(|key| epochs.bump(key));
            if let Some(memory) = &self.inner.memory {
                for key in &keys {
                    memory.remove(key);
                }
            }
            self.publish(&keys).await;
            removed?;
            if next == 0 {
                break;
            }
            cursor = next;
        }
        remote.forget_tag(tag).await
    }

    /// Removes every entry whose key (as text) starts with `prefix` from both levels and from
    /// the other instances' memory: how many Redis held. Scans the whole Redis keyspace and
    /// all of memory; prefer tags for groups known when values are written.
    ///
    /// With Redis down (and auto-recovery on, the default) memory and the other instances
    /// are cleared at once, and Redis' part is queued and replayed when it answers again; until
    /// then no key is read from L2, and the count is 0.
    ///
    /// # Errors
    /// [`Error::Redis`], [`Error::Timeout`] or [`Error::CircuitOpen`] with auto-recovery off.
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        // Keys are not known before the scan: every load and fill under way stays unstored.
        self.inner.epochs.bump_all();
        self.demote_covered(|key, _| key.to_string().starts_with(prefix));
        let removed = match &self.inner.remote {
            Some(remote) => remote.invalidate_prefix(prefix).await,
            None => Ok(0),
        };
        let removed = match removed {
            Err(error) => {
                let owned = prefix.to_owned();
                let deferred =
                    self.defer_group(&error, format!("prefix:{prefix}"), move |cache: Self| {
                        let prefix = owned.clone();
                        Box::pin(async move {
                            let Some(remote) = cache.remote() else {
                                return Ok(());
                            };
                            remote.invalidate_prefix(&prefix).await?;
                            if let Some(backplane) = &cache.inner.backplane {
                                backplane.publish_prefix(&prefix).await;
                            }
                            Ok(())
                        })
                    });
                if deferred { Ok(0) } else { Err(error) }
            }
            removed => removed,
        };
        self.inner.epochs.bump_all();
        let removed = removed?;
        if let Some(memory) = &self.inner.memory {
            memory.invalidate_if(|key, _| key.to_string().starts_with(prefix));
        }
        if let Some(backplane) = &self.inner.backplane {
            backplane.publish_prefix(prefix).await;
        }
        Ok(removed)
    }
}

/// Configures a [`Tiered`] cache; from [`Tiered::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct TieredBuilder<K, V, R> {
    memory: Option<MemoryCache<K, Stamped<V>>>,
    remote: Option<R>,
    metrics: Metrics,
    negative_ttl: Option<Duration>,
    freshness: Freshness,
    backplane: Option<Box<dyn Link<K>>>,
    across: Option<Shared<K>>,
    /// Auto-recovery's bound (`None`: off) and metrics.
    recovery: (Option<usize>, RecoveryMetrics),
}

impl<K, V, R: fmt::Debug> fmt::Debug for TieredBuilder<K, V, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TieredBuilder")
            .field("memory", &self.memory)
            .field("remote", &self.remote)
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

impl<K, V, R> TieredBuilder<K, V, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<V>>,
{
    /// The memory level (L1). Its own TTL bounds how long it keeps any value, fresh or
    /// stale: leave it unset (or long) for fail-safe to outlive an L2 outage.
    pub fn memory(mut self, memory: MemoryCache<K, Stamped<V>>) -> Self {
        self.memory = Some(memory);
        self
    }

    /// The remote level (L2), e.g. a `RedisCache<K, Stamped<V>>`.
    pub fn remote<R2: Remote<K, Stamped<V>>>(self, remote: R2) -> TieredBuilder<K, V, R2> {
        TieredBuilder {
            memory: self.memory,
            remote: Some(remote),
            metrics: self.metrics,
            negative_ttl: self.negative_ttl,
            freshness: self.freshness,
            backplane: self.backplane,
            across: self.across,
            recovery: self.recovery,
        }
    }

    /// Runs each load once across every instance sharing this Redis (brisk-dedup's
    /// `RedisFlight`, leases under `<prefix>{<key>}`): the instance that takes the lease
    /// loads and stores the value in both levels; the others wait for it (polling every 2 to
    /// 50 ms) and read the value from L2. A follower that finds no value, or cannot reach
    /// Redis, loads itself; a leader's failure reaches the followers as
    /// [`Error::Flight`] with its text. Needs a remote level for followers to read from.
    ///
    /// The coordination's calls have no timeout of their own: give `connection` a response
    /// and connection timeout (redis-rs' `ConnectionManagerConfig`), so that a dead Redis
    /// costs a load that much, not the client's full reconnect schedule.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn load_across_instances<C>(mut self, connection: C, prefix: impl Into<String>) -> Self
    where
        K: fmt::Display,
        C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
    {
        // The defaults are valid and only the prefix is set.
        let flight = brisk_dedup::redis::RedisFlight::builder(connection, crate::across::Announce)
            .prefix(prefix)
            .build()
            .expect("a RedisFlight with default settings is valid");
        self.across = Some(Shared {
            flight: Box::new(flight),
            name: Box::new(|key: &K| key.to_string()),
        });
        self
    }

    /// Keeps the memory level in step with the other instances of the service through a
    /// Redis backplane: every write and removal is published, and keys the others publish
    /// are dropped from memory. A lost subscription or a missed message makes every value in
    /// memory stale (see [`Backplane`](crate::redis::Backplane) for the gap policy). A write
    /// costs one more round trip (`PUBLISH`).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use brisk_cache::{MemoryCache, Stamped, Tiered, redis::{Backplane, RedisCache}};
    ///
    /// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let connection = redis::aio::ConnectionManager::new(client.clone()).await?;
    /// let remote: RedisCache<u64, Stamped<String>> =
    ///     RedisCache::builder(connection.clone()).prefix("products").build().await?;
    /// let products = Tiered::builder()
    ///     .memory(MemoryCache::builder().max_entries(10_000).ttl(Duration::from_secs(60)).build()?)
    ///     .remote(remote)
    ///     .backplane(Backplane::builder(client).channel("products:changes").build().await?)
    ///     .load_across_instances(connection, "products:load:")
    ///     .build()?;
    /// // One load across every instance; a write here leaves the others' memory.
    /// let name = products
    ///     .try_get_with(7, || async { Ok::<_, std::io::Error>("kettle".to_owned()) })
    ///     .await?;
    /// # let _ = name;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn backplane(mut self, backplane: crate::redis::Backplane<K>) -> Self
    where
        K: fmt::Display + serde::Serialize + serde::de::DeserializeOwned,
    {
        self.backplane = Some(Box::new(backplane));
        self
    }

    /// How long [`try_get_optional_with`](Tiered::try_get_optional_with) keeps an absence
    /// (a loader's `None`), usually much shorter than a found value's TTL. Default: as for
    /// values.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// How long a loaded or inserted value is fresh. Both levels keep it that long plus the
    /// longer of [`stale_while_revalidate`](Self::stale_while_revalidate) and
    /// [`fail_safe`](Self::fail_safe) (L1 no longer than its own TTL), whatever their own
    /// TTLs. Default: none; a value is fresh until a level expires it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use brisk_cache::{MemoryCache, Tiered};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let prices = Tiered::builder()
    ///     .memory(MemoryCache::builder().max_entries(10_000).build()?)
    ///     .fresh_for(Duration::from_secs(60))
    ///     .fail_safe(Duration::from_secs(3600)) // serve up to an hour stale if the database fails
    ///     .early_refresh(1.0) // XFetch
    ///     .build()?;
    /// let price = prices.try_get_with(7, || async { Ok::<u64, std::io::Error>(1999) }).await?;
    /// tokio::time::advance(Duration::from_secs(61)).await; // stale now
    /// let during_an_outage = prices
    ///     .try_get_with(7, || async { Err::<u64, _>(std::io::Error::other("database down")) })
    ///     .await?;
    /// assert_eq!(during_an_outage, price);
    /// # Ok(())
    /// # }
    /// ```
    pub fn fresh_for(mut self, fresh_for: Duration) -> Self {
        self.freshness.fresh_for = Some(fresh_for);
        self
    }

    /// Answers a value up to `bound` past its freshness at once, while one refresh per key
    /// runs in the background. Needs [`fresh_for`](Self::fresh_for). Default: off.
    pub fn stale_while_revalidate(mut self, bound: Duration) -> Self {
        self.freshness.stale_while_revalidate = Some(bound);
        self
    }

    /// Fail-safe: when a load fails or times out, answers the stale value instead, if it is
    /// no more than `max_age` past its freshness (counted in
    /// `brisk_cache_tiered_stale_served_total`). Needs [`fresh_for`](Self::fresh_for).
    /// Default: off; a failed load is an error.
    pub fn fail_safe(mut self, max_age: Duration) -> Self {
        self.freshness.fail_safe = Some(max_age);
        self
    }

    /// After fail-safe answered a stale value, L1 answers it as fresh for this long before
    /// the source is asked again, so a failing source is not asked by every request (with a
    /// memory level; without one, every request past the fail-safe answer asks again).
    /// Default: 30 s.
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.freshness.fail_safe_throttle = throttle;
        self
    }

    /// When a load with a fail-safe value to fall back on runs longer than this, its callers
    /// get the stale value and the load finishes in the background, storing its value.
    /// Needs [`fail_safe`](Self::fail_safe). Default: none.
    pub fn load_soft_timeout(mut self, timeout: Duration) -> Self {
        self.freshness.soft_timeout = Some(timeout);
        self
    }

    /// When a load runs longer than this, its callers get the stale value (within
    /// [`fail_safe`](Self::fail_safe)) or [`Error::LoadTimeout`]; the load finishes in the
    /// background and stores its value. Default: none; callers wait for the load.
    pub fn load_hard_timeout(mut self, timeout: Duration) -> Self {
        self.freshness.hard_timeout = Some(timeout);
        self
    }

    /// XFetch early refresh with its `beta` (1.0 is the paper's optimum; larger refreshes
    /// earlier): a reader of a fresh value starts a background refresh with probability
    /// `exp(−left / (load time · beta))`, so a hot key is reloaded shortly before it goes
    /// stale by one reader, and rarely misses at all. Needs [`fresh_for`](Self::fresh_for).
    /// Default: off.
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.freshness.early_refresh = Some(beta);
        self
    }

    /// Reports to `recorder`, each series labelled `name="<name>"`:
    /// `brisk_cache_tiered_hits_total` (with `level="l1"` or `"l2"`),
    /// `brisk_cache_tiered_misses_total` (neither level had it fresh),
    /// `brisk_cache_tiered_load_duration_seconds`, `brisk_cache_tiered_load_failures_total`,
    /// `brisk_cache_tiered_load_timeouts_total`,
    /// `brisk_cache_tiered_remote_errors_total` (L2 errors a load went past),
    /// `brisk_cache_tiered_stale_served_total` (with `reason="stale_while_revalidate"`,
    /// `"load_failed"` or `"load_timeout"`) and `brisk_cache_tiered_early_refreshes_total`.
    /// A caller that joins another caller's load is not counted again. Each level reports
    /// its own series through its own builder. Default: none.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self.recovery.1 = RecoveryMetrics::new(recorder, name);
        self
    }

    /// Auto-recovery (on by default, for up to 10 000 keys): when L2 fails a write, removal,
    /// or tag or prefix invalidation in an outage (Redis down or unreachable, a timeout, the
    /// circuit breaker open), the operation completes in memory, the caller succeeds, and
    /// L2's part is queued and replayed, in order, as soon as L2 answers again.
    ///
    /// - **One intent per key**, the latest: a value written, or a removal. A write of a key
    ///   whose intent waits queues behind it, so L2 takes a key's writes in order.
    /// - **Bounded**: at most `max_entries` keys (and group invalidations) wait; past that the
    ///   intent first in line (not the one being replayed) is dropped and counted (`brisk_cache_tiered_recovery_dropped_total`), and L2 may
    ///   then keep that key's old value until it expires.
    /// - **Until replayed, L2 is not trusted for the key**: a read answers the value being set
    ///   (or nothing, for a removal) without asking L2, and a load does not store into L2. A
    ///   queued tag or prefix invalidation leaves every key untrusted until it is replayed.
    /// - **Other instances**: a value queued here whose key another instance announces (or
    ///   any, after a backplane gap) becomes a removal, never an older value over a newer one.
    ///   Each replay is announced on the backplane.
    /// - **Replayed by a task of its own**, trying again every 25–200 ms while L2 fails; an
    ///   error that no retry would change (an encoding error, a command the server refuses)
    ///   drops the intent, counted.
    ///
    /// Metrics: `brisk_cache_tiered_recovery_{queued,replayed,dropped}_total`,
    /// `brisk_cache_tiered_recovery_pending`. A `tracing` event at WARN when recovery starts,
    /// and at INFO when the queue is empty again.
    ///
    /// Only writes are queued: an L2 read that fails is an error for [`Cache::get`] as before,
    /// and a miss for `try_get_with`.
    pub fn auto_recovery(mut self, max_entries: usize) -> Self {
        self.recovery.0 = Some(max_entries);
        self
    }

    /// No auto-recovery: an L2 failure on a write is returned to its caller (after memory
    /// has dropped the key's old value, as always).
    pub fn no_auto_recovery(mut self) -> Self {
        self.recovery.0 = None;
        self
    }

    /// Builds the cache.
    ///
    /// # Errors
    /// [`Error::Config`] when neither level is set, or for freshness settings that cannot
    /// work together (a stale window without `fresh_for`, a soft timeout without fail-safe
    /// or not below the hard one).
    pub fn build(self) -> Result<Tiered<K, V, R>>
    where
        R: 'static,
    {
        if self.negative_ttl == Some(Duration::ZERO) {
            return Err(Error::Config {
                setting: "negative_ttl",
                value: "0s".into(),
                reason: "must be longer than zero",
            });
        }
        self.freshness.check()?;
        if self.across.is_some() && self.remote.is_none() {
            return Err(Error::Config {
                setting: "load_across_instances",
                value: "no remote level".into(),
                reason: "followers read the leader's value from the remote level: set `remote` too",
            });
        }
        if self.memory.is_none() && self.remote.is_none() {
            return Err(Error::Config {
                setting: "memory",
                value: "none".into(),
                reason: "a tiered cache needs a memory level, a remote level, or both",
            });
        }
        if self.recovery.0 == Some(0) {
            return Err(Error::Config {
                setting: "auto_recovery",
                value: "0".into(),
                reason: "must keep at least one entry; `no_auto_recovery()` turns it off",
            });
        }
        let (recovery, recovery_metrics) = self.recovery;
        let recovery = recovery
            .filter(|_| self.remote.is_some())
            .map(|entries| Recovery::new(entries, recovery_metrics));
        let inner = Arc::new_cyclic(|weak: &Weak<Inner<K, V, R>>| {
            if let Some(backplane) = &self.backplane {
                backplane.attach(sink(weak.clone()));
            }
            Inner {
                memory: self.memory,
                remote: self.remote,
                flights: SingleFlight::new(),
                refreshes: SingleFlight::new(),
                metrics: self.metrics,
                negative_ttl: self.negative_ttl,
                freshness: self.freshness,
                clock: Clock::new(),
                generation: AtomicU32::new(1),
                backplane: self.backplane,
                across: self.across,
                epochs: Epochs::new(),
                behind: Mutex::new(HashMap::new()),
                recovery,
            }
        });
        Ok(Tiered { inner })
    }
}

/// A backplane's events applied to a cache's memory level, for as long as the cache lives.
fn sink<K, V, R>(cache: Weak<Inner<K, V, R>>) -> Sink<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Send + Sync + 'static,
{
    Box::new(move |event| {
        let Some(inner) = cache.upgrade() else {
            return;
        };
        match event {
            // Another instance wrote its L2 already: bumped before L1 (see `Epochs`).
            Event::Changed(keys) => {
                if let Some(recovery) = &inner.recovery {
                    keys.iter().for_each(|key| recovery.demote(key));
                }
                keys.iter().for_each(|key| inner.epochs.bump(key));
                if let Some(memory) = &inner.memory {
                    for key in &keys {
                        memory.remove(key);
                    }
                }
            }
            Event::Matching(matches) => {
                if let Some(recovery) = &inner.recovery {
                    recovery.demote_if(|key, _| matches(key));
                }
                inner.epochs.bump_all();
                if let Some(memory) = &inner.memory {
                    memory.invalidate_if(|key, _| matches(key));
                }
            }
            Event::Gap => {
                if let Some(recovery) = &inner.recovery {
                    recovery.demote_if(|_, _| true);
                }
                inner.epochs.bump_all();
                // Skips 0, which marks a copy stale in every generation.
                let _ = inner.generation.fetch_update(
                    Ordering::AcqRel,
                    Ordering::Acquire,
                    |generation| Some(generation.checked_add(1).unwrap_or(1)),
                );
            }
        }
    })
}

/// The replay task's place, held by its future from before it is spawned: freed if the task
/// ends any other way than by finding the queue empty (its runtime shut down, even before it
/// first ran), so that the next write starts another.
struct Running<K, V, R>(Weak<Inner<K, V, R>>, bool);

impl<K, V, R> Drop for Running<K, V, R> {
    fn drop(&mut self) {
        if !self.1
            && let Some(inner) = self.0.upgrade()
            && let Some(recovery) = &inner.recovery
        {
            recovery.abandon();
        }
    }
}

/// Auto-recovery's task: replays the queue in order while L2 answers; an intent that fails
/// in an outage goes to the back of the queue (the others are tried meanwhile) and the task
/// pauses before the next try. It ends once the queue is empty, or with the cache.
async fn replay<K, V, R>(cache: Weak<Inner<K, V, R>>, mut running: Running<K, V, R>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    R: Remote<K, Stamped<V>> + 'static,
{
    tracing::warn!(
        "brisk-cache: the remote level failed a write; auto-recovery queues writes and replays them when it answers again"
    );
    let (shortest, longest) = REPLAY_PAUSE;
    let mut pause = shortest;
    // Replays that succeeded: an intent failing while others succeed is not an outage.
    let mut progress = 0u64;
    loop {
        let Some(inner) = cache.upgrade() else {
            return;
        };
        let cache_now = Tiered { inner };
        let Some(recovery) = cache_now.recovery() else {
            return;
        };
        let Some((at, work)) = recovery.next() else {
            if recovery.stop() {
                continue;
            }
            running.1 = true;
            tracing::info!("brisk-cache: auto-recovery replayed every queued write");
            return;
        };
        // A panic (in a value's `Serialize`, say) gives up that intent, not the task.
        let replayed = crate::catch::catch_unwind(cache_now.replay_one(work))
            .await
            .ok();
        match replayed {
            Some(Ok(())) => {
                recovery.done(at, true);
                progress += 1;
                pause = shortest;
            }
            Some(Err(error)) if recovery::is_outage(&error) => {
                if recovery.postpone(at, progress) {
                    tracing::warn!(%error, "brisk-cache: a queued write kept failing while the remote level answered others; it is dropped");
                }
                // Not holding the cache while it waits: dropping it ends the task.
                drop(cache_now);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(longest);
            }
            Some(Err(error)) => {
                recovery.done(at, false);
                tracing::warn!(%error, "brisk-cache: the remote level refused a queued write; it is dropped");
            }
            None => {
                recovery.done(at, false);
                tracing::warn!("brisk-cache: replaying a queued write panicked; it is dropped");
            }
        }
    }
}
