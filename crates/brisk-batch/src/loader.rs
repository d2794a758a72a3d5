//! [`Loader`]: collects the keys asked for within a short window into batches for a
//! [`BatchLoad`], runs batches concurrently, and hands each caller its own result.

use std::{
    any::Any,
    collections::{HashMap, hash_map::Entry},
    fmt,
    future::{Future, poll_fn},
    panic::AssertUnwindSafe,
    pin::pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use brisk_metrics::Recorder;
use tokio::sync::{Notify, Semaphore, SetOnce};

use crate::{
    error::Error,
    load::{BatchLoad, Cache, Loaded},
    metrics::LoadMetrics,
};

type Key<L> = <L as BatchLoad>::Key;
type Value<L> = <L as BatchLoad>::Value;
/// What a load resolves to.
type LoadResult<L> = Result<Option<Value<L>>, Error<<L as BatchLoad>::Error>>;
/// The cache a loader keeps: absences (`None`) are cached too.
type BoxCache<L> = Box<dyn Cache<Key<L>, Option<Value<L>>>>;

/// The defaults, shared by [`Loader::new`] and the [`LoaderBuilder`] docs.
const DEFAULT_MAX_BATCH_SIZE: usize = 100;
const DEFAULT_DELAY: Duration = Duration::from_millis(1);
const DEFAULT_MAX_CONCURRENT_BATCHES: usize = 16;
/// The most keys a new batch makes room for before they arrive.
const MAX_PRESIZE: usize = 1024;
/// How far tokio's timer overshoots a sleep, about: see `close_and_run`.
const TIMER_SLACK: Duration = Duration::from_micros(500);
/// Scheduler turns in a row with no new key after which an adaptive batch closes, if it has
/// also heard of no new key for [`QUIET_FOR`].
const QUIET_TURNS: u32 = 2;
/// How long an adaptive batch must hear of no new key before it closes.
const QUIET_FOR: Duration = Duration::from_micros(10);
/// Scheduler turns an adaptive batch watches for keys before it waits on the timer instead.
const WATCHED_TURNS: u32 = 64;

/// Batches the keys that many callers ask for into few calls of a [`BatchLoad`]: the
/// DataLoader pattern, which turns N+1 queries into one query per batch.
///
/// A batch opens with the first key asked for. It closes as soon as it holds
/// [max batch size](LoaderBuilder::max_batch_size) keys (100), as soon as two scheduler turns
/// and 10 µs pass with no new key (nobody else is coming: a lone caller waits tens of
/// microseconds, not the window), or at the latest after [max delay](LoaderBuilder::max_delay) (1 ms) while keys keep
/// arriving. [`fixed_window`](LoaderBuilder::fixed_window) keeps every batch open for the
/// whole delay instead. Closed batches run at once, each in its own task, up to
/// [max concurrent batches](LoaderBuilder::max_concurrent_batches) (16) at a time; keys asked for
/// meanwhile go into the next batch. A key asked for twice within one batch is loaded once.
///
/// Cloning a `Loader` is cheap and shares its batches and cache.
///
/// diesel-async's `RunQueryDsl` has a blanket `load(self, connection)`, which method resolution
/// prefers to `Loader::load` on an owned loader wherever that trait is imported. Import it in
/// the functions that query (as the `users_by_id` example does), or call `load` through a
/// reference: `(&loader).load(id)`.
///
/// # Results
/// - `Ok(Some(value))`: the batch function returned a value for the key.
/// - `Ok(None)`: the batch function returned no entry for the key (a missing row).
/// - [`Error::Key`]: the batch function failed this key alone ([`Loaded::fail`]).
/// - [`Error::Batch`]: the batch function failed; every caller of that batch gets the error.
/// - [`Error::Panicked`]: the batch function panicked; every caller of that batch gets this.
///
/// # Cancellation
/// Dropping a `load` future gives up on the result, nothing more: the batch runs for the other
/// callers in it, and with a cache the value is still cached.
///
/// # Cache
/// Off by default. With [`LoaderBuilder::cache`], a key is loaded once for the life of the loader
/// (build one loader per request, as with facebook's DataLoader): a repeated load is answered
/// from the cache, or joins the batch already loading the key. Values and absences are cached,
/// errors never. [`prime`](Self::prime), [`clear`](Self::clear) and
/// [`clear_all`](Self::clear_all) edit the cache; without one they do nothing.
pub struct Loader<L: BatchLoad> {
    shared: Arc<Shared<L>>,
}

impl<L: BatchLoad> Clone for Loader<L> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<L: BatchLoad> fmt::Debug for Loader<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Loader")
            .field("max_batch_size", &self.shared.max_batch_size)
            .field("delay", &self.shared.delay)
            .field("cache", &state.cache.is_some())
            .field(
                "open_batch_keys",
                &state.open.as_ref().map_or(0, |open| open.keys.len()),
            )
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Loader`]; from [`Loader::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct LoaderBuilder<L: BatchLoad> {
    batch_fn: L,
    max_batch_size: usize,
    delay: Duration,
    fixed_window: bool,
    max_concurrent_batches: usize,
    cache: Option<BoxCache<L>>,
    metrics: LoadMetrics,
}

impl<L: BatchLoad> fmt::Debug for LoaderBuilder<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoaderBuilder")
            .field("max_batch_size", &self.max_batch_size)
            .field("delay", &self.delay)
            .field("fixed_window", &self.fixed_window)
            .field("max_concurrent_batches", &self.max_concurrent_batches)
            .field("cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl<L: BatchLoad> LoaderBuilder<L> {
    /// The most keys in one batch; a batch closes as soon as it is full. Default 100; 1 turns
    /// batching off, and 0 is refused by [`build`](Self::build).
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.max_batch_size = max;
        self
    }

    /// The most a batch stays open for more keys after its first one. Default 1 ms; zero
    /// closes it once the tasks already woken have run (one scheduler pass), which catches
    /// the loads one request fans out without adding a timer.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// `true` keeps each batch open for the whole [max delay](Self::max_delay), even when no
    /// key arrives: more keys per batch when loads come from requests a few hundred
    /// microseconds apart, at the cost of that wait on every load. Default `false`: a batch
    /// closes once two scheduler turns and 10 µs pass with no new key.
    pub fn fixed_window(mut self, fixed: bool) -> Self {
        self.fixed_window = fixed;
        self
    }

    /// `false` turns batching off: every key is loaded alone, at once (max batch size 1).
    /// Identical concurrent keys still share a load only when a [cache](Self::cache) is set.
    pub fn batching(self, enabled: bool) -> Self {
        if enabled {
            self
        } else {
            self.max_batch_size(1)
        }
    }

    /// How many batches may run at the same time; further closed batches wait their turn.
    /// Default 16: enough to keep a pool of 16 connections busy, few enough not to swamp the
    /// database. 1 runs one batch at a time; 0 is refused by [`build`](Self::build).
    pub fn max_concurrent_batches(mut self, max: usize) -> Self {
        self.max_concurrent_batches = max;
        self
    }

    /// Caches loaded values (and absences) in `cache` for the life of the loader: see
    /// [Cache](Loader#cache). `HashMap::new()` is the usual choice for a per-request loader.
    pub fn cache(mut self, cache: impl Cache<Key<L>, Option<Value<L>>>) -> Self {
        self.cache = Some(Box::new(cache));
        self
    }

    /// Reports loads, cache hits, batches, batch sizes and failed batches to `recorder`,
    /// labelled `name="<name>"`.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = LoadMetrics::new(recorder, name);
        self
    }

    /// Builds the loader, or [`Error::Config`] for a `max_batch_size` or
    /// `max_concurrent_batches` of 0. Batches are run with `tokio::spawn`, so loads must be
    /// made inside a tokio runtime.
    pub fn build(self) -> Result<Loader<L>, Error> {
        if self.max_batch_size == 0 {
            return Err(Error::config("max_batch_size", 0, "at least 1 key"));
        }
        if self.max_concurrent_batches == 0 {
            return Err(Error::config(
                "max_concurrent_batches",
                0,
                "at least 1 batch",
            ));
        }
        let permits = (self.max_concurrent_batches < Semaphore::MAX_PERMITS)
            .then(|| Arc::new(Semaphore::new(self.max_concurrent_batches)));
        Ok(Loader {
            shared: Arc::new(Shared {
                batch_fn: Arc::new(self.batch_fn),
                max_batch_size: self.max_batch_size,
                delay: self.delay,
                fixed_window: self.fixed_window,
                permits,
                caching: self.cache.is_some(),
                state: Mutex::new(State {
                    open: None,
                    next_id: 0,
                    cache: self.cache,
                    in_flight: HashMap::new(),
                }),
                metrics: self.metrics,
                unfinished: AtomicUsize::new(0),
            }),
        })
    }
}

