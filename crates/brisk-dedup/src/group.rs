//! The in-process single-flight group.
//!
//! Each key in flight has one [`Flight`] in a sharded map. The caller that inserts it is the
//! leader and runs its work inside its own task (nothing is spawned). Later callers for the
//! key are waiters: they hold the flight and sleep on its `Notify` until the state changes.
//!
//! State machine of a flight (`state`, an atomic; the shard mutex is taken first by the
//! leader that orphans it and by a waiter that removes it):
//!
//! ```text
//! Running --leader completes--> `done` set          waiters clone the outcome, lock-free
//! Running --leader dropped----> Orphaned           one waiter claims it: Orphaned -> Running
//! ```
//!
//! The leader removes the flight from the map when it completes, so nothing outlives the
//! execution; when it is dropped with nobody waiting, it removes the flight as well. A waiter
//! dropped while the flight is orphaned removes it if it was the last one waiting.
//!
//! Who is waiting is counted explicitly (`waiters`), changed only under the shard lock: a
//! caller joins under it, and a waiter leaves under it (dropped, timed out, or taking over).
//! Reference counts are no guide, because a reference is released after the lock is: two
//! waiters dropped at once each saw the other's and neither removed the flight.

use std::{
    borrow::Borrow,
    collections::{HashMap, hash_map::RandomState},
    convert::Infallible,
    fmt,
    future::Future,
    hash::{BuildHasher, Hash},
    marker::PhantomData,
    pin::pin,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU8, AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_metrics::Recorder;
use tokio::sync::Notify;

use crate::{
    Error,
    catch::{self, CatchUnwind},
    metrics::Metrics,
};

type Shard<K, T, E> = Mutex<HashMap<K, Arc<Flight<T, E>>>>;

/// A group of keyed executions with duplicate suppression.
///
/// The value `T` and the error `E` are cloned for each waiter, so both must be `Clone`: wrap
/// an error type that is not (such as `std::io::Error`) in an `Arc`.
///
/// Call [`run`](Self::run) with a key and the work for it. If no execution for the key is in
/// flight, the caller runs its work; callers arriving while it runs wait for it and receive a
/// clone of its result, errors included. When the execution finishes the key is forgotten: the
/// next call runs the work again (keep results with a cache, such as brisk-cache).
///
/// # Guarantees
/// - At most one execution per key at a time, unless [`forget`](Self::forget) is called.
/// - **Cancellation**: the work runs inside the caller that leads, and nothing is spawned. If
///   that caller is dropped, the work is dropped with it, and one waiter (if any) takes over by
///   running its own work. Waiters are never left hanging.
/// - **Panics** in the work are caught: every caller of that execution gets
///   [`Error::Panicked`], and the group stays usable.
/// - A waiter with a [wait timeout](SingleFlightBuilder::wait_timeout) leaves when it expires; the execution
///   goes on for the others.
///
/// # Example
/// ```
/// use brisk_dedup::SingleFlight;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), brisk_dedup::Error<String>> {
/// let group: SingleFlight<String, u64, String> = SingleFlight::new();
/// let (a, b) = tokio::join!(
///     group.run("user:42", || async {
///         tokio::task::yield_now().await; // still running when the second call arrives
///         Ok(42)
///     }),
///     group.run("user:42", || async { unreachable!("joins the first call") }),
/// );
/// assert_eq!((a?, b?), (42, 42));
/// # Ok(())
/// # }
/// ```
pub struct SingleFlight<K, T, E = Infallible> {
    shards: Box<[Shard<K, T, E>]>,
    hasher: RandomState,
    wait_timeout: Option<Duration>,
    metrics: Metrics,
}

struct Flight<T, E> {
    /// Set once by the leader that completes; read without a lock by woken waiters.
    done: OnceLock<Result<T, Error<E>>>,
    /// [`RUNNING`] or [`ORPHANED`]. An atomic rather than a mutex: with a thousand waiters on
    /// one key, each reads it twice, and a lock there was most of the hot key's cost.
    state: AtomicU8,
    /// Callers waiting for this flight (not the leader). Changed only under the shard lock;
    /// an atomic so that it can live in the shared flight. A waiter that receives the outcome
    /// does not leave the count: the flight is out of the map by then and the count unused.
    waiters: AtomicUsize,
    /// Waiters sleep on one of these, spread by thread: with a thousand waiters on one key,
    /// a single `Notify`'s lock was where they queued (tokio's `watch` spreads the same way).
    notify: [Notify; WAKE_SHARDS],
}

/// How many `Notify`s a flight spreads its waiters over.
const WAKE_SHARDS: usize = 8;

thread_local! {
    /// Which of a flight's `Notify`s this thread's next waiter sleeps on.
    static WAKE_SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The `Notify` a new waiter registers with, round-robin per thread.
fn wake_shard() -> usize {
    WAKE_SHARD.with(|next| {
        let shard = next.get();
        next.set((shard + 1) % WAKE_SHARDS);
        shard
    })
}

/// A leader is running the work.
const RUNNING: u8 = 0;
/// The leader was dropped; the first waiter to swap this back to [`RUNNING`] leads.
const ORPHANED: u8 = 1;

impl<T, E> Flight<T, E> {
    fn is_orphaned(&self) -> bool {
        self.state.load(Ordering::Acquire) == ORPHANED
    }

    /// Wakes every waiter, whichever `Notify` it sleeps on.
    fn notify_all(&self) {
        for notify in &self.notify {
            notify.notify_waiters();
        }
    }
}

impl<K, T, E> SingleFlight<K, T, E> {
    /// A group with the default settings: no wait timeout, no metrics.
    pub fn new() -> Self {
        SingleFlightBuilder::default()
            .build()
            .expect("the default settings are valid")
    }

    /// Configures a group.
    pub fn builder() -> SingleFlightBuilder<K, T, E> {
        SingleFlightBuilder::default()
    }

    #[cfg(feature = "redis")]
    pub(crate) fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    /// How many keys have an execution in flight now.
    pub fn in_flight(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

impl<K, T, E> Default for SingleFlight<K, T, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T, E> fmt::Debug for SingleFlight<K, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlight")
            .field("shards", &self.shards.len())
            .field("in_flight", &self.in_flight())
            .field("wait_timeout", &self.wait_timeout)
            .finish_non_exhaustive()
    }
}

impl<K, T, E> SingleFlight<K, T, E>
where
    K: Hash + Eq,
    T: Clone,
    E: Clone,
{
    /// Runs `work` for `key`, or joins the execution already in flight for it.
    ///
    /// `work` is called at most once, and only if this caller leads: either no execution was
    /// in flight, or the caller that led was dropped and this one took over.
    ///
    /// # Errors
    /// [`Error::Work`] with the work's error, [`Error::Panicked`] if it panicked, and
    /// [`Error::WaitTimeout`] if this caller waited longer than the group's wait timeout.
    pub async fn run<Q, F, Fut>(&self, key: &Q, work: F) -> Result<T, Error<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + fmt::Debug + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let shard = self.shard(key);
        // Decided under the shard lock, acted upon after it is released.
        let (flight, leads) = {
            let mut map = lock(shard);
            match map.get(key) {
                Some(flight) => {
                    flight.waiters.fetch_add(1, Ordering::Relaxed);
                    (Arc::clone(flight), false)
                }
                None => {
                    let flight = Arc::new(Flight {
                        done: OnceLock::new(),
                        state: AtomicU8::new(RUNNING),
                        waiters: AtomicUsize::new(0),
                        notify: std::array::from_fn(|_| Notify::new()),
                    });
                    map.insert(key.to_owned(), Arc::clone(&flight));
                    (flight, true)
                }
            }
        };
        if leads {
            self.lead(shard, key, flight, work).await
        } else {
            self.metrics.coalesced.increment();
            self.wait(shard, key, flight, work).await
        }
    }

    /// Forgets the execution in flight for `key`, if any: the next call for the key starts a
    /// new execution, while callers already waiting still receive the old one's result. This
    /// is the one way to have two executions of a key at once, e.g. after learning that the
    /// running one will return stale data. Returns whether an execution was in flight.
    pub fn forget<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        lock(shard).remove(key).is_some()
    }

    /// Whether an execution for `key` is in flight now: lets a caller skip starting a task
    /// that would only join it (a background refresh, say). The answer may be out of date as
    /// soon as it is returned; `run` stays the one that decides who leads.
    pub fn is_in_flight<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        lock(self.shard(key)).contains_key(key)
    }

    /// The part of the map that holds `key`.
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &Shard<K, T, E> {
        &self.shards[self.hasher.hash_one(key) as usize % self.shards.len()]
    }

    async fn lead<Q, F, Fut>(
        &self,
        shard: &Shard<K, T, E>,
        key: &Q,
        flight: Arc<Flight<T, E>>,
        work: F,
    ) -> Result<T, Error<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.metrics.executions.increment();
        let mut guard = LeaderGuard {
            shard,
            key,
            flight: &flight,
            armed: true,
        };
        // Calling `work` inside the catching future catches a panic in the call itself too.
        let caught = CatchUnwind::new(async move { work().await }).await;
        let outcome = catch::outcome(caught, key, &self.metrics);
        guard.armed = false;
        guard.complete(outcome)
    }

    async fn wait<Q, F, Fut>(
        &self,
        shard: &Shard<K, T, E>,
        key: &Q,
        flight: Arc<Flight<T, E>>,
        work: F,
    ) -> Result<T, Error<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + fmt::Debug + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut guard = WaiterGuard {
            shard,
            key,
            flight: &flight,
            armed: true,
        };
        // The clock is read only when a timeout is set. A timeout too long for an `Instant`
        // (`Duration::MAX`) is no limit.
        let deadline = self.wait_timeout.and_then(|timeout| {
            let deadline = tokio::time::Instant::now().checked_add(timeout)?;
            Some((deadline, timeout))
        });
        let next = loop {
            // Checked before registering too, so that a woken waiter usually returns without
            // touching the `Notify` again (with 1000 waiters, that lock is contended).
            if let Some(next) = next_step(&flight) {
                break next;
            }
            let mut notified = pin!(flight.notify[wake_shard()].notified());
            // Registered before the state is read again, so a change after the read wakes us.
            notified.as_mut().enable();
            if let Some(next) = next_step(&flight) {
                break next;
            }
            match deadline {
                None => notified.await,
                Some((deadline, timeout)) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        self.metrics.wait_timeouts.increment();
                        return Err(Error::WaitTimeout {
                            key: format!("{key:?}"),
                            waited: timeout,
                        });
                    }
                }
            }
        };
        guard.armed = false;
        drop(guard);
        match next {
            Next::Finished(outcome) => outcome,
            Next::TakeOver => {
                // No longer a waiter but the leader: its guard decides from here.
                {
                    let _map = lock(shard);
                    flight.waiters.fetch_sub(1, Ordering::Relaxed);
                }
                self.metrics.handovers.increment();
                self.lead(shard, key, flight, work).await
            }
        }
    }
}

