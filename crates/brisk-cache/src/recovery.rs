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
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_metrics::{Counter, Gauge, Recorder};
use tokio::time::Instant;

use crate::{Error, Stamped, metrics::Series};

/// A replay run with the cache it belongs to (`T`): the L2 part of a write that only a
/// particular remote level can do (tags, prefixes).
pub(crate) type Replay<T> =
    Arc<dyn Fn(T) -> Pin<Box<dyn Future<Output = crate::Result<()>> + Send>> + Send + Sync>;

/// What a write of one key still has to do in L2.
pub(crate) enum Intent<V, T> {
    /// Store `stamped` for `keep` (counted from `at`), by `replay` where a plain store will
    /// not do (a store that files the key under tags).
    Set {
        stamped: Stamped<V>,
        keep: Option<Duration>,
        at: Instant,
        replay: Option<Replay<T>>,
    },
    /// Remove the key.
    Remove,
}

impl<V: Clone, T> Clone for Intent<V, T> {
    fn clone(&self) -> Self {
        match self {
            Intent::Set {
                stamped,
                keep,
                at,
                replay,
            } => Intent::Set {
                stamped: stamped.clone(),
                keep: *keep,
                at: *at,
                replay: replay.clone(),
            },
            Intent::Remove => Intent::Remove,
        }
    }
}

impl<V, T> Intent<V, T> {
    /// How long a value to set has left, from its `keep` at the time of the write: `None`
    /// for no limit, zero once it has run out (then the key is removed instead).
    pub(crate) fn left(keep: Option<Duration>, at: Instant) -> Option<Duration> {
        keep.map(|keep| keep.saturating_sub(at.elapsed()))
    }
}