impl<L: BatchLoad> Loader<L> {
    /// A loader with the defaults: batches of up to 100 keys, 1 ms delay, 16 concurrent
    /// batches, no cache.
    pub fn new(batch_fn: L) -> Self {
        Self::builder(batch_fn)
            .build()
            .expect("the default settings are valid")
    }

    /// Configures a loader.
    pub fn builder(batch_fn: L) -> LoaderBuilder<L> {
        LoaderBuilder {
            batch_fn,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            delay: DEFAULT_DELAY,
            fixed_window: false,
            max_concurrent_batches: DEFAULT_MAX_CONCURRENT_BATCHES,
            cache: None,
            metrics: LoadMetrics::noop(),
        }
    }

    /// The batch function.
    pub fn batch_fn(&self) -> &L {
        &self.shared.batch_fn
    }

    /// Loads one key, batched with the keys other callers ask for meanwhile. See
    /// [Results](Loader#results) for what each outcome means.
    pub async fn load(&self, key: Key<L>) -> LoadResult<L> {
        let lookup = {
            let mut actions = Actions::default();
            let mut state = self.shared.lock();
            let lookup = self.shared.lookup_caught(&mut state, key, &mut actions);
            drop(state);
            actions.start(&self.shared);
            lookup
        };
        lookup.resolve().await
    }