/// What a waiter does next.
enum Next<T, E> {
    Finished(Result<T, Error<E>>),
    /// The leader was dropped and this waiter claimed the flight.
    TakeOver,
}

/// Reads the flight's state, claiming it if orphaned; `None` while it runs.
fn next_step<T: Clone, E: Clone>(flight: &Flight<T, E>) -> Option<Next<T, E>> {
    if let Some(outcome) = flight.done.get() {
        return Some(Next::Finished(outcome.clone()));
    }
    // Only one waiter wins the swap. While the flight runs, the load alone decides: no write
    // to a line that every waiter reads. The leader may have completed since the check above;
    // it sets `done` before it notifies, so a registered waiter is woken and looks again.
    let claimed = flight.is_orphaned()
        && flight
            .state
            .compare_exchange(ORPHANED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
    claimed.then_some(Next::TakeOver)
}

/// Completes the flight, or hands it over if the leader is dropped before that.
struct LeaderGuard<'a, K, Q: ?Sized, T, E>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq,
{
    shard: &'a Shard<K, T, E>,
    key: &'a Q,
    flight: &'a Arc<Flight<T, E>>,
    armed: bool,
}

impl<K, Q: ?Sized, T: Clone, E: Clone> LeaderGuard<'_, K, Q, T, E>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq,
{
    fn complete(&self, outcome: Result<T, Error<E>>) -> Result<T, Error<E>> {
        {
            let mut map = lock(self.shard);
            if map
                .get(self.key)
                .is_some_and(|f| Arc::ptr_eq(f, self.flight))
            {
                map.remove(self.key);
            }
        }
        // Out of the map, the flight can gain no waiter: if we hold the only reference, nobody
        // needs the outcome and the value moves to the leader without a clone.
        if Arc::strong_count(self.flight) > 1 {
            // Only the one leader of a flight completes it, so `set` cannot find a value.
            let _ = self.flight.done.set(outcome.clone());
            self.flight.notify_all();
        }
        outcome
    }
}

impl<K, Q: ?Sized, T, E> Drop for LeaderGuard<'_, K, Q, T, E>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq,
{
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The leader was dropped mid-work. Under the shard lock no waiter comes or goes.
        let mut map = lock(self.shard);
        let in_map = map
            .get(self.key)
            .is_some_and(|f| Arc::ptr_eq(f, self.flight));
        if self.flight.waiters.load(Ordering::Relaxed) == 0 {
            if in_map {
                map.remove(self.key);
            }
            return;
        }
        self.flight.state.store(ORPHANED, Ordering::Release);
        drop(map);
        self.flight.notify_all();
    }
}