/// The next piece of work for the replay task.
pub(crate) enum Work<K, V, T> {
    Key(K, Intent<V, T>),
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

struct Queue<K, V, T> {
    next: u64,
    keys: HashMap<K, (u64, Intent<V, T>)>,
    groups: HashMap<String, (u64, Replay<T>)>,
    /// Every intent by the order it was queued in (its latest version).
    order: BTreeMap<u64, Item<K>>,
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

/// The queue of L2 writes to replay. `T` is the cache the replays run with.
pub(crate) struct Recovery<K, V, T> {
    queue: Mutex<Queue<K, V, T>>,
    /// Intents queued, readable without the lock: zero on every read path in normal times.
    len: AtomicUsize,
    /// Whether a replay task is running.
    replaying: AtomicBool,
    max_entries: usize,
    pub(crate) metrics: RecoveryMetrics,
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
            }),
            len: AtomicUsize::new(0),
            replaying: AtomicBool::new(false),
            max_entries,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue<K, V, T>> {
        // Every change below leaves the maps consistent before it can panic.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether nothing waits: true on every read path unless L2 failed a write.
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Acquire) == 0
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
            } => match Intent::<V, T>::left(*keep, *at) {
                Some(left) if left.is_zero() => Pending::Nothing,
                left => Pending::Set(stamped.clone(), left),
            },
            Intent::Remove => Pending::Nothing,
        })
    }

    /// Queues `intent` for `key`, replacing any older one; the oldest intent is dropped if
    /// the queue is full. Whether the queue was empty (recovery starts).
    pub(crate) fn queue(&self, key: K, intent: Intent<V, T>) -> bool {
        let mut queue = self.lock();
        let at = queue.next;
        queue.next += 1;
        if let Some((older, _)) = queue.keys.insert(key.clone(), (at, intent)) {
            queue.order.remove(&older);
        }
        queue.order.insert(at, Item::Key(key));
        self.queued(&mut queue)
    }

    /// Queues a group invalidation under `id` (`tag:…`, `prefix:…`), replacing an older one.
    pub(crate) fn queue_group(&self, id: String, replay: Replay<T>) -> bool {
        let mut queue = self.lock();
        let at = queue.next;
        queue.next += 1;
        if let Some((older, _)) = queue.groups.insert(id.clone(), (at, replay)) {
            queue.order.remove(&older);
        }
        queue.order.insert(at, Item::Group(id));
        self.queued(&mut queue)
    }

    /// Bounds the queue after an insertion, and publishes its length.
    fn queued(&self, queue: &mut Queue<K, V, T>) -> bool {
        self.metrics.queued.increment();
        while queue.order.len() > self.max_entries {
            let Some((_, oldest)) = queue.order.pop_first() else {
                break;
            };
            match oldest {
                Item::Key(key) => drop(queue.keys.remove(&key)),
                Item::Group(id) => drop(queue.groups.remove(&id)),
            }
            self.metrics.dropped.increment();
        }
        let len = queue.order.len();
        let was = self.len.swap(len, Ordering::AcqRel);
        self.metrics
            .pending
            .set(i64::try_from(len).unwrap_or(i64::MAX));
        was == 0
    }

    /// The oldest intent, left queued until [`done`](Self::done) reports it replayed.
    pub(crate) fn next(&self) -> Option<(u64, Work<K, V, T>)> {
        let queue = self.lock();
        let (&at, item) = queue.order.first_key_value()?;
        let work = match item {
            Item::Key(key) => Work::Key(key.clone(), queue.keys.get(key)?.1.clone()),
            Item::Group(id) => Work::Group(Arc::clone(&queue.groups.get(id)?.1)),
        };
        Some((at, work))
    }

    /// The intent queued at `at` was replayed (`replayed`) or given up: it leaves the queue,
    /// unless a newer intent for its key replaced it meanwhile (that one stays).
    pub(crate) fn done(&self, at: u64, replayed: bool) {
        let mut queue = self.lock();
        if let Some(item) = queue.order.remove(&at) {
            match item {
                Item::Key(key) => drop(queue.keys.remove(&key)),
                Item::Group(id) => drop(queue.groups.remove(&id)),
            }
        }
        if replayed {
            self.metrics.replayed.increment();
        } else {
            self.metrics.dropped.increment();
        }
        let len = queue.order.len();
        self.len.store(len, Ordering::Release);
        self.metrics
            .pending
            .set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    /// Another instance wrote `key`: a value queued here for it may be older than that
    /// write, so the intent becomes a removal (never wrong, at worst a miss).
    pub(crate) fn demote(&self, key: &K) {
        if self.is_empty() {
            return;
        }
        if let Some((_, intent)) = self.lock().keys.get_mut(key) {
            *intent = Intent::Remove;
        }
    }

    /// Messages from other instances may have been missed: every value queued becomes a
    /// removal, as with [`demote`](Self::demote).
    pub(crate) fn demote_all(&self) {
        if self.is_empty() {
            return;
        }
        for (_, intent) in self.lock().keys.values_mut() {
            *intent = Intent::Remove;
        }
    }

    /// Whether a write of `key` waits in the queue: a new one must queue behind it, so that
    /// L2 takes them in order.
    pub(crate) fn holds_key(&self, key: &K) -> bool {
        !self.is_empty() && self.lock().keys.contains_key(key)
    }

    /// Claims the replay task's place: false if one runs already.
    pub(crate) fn start(&self) -> bool {
        !self.replaying.swap(true, Ordering::AcqRel)
    }

    /// The replay task stops: whether it must go on after all (an intent was queued as it
    /// found the queue empty, and no other task took its place).
    pub(crate) fn stop(&self) -> bool {
        self.replaying.store(false, Ordering::Release);
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
    use super::*;

    type Test = Recovery<u32, u32, ()>;

    fn set(value: u32) -> Intent<u32, ()> {
        Intent::Set {
            stamped: Stamped::new(value, u64::MAX, 0),
            keep: None,
            at: Instant::now(),
            replay: None,
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
        assert!(
            recovery.queue(1, set(10)),
            "the first intent starts recovery"
        );
        assert!(!recovery.queue(2, set(20)));
        assert!(!recovery.queue(1, Intent::Remove));
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
                replay: None,
            },
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            matches!(recovery.pending(&1), Some(Pending::Set(_, Some(left))) if left == Duration::from_secs(3))
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(matches!(recovery.pending(&1), Some(Pending::Nothing)));
    }
}
