//! Auto-recovery for a [`Tiered`](crate::Tiered) cache's remote level: a write whose L2 part
//! failed in a transient way (Redis down, a timeout, the circuit breaker open) completes in
//! memory, and its L2 part waits here, one intent per key (the latest wins), until a task of
//! its own replays the queue in order as soon as L2 answers again.
//!
//! While a key has an intent here, L2's copy of it is not trusted: a read answers the intent
//! (the value it sets, or nothing for a removal) and a load does not store into L2, so that
//! neither an old value nor a load's fill overtakes the write that is still to reach L2.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use brisk_metrics::{Counter, Gauge, Recorder};
use tokio::time::Instant;

use crate::{Error, Stamped, metrics::Series};

/// A boxed replay step.
pub(crate) type Step = Pin<Box<dyn Future<Output = crate::Result<()>> + Send>>;

/// A replay run with the cache it belongs to (`T`): a group invalidation that only a
/// particular remote level can do (tags, prefixes).
pub(crate) type Replay<T> = Arc<dyn Fn(T) -> Step + Send + Sync>;

/// How a value filed under tags is written again: with the cache, the key, the value, what
/// it has left and its tags. Only the Redis level has tags; it sets this once.
pub(crate) type TaggedWrite<T, K, V> =
    Arc<dyn Fn(T, K, Stamped<V>, Option<Duration>, Vec<String>) -> Step + Send + Sync>;

/// What a write of one key still has to do in L2.
#[derive(Clone)]
pub(crate) enum Intent<V> {
    /// Store `stamped` for `keep` (counted from `at`), filed under `tags`.
    Set {
        stamped: Stamped<V>,
        keep: Option<Duration>,
        at: Instant,
        tags: Vec<String>,
    },
    /// Remove the key.
    Remove,
}

/// How long a value to set has left, from its `keep` at the time of the write (`at`): `None`
/// for no limit, zero once it has run out (then the key is removed instead).
pub(crate) fn left(keep: Option<Duration>, at: Instant) -> Option<Duration> {
    keep.map(|keep| keep.saturating_sub(at.elapsed()))
}

/// The next piece of work for the replay task.
pub(crate) enum Work<K, V, T> {
    Key(K, Intent<V>),
    Group(Replay<T>),
}

/// What L2 would answer for a key with an intent queued, before the intent is replayed.
pub(crate) enum Pending<V> {
    /// The value being set, and what it has left.
    Set(Stamped<V>, Option<Duration>),
    /// Nothing to trust: a removal, or a group invalidation that may cover the key.
    Nothing,
}

impl<V> Pending<V> {
    /// As an L2 read would answer: the value and what it has left, or nothing.
    pub(crate) fn into_hit(self) -> Option<(Stamped<V>, Option<Duration>)> {
        match self {
            Pending::Set(stamped, left) => Some((stamped, left)),
            Pending::Nothing => None,
        }
    }
}

enum Item<K> {
    Key(K),
    Group(String),
}

/// A place in the queue: what waits there, how often its replay failed while L2 answered
/// other replays (`strikes`), and the count of replays that had succeeded at its last try.
struct Place<K> {
    item: Item<K>,
    strikes: u32,
    seen: u64,
}

struct Queue<K, V, T> {
    next: u64,
    keys: HashMap<K, (u64, Intent<V>)>,
    groups: HashMap<String, (u64, Replay<T>)>,
    /// Every intent by its place in the queue.
    order: BTreeMap<u64, Place<K>>,
    /// The place being replayed: the bound never drops it (a later write of its key must
    /// queue behind it, not race it to L2).
    replaying: Option<u64>,
}

impl<K: Hash + Eq + Clone, V, T> Queue<K, V, T> {
    /// Moves the intent at `at` to the back of the queue: its key's only intent, so no order
    /// that matters changes.
    fn move_back(&mut self, at: u64) -> Option<u64> {
        let mut place = self.order.remove(&at)?;
        let back = self.next;
        self.next += 1;
        match &place.item {
            Item::Key(key) => {
                if let Some(entry) = self.keys.get_mut(key) {
                    entry.0 = back;
                }
            }
            Item::Group(id) => {
                if let Some(entry) = self.groups.get_mut(id) {
                    entry.0 = back;
                }
            }
        }
        place.strikes = 0;
        self.order.insert(back, place);
        Some(back)
    }