/// Leaves the flight's waiters when a waiter is dropped or times out, and removes an orphaned
/// flight that its last waiter abandons, so it is not retained.
struct WaiterGuard<'a, K, Q: ?Sized, T, E>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq,
{
    shard: &'a Shard<K, T, E>,
    key: &'a Q,
    flight: &'a Arc<Flight<T, E>>,
    armed: bool,
}

impl<K, Q: ?Sized, T, E> Drop for WaiterGuard<'_, K, Q, T, E>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq,
{
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut map = lock(self.shard);
        let left = self.flight.waiters.fetch_sub(1, Ordering::Relaxed) - 1;
        // The leader orphans under this lock, so the state read here is settled; a waiter
        // that claimed the flight still counts until it leaves under this lock too.
        if left == 0
            && self.flight.is_orphaned()
            && map
                .get(self.key)
                .is_some_and(|f| Arc::ptr_eq(f, self.flight))
        {
            map.remove(self.key);
        }
    }
}

/// Ties a builder to the group type it builds, without owning any of its parts.
type Marker<K, T, E> = PhantomData<fn() -> (K, T, E)>;

/// Builds a [`SingleFlight`].
#[must_use = "call `build()` to get the group"]
pub struct SingleFlightBuilder<K, T, E = Infallible> {
    wait_timeout: Option<Duration>,
    shards: usize,
    metrics: Metrics,
    group: Marker<K, T, E>,
}