    /// Loads many keys, in as few batches as they fit, and returns their results in the order
    /// of `keys` (a key given twice gets its result twice).
    pub async fn load_many(&self, keys: impl IntoIterator<Item = Key<L>>) -> Vec<LoadResult<L>> {
        let lookups: Vec<Lookup<L>> = {
            let mut actions = Actions::default();
            let mut state = self.shared.lock();
            let lookups = keys
                .into_iter()
                .map(|key| self.shared.lookup_caught(&mut state, key, &mut actions))
                .collect();
            drop(state);
            actions.start(&self.shared);
            lookups
        };
        let mut results = Vec::with_capacity(lookups.len());
        for lookup in lookups {
            results.push(lookup.resolve().await);
        }
        results
    }

    /// How many batches this loader has opened that have not finished yet, the one taking
    /// keys included: 0 once every batch has answered its callers (and, with a cache, moved
    /// its keys out of flight). Callers that give up do not end a batch early; a diagnostic
    /// for leaks in tests and health checks.
    pub fn in_flight(&self) -> usize {
        self.shared.unfinished.load(Ordering::Acquire)
    }

    /// Puts `value` in the cache for `key`, unless the key is cached or being loaded already:
    /// priming does not overwrite (call [`clear`](Self::clear) first to replace). Returns
    /// whether the value was stored; always `false` without a cache.
    pub fn prime(&self, key: Key<L>, value: Value<L>) -> bool {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(cache) = &mut state.cache else {
            return false;
        };
        if state.in_flight.contains_key(&key) || cache.contains(&key) {
            return false;
        }
        cache.insert(key, Some(value));
        true
    }