    fn remove_at(&mut self, at: u64) {
        if let Some(place) = self.order.remove(&at) {
            match place.item {
                Item::Key(key) => drop(self.keys.remove(&key)),
                Item::Group(id) => drop(self.groups.remove(&id)),
            }
        }
    }
}

/// What auto-recovery reports, labelled with the cache's `name`.
#[derive(Clone)]
pub(crate) struct RecoveryMetrics {
    /// `brisk_cache_tiered_recovery_queued_total`: L2 writes queued after a failure.
    queued: Counter,
    /// `brisk_cache_tiered_recovery_replayed_total`: queued writes replayed into L2.
    replayed: Counter,
    /// `brisk_cache_tiered_recovery_dropped_total`: queued writes given up (the queue was
    /// full, or L2 refused the replay for good).
    dropped: Counter,
    /// `brisk_cache_tiered_recovery_pending`: writes waiting for L2.
    pending: Gauge,
}

impl RecoveryMetrics {
    pub(crate) fn noop() -> Self {
        Self {
            queued: Counter::noop(),
            replayed: Counter::noop(),
            dropped: Counter::noop(),
            pending: Gauge::noop(),
        }
    }

    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        Self {
            queued: series.counter("brisk_cache_tiered_recovery_queued_total"),
            replayed: series.counter("brisk_cache_tiered_recovery_replayed_total"),
            dropped: series.counter("brisk_cache_tiered_recovery_dropped_total"),
            pending: series.gauge("brisk_cache_tiered_recovery_pending"),
        }
    }
}

/// How many times an intent's replay may fail while L2 answers other replays before it is
/// given up (a value L2 always times out on, a prefix scan too long for the timeout).
const STRIKES: u32 = 5;

/// The queue of L2 writes to replay. `T` is the cache the replays run with.
pub(crate) struct Recovery<K, V, T> {
    queue: Mutex<Queue<K, V, T>>,
    /// Intents queued, readable without the lock: zero on every read path in normal times.
    len: AtomicUsize,
    /// Whether a replay task is running.
    replaying: AtomicBool,
    max_entries: usize,
    pub(crate) metrics: RecoveryMetrics,
    /// How a tagged value is written again (set by the Redis level's tagged write).
    pub(crate) tagged: OnceLock<TaggedWrite<T, K, V>>,
}

impl<K, V, T> Recovery<K, V, T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<K, V, T>> {
        // Every change below leaves the maps consistent before it can panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The replay task ended without [`stop`](Self::stop) (its runtime shut down, or it
    /// panicked): the next write starts another.
    pub(crate) fn abandon(&self) {
        self.lock().replaying = None;
        self.replaying.store(false, SeqCst);
    }
}