impl<K, T, E> Default for SingleFlightBuilder<K, T, E> {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            wait_timeout: None,
            shards: (cpus * 4).next_power_of_two(),
            metrics: Metrics::noop(),
            group: PhantomData,
        }
    }
}

impl<K, T, E> fmt::Debug for SingleFlightBuilder<K, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SingleFlightBuilder")
            .field("wait_timeout", &self.wait_timeout)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<K, T, E> SingleFlightBuilder<K, T, E> {
    /// How long a caller waits for another caller's execution before it leaves with
    /// [`Error::WaitTimeout`]. The execution goes on for the others. Default: no limit.
    /// A timeout too long to compute a deadline from (`Duration::MAX`, or anything past what
    /// `Instant` can hold) is no limit too.
    ///
    /// Needs a tokio runtime with the time driver enabled.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = Some(timeout);
        self
    }

    /// How many independently locked parts the key map has; more shards mean less contention
    /// between callers with different keys. Default: 4 × the number of CPUs, rounded up to a
    /// power of two. 0 is refused by [`build`](Self::build).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    /// Reports counters to `recorder`, labelled `name="<name>"`:
    /// `brisk_dedup_executions_total`, `brisk_dedup_coalesced_total`,
    /// `brisk_dedup_handovers_total`, `brisk_dedup_panics_total`,
    /// `brisk_dedup_wait_timeouts_total`, and for `RedisFlight` (feature `redis`) also
    /// `brisk_dedup_remote_results_total`, `brisk_dedup_lease_lost_total` and
    /// `brisk_dedup_release_failures_total`. Default: none.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// The group, or [`Error::Config`] for 0 shards.
    pub fn build(self) -> Result<SingleFlight<K, T, E>, Error> {
        if self.shards == 0 {
            return Err(Error::config("shards", 0, "at least 1 shard"));
        }
        Ok(SingleFlight {
            shards: (0..self.shards).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            wait_timeout: self.wait_timeout,
            metrics: self.metrics,
        })
    }
}

/// Locks, ignoring poison: no code panics while holding these locks except a key's own
/// `Hash`/`Eq`, and the maps stay consistent across such a panic.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