    /// Forgets `key`: the next load of it calls the batch function again. A batch already
    /// loading it still answers its callers, but does not cache the result.
    pub fn clear(&self, key: &Key<L>) {
        let mut state = self.shared.lock();
        state.in_flight.remove(key);
        if let Some(cache) = &mut state.cache {
            cache.remove(key);
        }
    }

    /// Forgets every key, as [`clear`](Self::clear) does one.
    pub fn clear_all(&self) {
        let mut state = self.shared.lock();
        state.in_flight.clear();
        if let Some(cache) = &mut state.cache {
            cache.clear();
        }
    }
}

/// What a loader shares between its clones and the tasks running its batches.
struct Shared<L: BatchLoad> {
    batch_fn: Arc<L>,
    max_batch_size: usize,
    delay: Duration,
    fixed_window: bool,
    /// `None` when the concurrency is unlimited.
    permits: Option<Arc<Semaphore>>,
    /// Whether `state.cache` is set; read without the lock.
    caching: bool,
    state: Mutex<State<L>>,
    metrics: LoadMetrics,
    /// Batches opened whose task has not finished yet: see [`Loader::in_flight`].
    unfinished: AtomicUsize,
}

struct State<L: BatchLoad> {
    /// The batch taking keys, if any.
    open: Option<Open<L>>,
    /// The id of the next batch to open, so that a timer closes only its own batch.
    next_id: u64,
    cache: Option<BoxCache<L>>,
    /// With a cache: keys of the batches not yet finished, so a repeated load joins them.
    in_flight: HashMap<Key<L>, Slot<L>>,
}

/// A batch taking keys.
struct Open<L: BatchLoad> {
    id: u64,
    keys: Vec<Key<L>>,
    /// Where each key sits in `keys`: duplicate keys share one place.
    index: HashMap<Key<L>, usize>,
    batch: Arc<Batch<L>>,
}

/// Where the callers of one batch wait for its results.
struct Batch<L: BatchLoad> {
    done: SetOnce<Done<L>>,
    /// Wakes the batch's task when the batch fills up.
    full: Notify,
    /// The keys of the batch once it filled up, for its task to take.
    closed: Mutex<Option<Vec<Key<L>>>>,
}