impl<K, V, T> Recovery<K, V, T>
where
    K: Hash + Eq + Clone,
    V: Clone,
{
    pub(crate) fn new(max_entries: usize, metrics: RecoveryMetrics) -> Self {
        Self {
            queue: Mutex::new(Queue {
                next: 0,
                keys: HashMap::new(),
                groups: HashMap::new(),
                order: BTreeMap::new(),
                replaying: None,
            }),
            len: AtomicUsize::new(0),
            replaying: AtomicBool::new(false),
            max_entries,
            metrics,
            tagged: OnceLock::new(),
        }
    }

    /// Whether nothing waits: true on every read path unless L2 failed a write.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(SeqCst) == 0
    }

    /// Whether L2's copy of `key` is not to be trusted yet (a write of it waits, or a group
    /// invalidation does).
    pub(crate) fn holds(&self, key: &K) -> bool {
        if self.is_empty() {
            return false;
        }
        let queue = self.lock();
        !queue.groups.is_empty() || queue.keys.contains_key(key)
    }

    /// Whether a write of `key` waits in the queue (or is being replayed): a new one must
    /// queue behind it, so that L2 takes them in order.
    pub(crate) fn holds_key(&self, key: &K) -> bool {
        !self.is_empty() && self.lock().keys.contains_key(key)
    }

    /// What L2 is to answer for `key` until its intent is replayed; `None`: L2 is trusted.
    pub(crate) fn pending(&self, key: &K) -> Option<Pending<V>> {
        if self.is_empty() {
            return None;
        }
        let queue = self.lock();
        if !queue.groups.is_empty() {
            return Some(Pending::Nothing);
        }
        Some(match &queue.keys.get(key)?.1 {
            Intent::Set {
                stamped, keep, at, ..
            } => match left(*keep, *at) {
                Some(left) if left.is_zero() => Pending::Nothing,
                left => Pending::Set(stamped.clone(), left),
            },
            Intent::Remove => Pending::Nothing,
        })
    }

    /// Queues `intent` for `key`, replacing any older one; the oldest intent is dropped if
    /// the queue is full.
    pub(crate) fn queue(&self, key: K, intent: Intent<V>) {
        let mut queue = self.lock();
        let at = queue.next;
        let older = queue.keys.insert(key.clone(), (at, intent));
        self.queued(&mut queue, older.map(|(older, _)| older), Item::Key(key));
    }

    /// Queues a group invalidation under `id` (`tag:…`, `prefix:…`), replacing an older one.
    pub(crate) fn queue_group(&self, id: String, replay: Replay<T>) {
        let mut queue = self.lock();
        let at = queue.next;
        let older = queue.groups.insert(id.clone(), (at, replay));
        self.queued(&mut queue, older.map(|(older, _)| older), Item::Group(id));
    }

    /// Gives `item`, just put in its map at the next place, that place in the order (in place
    /// of its `older` one), bounds the queue (never dropping the intent being replayed), and
    /// publishes its length.
    fn queued(&self, queue: &mut Queue<K, V, T>, older: Option<u64>, item: Item<K>) {
        let at = queue.next;
        queue.next += 1;
        if let Some(older) = older {
            queue.order.remove(&older);
        }
        let place = Place {
            item,
            strikes: 0,
            seen: 0,
        };
        queue.order.insert(at, place);
        self.metrics.queued.increment();
        while queue.order.len() > self.max_entries {
            let oldest = queue
                .order
                .keys()
                .copied()
                .find(|&at| Some(at) != queue.replaying);
            let Some(oldest) = oldest else {
                break;
            };
            queue.remove_at(oldest);
            self.metrics.dropped.increment();
        }
        self.publish_len(queue);
    }

    fn publish_len(&self, queue: &Queue<K, V, T>) {
        let len = queue.order.len();
        self.len.store(len, SeqCst);
        self.metrics
            .pending
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// The oldest intent, left queued (and marked as being replayed) until
    /// [`done`](Self::done) or [`postpone`](Self::postpone) reports on it.
    pub(crate) fn next(&self) -> Option<(u64, Work<K, V, T>)> {
        let mut queue = self.lock();
        let (&at, place) = queue.order.first_key_value()?;
        let work = match &place.item {
            Item::Key(key) => Work::Key(key.clone(), queue.keys.get(key)?.1.clone()),
            Item::Group(id) => Work::Group(Arc::clone(&queue.groups.get(id)?.1)),
        };
        queue.replaying = Some(at);
        Some((at, work))
    }

    /// The intent at `at` was replayed (`replayed`) or given up: it leaves the queue, unless
    /// it changed meanwhile (a newer write of its key, a demotion: that one stays).
    pub(crate) fn done(&self, at: u64, replayed: bool) {
        let mut queue = self.lock();
        queue.replaying = None;
        queue.remove_at(at);
        if replayed {
            self.metrics.replayed.increment();
        } else {
            self.metrics.dropped.increment();
        }
        self.publish_len(&queue);
    }

    /// The intent at `at` failed in an outage: it goes to the back of the queue, so that the
    /// others are tried meanwhile. `progress` counts the replays that succeeded so far; an
    /// intent that failed [`STRIKES`] times while others succeeded is given up: whether it was.
    pub(crate) fn postpone(&self, at: u64, progress: u64) -> bool {
        let mut queue = self.lock();
        queue.replaying = None;
        let Some(place) = queue.order.get_mut(&at) else {
            return false;
        };
        if progress > place.seen {
            place.strikes += 1;
        }
        place.seen = progress;
        if place.strikes >= STRIKES {
            queue.remove_at(at);
            self.metrics.dropped.increment();
            self.publish_len(&queue);
            return true;
        }
        let strikes = place.strikes;
        if let Some(back) = queue.move_back(at)
            && let Some(place) = queue.order.get_mut(&back)
        {
            place.strikes = strikes;
        }
        false
    }

    /// `key` was written or invalidated elsewhere (another instance, a group invalidation): a
    /// value queued here for it may be older, so the intent becomes a removal (never wrong, at
    /// worst a miss), at the back of the queue so that a replay under way keeps it.
    pub(crate) fn demote(&self, key: &K) {
        self.demote_if(|candidate, _| candidate == key);
    }

    /// [`demote`](Self::demote) for every key `matches`, given the key and the tags its
    /// queued value is filed under.
    pub(crate) fn demote_if(&self, mut matches: impl FnMut(&K, &[String]) -> bool) {
        if self.is_empty() {
            return;
        }
        let mut queue = self.lock();
        let demoted: Vec<u64> = queue
            .keys
            .iter_mut()
            .filter(|(key, (_, intent))| match intent {
                Intent::Set { tags, .. } => matches(key, tags),
                Intent::Remove => false,
            })
            .map(|(_, (at, intent))| {
                *intent = Intent::Remove;
                *at
            })
            .collect();
        for at in demoted {
            queue.move_back(at);
        }
    }

    /// Claims the replay task's place: false if one runs already.
    pub(crate) fn start(&self) -> bool {
        !self.replaying.swap(true, SeqCst)
    }

    /// The replay task stops: whether it must go on after all (an intent was queued as it
    /// found the queue empty, and no other task took its place).
    pub(crate) fn stop(&self) -> bool {
        self.replaying.store(false, SeqCst);
        !self.is_empty() && self.start()
    }
}

/// Whether a remote level's error is an outage that a later replay can outlast (the server
/// down or unreachable, a timeout, the breaker open), not a refusal of this write (a value
/// too large, one that cannot be encoded, a command the server rejects).
pub(crate) fn is_outage<E>(error: &Error<E>) -> bool {
    match error {
        Error::Timeout { .. } => true,
        #[cfg(feature = "redis")]
        Error::CircuitOpen { .. } => true,
        #[cfg(feature = "redis")]
        Error::Redis { source, .. } => {
            !matches!(source.retry_method(), redis::RetryMethod::NoRetry)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    // More: an intent postponed, demoted while replayed, and the bound sparing the intent
    // being replayed (below).
    use super::*;

    type Test = Recovery<u32, u32, ()>;

    fn set(value: u32) -> Intent<u32> {
        Intent::Set {
            stamped: Stamped::new(value, u64::MAX, 0),
            keep: None,
            at: Instant::now(),
            tags: Vec::new(),
        }
    }

    fn keys(recovery: &Test) -> Vec<(u32, Option<u32>)> {
        let mut seen = Vec::new();
        while let Some((at, work)) = recovery.next() {
            if let Work::Key(key, intent) = work {
                seen.push((
                    key,
                    match intent {
                        Intent::Set { stamped, .. } => Some(*stamped.value()),
                        Intent::Remove => None,
                    },
                ));
            }
            recovery.done(at, true);
        }
        seen
    }

    #[tokio::test]
    async fn the_latest_intent_per_key_wins_and_keeps_its_own_place() {
        let recovery = Test::new(10, RecoveryMetrics::noop());
        recovery.queue(1, set(10));
        recovery.queue(2, set(20));
        recovery.queue(1, Intent::Remove);
        assert_eq!(keys(&recovery), [(2, Some(20)), (1, None)]);
        assert!(recovery.is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_intent() {
        let recovery = Test::new(2, RecoveryMetrics::noop());
        recovery.queue(1, set(10));
        recovery.queue(2, set(20));
        recovery.queue(3, set(30));
        assert!(recovery.pending(&1).is_none(), "dropped: L2 is read again");
        assert_eq!(keys(&recovery), [(2, Some(20)), (3, Some(30))]);
    }

    #[tokio::test]
    async fn an_intent_replaced_while_replayed_stays_queued() {
        let recovery = Test::new(10, RecoveryMetrics::noop());
        recovery.queue(1, set(10));
        let (at, _) = recovery.next().expect("queued");
        recovery.queue(1, set(11));
        recovery.done(at, true);
        assert!(
            matches!(recovery.pending(&1), Some(Pending::Set(stamped, None)) if *stamped.value() == 11)
        );
        assert_eq!(keys(&recovery), [(1, Some(11))]);
    }

    #[tokio::test]
    async fn a_pending_group_leaves_every_key_untrusted() {
        let recovery = Test::new(10, RecoveryMetrics::noop());
        assert!(recovery.pending(&7).is_none());
        recovery.queue_group("tag:a".into(), Arc::new(|()| Box::pin(async { Ok(()) })));
        assert!(matches!(recovery.pending(&7), Some(Pending::Nothing)));
        assert!(recovery.holds(&7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_value_whose_lifetime_ran_out_while_queued_reads_as_nothing() {
        let recovery = Test::new(10, RecoveryMetrics::noop());
        recovery.queue(
            1,
            Intent::Set {
                stamped: Stamped::new(1, u64::MAX, 0),
                keep: Some(Duration::from_secs(5)),
                at: Instant::now(),
                tags: Vec::new(),
            },
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            matches!(recovery.pending(&1), Some(Pending::Set(_, Some(left))) if left == Duration::from_secs(3))
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(recovery.pending(&1), Some(Pending::Nothing)));
    }

    #[tokio::test]
    async fn a_demotion_while_replayed_is_kept_as_a_removal() {
        let recovery = Test::new(10, RecoveryMetrics::noop());
        recovery.queue(1, set(10));
        let (at, _) = recovery.next().expect("queued");
        recovery.demote(&1);
        recovery.done(at, true);
        assert_eq!(keys(&recovery), [(1, None)]);
    }

    #[tokio::test]
    async fn the_bound_never_drops_the_intent_being_replayed() {
        let recovery = Test::new(1, RecoveryMetrics::noop());
        recovery.queue(1, set(10));
        let (at, _) = recovery.next().expect("queued");
        recovery.queue(2, set(20));
        assert!(
            recovery.holds_key(&1),
            "still queued: a later write of 1 waits behind it"
        );
        assert!(!recovery.holds_key(&2), "the newcomer was dropped instead");
        recovery.done(at, true);
        assert!(recovery.is_empty());
    }

    #[tokio::test]
    async fn a_failing_intent_goes_to_the_back_and_is_given_up_after_its_strikes() {
        let recovery = Test::new(10, RecoveryMetrics::noop());
        recovery.queue(1, set(10));
        recovery.queue(2, set(20));
        let (at, _) = recovery.next().expect("queued");
        assert!(
            !recovery.postpone(at, 0),
            "no replay succeeded: an outage, not a strike"
        );
        let (second, work) = recovery.next().expect("queued");
        assert!(
            matches!(work, Work::Key(2, _)),
            "the other one is tried meanwhile"
        );
        recovery.done(second, true);
        let mut progress = 1;
        loop {
            let (at, _) = recovery.next().expect("still queued");
            if recovery.postpone(at, progress) {
                break;
            }
            progress += 1;
            assert!(progress <= u64::from(STRIKES) + 1, "never given up");
        }
        assert!(recovery.is_empty());
    }
}