impl<L: BatchLoad> Batch<L> {
    fn lock_closed(&self) -> MutexGuard<'_, Option<Vec<Key<L>>>> {
        self.closed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A finished batch: the result per key, in the order of its keys, or one error for all.
enum Done<L: BatchLoad> {
    Loaded(Vec<LoadResult<L>>),
    Failed(Error<L::Error>),
}

/// One key's place in a batch.
struct Slot<L: BatchLoad> {
    batch: Arc<Batch<L>>,
    index: usize,
}

impl<L: BatchLoad> Clone for Slot<L> {
    fn clone(&self) -> Self {
        Self {
            batch: Arc::clone(&self.batch),
            index: self.index,
        }
    }
}

impl<L: BatchLoad> Slot<L> {
    async fn wait(self) -> LoadResult<L> {
        match self.batch.done.wait().await {
            Done::Loaded(results) => results[self.index].clone(),
            Done::Failed(error) => Err(error.clone()),
        }
    }
}

enum Lookup<L: BatchLoad> {
    Cached(Option<Value<L>>),
    Wait(Slot<L>),
    /// The key's `Hash` or `Eq`, or the cache, panicked while the key was looked up.
    Panicked(Error<L::Error>),
}

impl<L: BatchLoad> Lookup<L> {
    async fn resolve(self) -> LoadResult<L> {
        match self {
            Self::Cached(value) => Ok(value),
            Self::Wait(slot) => slot.wait().await,
            Self::Panicked(error) => Err(error),
        }
    }
}

/// Tasks to start once the state lock is released: one per batch opened by this call.
struct Actions<L: BatchLoad> {
    opened: Vec<(u64, Arc<Batch<L>>)>,
}

impl<L: BatchLoad> Default for Actions<L> {
    fn default() -> Self {
        Self { opened: Vec::new() }
    }
}

impl<L: BatchLoad> Actions<L> {
    fn start(self, shared: &Arc<Shared<L>>) {
        // Every batch's guard first: if a spawn panics (no runtime), the guards not yet moved
        // into a task are dropped with this vector and answer their batches.
        let finishes: Vec<Finish<L>> = self
            .opened
            .into_iter()
            .map(|(id, batch)| Finish {
                shared: Arc::clone(shared),
                id,
                batch,
            })
            .collect();
        for finish in finishes {
            tokio::spawn(Arc::clone(shared).close_and_run(finish));
        }
    }
}

impl<L: BatchLoad> Shared<L> {
    fn lock(&self) -> MutexGuard<'_, State<L>> {
        // The state is consistent between statements, so a panic elsewhere (in a cache
        // implementation, say) leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`lookup`](Self::lookup), with a panic in the key's `Hash` or `Eq` or in the cache
    /// caught and answered as [`Error::Panicked`] to this caller. The state stays usable: a
    /// batch opened for the key is still started by `actions` (and runs without it).
    fn lookup_caught(
        &self,
        state: &mut State<L>,
        key: Key<L>,
        actions: &mut Actions<L>,
    ) -> Lookup<L> {
        std::panic::catch_unwind(AssertUnwindSafe(|| self.lookup(state, key, actions)))
            .unwrap_or_else(|payload| Lookup::Panicked(Error::panicked(1, payload)))
    }

    /// Answers `key` from the cache, joins it to a batch loading it, or adds it to the open
    /// batch (opening one if needed).
    fn lookup(&self, state: &mut State<L>, key: Key<L>, actions: &mut Actions<L>) -> Lookup<L> {
        self.metrics.loads.increment();
        if let Some(cache) = &mut state.cache {
            if let Some(value) = cache.get(&key) {
                self.metrics.cache_hits.increment();
                return Lookup::Cached(value);
            }
            if let Some(slot) = state.in_flight.get(&key) {
                self.metrics.cache_hits.increment();
                return Lookup::Wait(slot.clone());
            }
        }
        let open = state.open.get_or_insert_with(|| {
            let id = state.next_id;
            state.next_id += 1;
            self.unfinished.fetch_add(1, Ordering::Relaxed);
            let batch = Arc::new(Batch {
                done: SetOnce::new(),
                full: Notify::new(),
                closed: Mutex::new(None),
            });
            actions.opened.push((id, Arc::clone(&batch)));
            // Sized for a full batch up front: growing a map under the lock costs every caller.
            let capacity = self.max_batch_size.min(MAX_PRESIZE);
            Open {
                id,
                keys: Vec::with_capacity(capacity),
                index: HashMap::with_capacity(capacity),
                batch,
            }
        });
        let in_flight_key = self.caching.then(|| key.clone());
        let index = match open.index.entry(key) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                let index = open.keys.len();
                open.keys.push(entry.key().clone());
                entry.insert(index);
                index
            }
        };
        let slot = Slot {
            batch: Arc::clone(&open.batch),
            index,
        };
        let full = open.keys.len() >= self.max_batch_size;
        if let Some(key) = in_flight_key {
            state.in_flight.insert(key, slot.clone());
        }
        if full && let Some(open) = state.open.take() {
            // Hand the keys to the batch's task and wake it: it runs the batch now.
            *open.batch.lock_closed() = Some(open.keys);
            open.batch.full.notify_one();
        }
        Lookup::Wait(slot)
    }

    /// The task of batch `id`, spawned when it opens: waits until the batch is full or its
    /// delay is up, then runs it and hands out the results.
    ///
    /// `finish` is made before the task is spawned: whatever stops this task before the batch
    /// is done (its runtime shutting down, before or after its first poll), the batch's
    /// callers are answered and its keys leave the loader's state.
    async fn close_and_run(self: Arc<Self>, finish: Finish<L>) {
        let (id, batch) = (finish.id, Arc::clone(&finish.batch));
        let opened = tokio::time::Instant::now();
        if self.delay.is_zero() {
            tokio::task::yield_now().await;
        } else if self.fixed_window || self.keys_keep_coming(id).await {
            // tokio's timer rounds a deadline up to its next 1 ms tick and then sleeps in whole
            // milliseconds, so a plain sleep overshoots by about a millisecond; aiming half a
            // millisecond early closes the batch about `delay` after its first key.
            let aim = timer_aim(self.delay);
            let left = aim.saturating_sub(opened.elapsed());
            let _ = tokio::time::timeout(left, batch.full.notified()).await;
        }
        // The state first: `lookup` moves a full batch's keys into `closed` while it holds the
        // state lock, so once that lock is ours the keys are in one place or the other. Each
        // guard is dropped at the end of its statement (`lookup` locks in the same order).
        let open = self.lock().open.take_if(|open| open.id == id);
        let Some(keys) = open
            .map(|open| open.keys)
            .or_else(|| batch.lock_closed().take())
        else {
            return;
        };
        if keys.is_empty() {
            // Its only key panicked in `lookup`: nobody waits for this batch.
            let _ = batch.done.set(Done::Loaded(Vec::new()));
            return;
        }
        self.run(keys, &batch).await;
    }

    /// Watches open batch `id` for a few scheduler turns: `false` once two turns in a row
    /// bring no new key (or the batch closed on its size), so it can run now; `true` when keys
    /// are still arriving after [`WATCHED_TURNS`], so it should wait out its window.
    async fn keys_keep_coming(&self, id: u64) -> bool {
        let open_keys = || {
            self.lock()
                .open
                .as_ref()
                .filter(|open| open.id == id)
                .map(|open| open.keys.len())
        };
        let Some(mut seen) = open_keys() else {
            return false;
        };
        let (mut quiet, mut last_key) = (0, std::time::Instant::now());
        for _ in 0..WATCHED_TURNS {
            tokio::task::yield_now().await;
            let Some(now) = open_keys() else {
                return false;
            };
            if now == seen {
                quiet += 1;
                if quiet >= QUIET_TURNS && last_key.elapsed() >= QUIET_FOR {
                    return false;
                }
            } else {
                (seen, quiet, last_key) = (now, 0, std::time::Instant::now());
            }
        }
        true
    }

    /// Runs a closed batch and hands out its results.
    ///
    /// The whole step runs under one `catch_unwind`: the call of the batch function (a panic
    /// before it returns its future) as well as its future, the split into per-key results
    /// (which hashes the keys) and the cache update. A panic in any of them answers every
    /// caller of the batch with [`Error::Panicked`] and takes the batch's keys out of flight,
    /// so later loads of them call the batch function again.
    async fn run(&self, keys: Vec<Key<L>>, batch: &Arc<Batch<L>>) {
        let _permit = match &self.permits {
            // The semaphore is never closed.
            Some(permits) => permits.acquire().await.ok(),
            None => None,
        };
        let size = keys.len();
        self.metrics.batches.increment();
        self.metrics.batch_size.record(size as u64);
        let step = catch_unwind(async {
            let done = match self.batch_fn.load(&keys).await {
                Ok(loaded) => Done::Loaded(per_key::<L>(&keys, loaded)),
                Err(error) => Done::Failed(Error::Batch {
                    size,
                    error: Arc::new(error),
                }),
            };
            if self.caching {
                self.remember(&keys, batch, &done);
            }
            done
        })
        .await;
        let done = step.unwrap_or_else(|payload| {
            self.forget(batch);
            Done::Failed(Error::panicked(size, payload))
        });
        if matches!(done, Done::Failed(_)) {
            self.metrics.failures.increment();
        }
        // Only `run` sets it, once (or `Finish`, if `run` never gets here).
        let _ = batch.done.set(done);
    }

    /// Takes every key of `batch` out of flight, without hashing a key (a key whose `Hash`
    /// panicked may be among them).
    fn forget(&self, batch: &Arc<Batch<L>>) {
        if self.caching {
            self.lock()
                .in_flight
                .retain(|_, slot| !Arc::ptr_eq(&slot.batch, batch));
        }
    }

    /// Moves the keys of a finished batch from in flight to the cache (successes only), unless
    /// they were cleared meanwhile.
    fn remember(&self, keys: &[Key<L>], batch: &Arc<Batch<L>>, done: &Done<L>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        for (index, key) in keys.iter().enumerate() {
            let ours = state
                .in_flight
                .get(key)
                .is_some_and(|slot| Arc::ptr_eq(&slot.batch, batch));
            if !ours {
                continue;
            }
            state.in_flight.remove(key);
            if let (Done::Loaded(results), Some(cache)) = (done, &mut state.cache)
                && let Ok(value) = &results[index]
            {
                cache.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Made for a batch before its task is spawned, and moved into the task: if the batch is
/// not done when it is dropped (the task's runtime shut down and dropped it, polled or not,
/// or `tokio::spawn` panicked outside a runtime), the batch leaves the loader's state and its
/// callers get [`Error::Abandoned`] instead of waiting forever.
struct Finish<L: BatchLoad> {
    shared: Arc<Shared<L>>,
    id: u64,
    batch: Arc<Batch<L>>,
}

impl<L: BatchLoad> Drop for Finish<L> {
    fn drop(&mut self) {
        if !self.batch.done.initialized() {
            // Not hashing any key here, and the guard is dropped before `forget` locks again.
            let open = self.shared.lock().open.take_if(|open| open.id == self.id);
            drop(open);
            self.shared.forget(&self.batch);
            let _ = self.batch.done.set(Done::Failed(Error::Abandoned));
        }
        self.shared.unfinished.fetch_sub(1, Ordering::Release);
    }
}

/// How long to sleep on tokio's timer for a batch delay of `delay`: half a millisecond less
/// (tokio rounds a deadline up to its next 1 ms tick, then sleeps in whole milliseconds), but
/// never less than `delay` itself or half a millisecond, whichever is shorter.
fn timer_aim(delay: Duration) -> Duration {
    delay
        .saturating_sub(TIMER_SLACK)
        .max(delay.min(TIMER_SLACK))
}

/// Runs `future` to completion, catching a panic in it (as its payload), so that the batch's
/// callers hear of it instead of waiting forever.
async fn catch_unwind<F: Future>(future: F) -> Result<F::Output, Box<dyn Any + Send>> {
    let mut future = pin!(future);
    poll_fn(
        |cx| match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(payload)),
        },
    )
    .await
}

/// The batch function's answer as one result per key, in the order of `keys`.
fn per_key<L: BatchLoad>(
    keys: &[Key<L>],
    mut loaded: Loaded<Key<L>, Value<L>, L::Error>,
) -> Vec<LoadResult<L>> {
    keys.iter()
        .map(|key| match loaded.take(key) {
            Some(Ok(value)) => Ok(Some(value)),
            Some(Err(error)) => Err(Error::key(key, Arc::new(error))),
            None => Ok(None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_is_aimed_half_a_millisecond_early_but_never_below_the_delay_or_half_a_ms() {
        let aim = |us| timer_aim(Duration::from_micros(us)).as_micros();
        assert_eq!(aim(10_000), 9_500);
        assert_eq!(aim(1_000), 500);
        assert_eq!(aim(800), 500);
        assert_eq!(aim(300), 300);
    }
}
