//! [`WriteBehind`]: writes cached at once and written to the [`Source`] in coalesced batches
//! behind it, retried with backoff, with a failure callback and bounded memory.

use std::{
    collections::HashMap, fmt, hash::Hash, marker::PhantomData, panic::AssertUnwindSafe, sync::Arc,
    time::Duration,
};

use brisk_batch::{BatchWrite, WriteBatcher};
use brisk_metrics::{Counter, Recorder};

use crate::{
    Cache, Error, Remote, Stamped, Tiered,
    catch::{catch_unwind, panic_message},
    metrics::Series,
    source::{STRIPES, Source, read_through},
};

const DEFAULT_MAX_BATCH_SIZE: usize = 100;
const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);
const DEFAULT_QUEUE_CAPACITY: usize = 1000;
const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_RETRIES: u32 = 5;
const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A batch of rows that never reached the [`Source`]: handed to the
/// [failure callback](WriteBehindBuilder::on_failure).
#[derive(Debug)]
#[non_exhaustive]
pub struct FailedBatch<K, T, E> {
    /// The rows of the batch, each key once with the last value queued for it in the batch,
    /// as they were given to [`Source::save_many`].
    pub rows: Vec<(K, T)>,
    /// How many times the batch was tried (1 + its retries).
    pub attempts: u32,
    /// Why the last attempt failed.
    pub cause: WriteFailure<E>,
}

/// Why a [`FailedBatch`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum WriteFailure<E> {
    /// [`Source::save_many`] returned this error on the last attempt (the retries, if any,
    /// failed too).
    Source(E),
    /// [`Source::save_many`] panicked (a panic is not retried); the panic payload when it was
    /// a string, else a placeholder.
    Panicked(String),
}

/// The failure callback's type.
type OnFailure<K, T, E> = Arc<dyn Fn(FailedBatch<K, T, E>) + Send + Sync>;

/// Configures a [`WriteBehind`]; from [`WriteBehind::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct WriteBehindBuilder<K, T, S: Source<K, T>, R> {
    cache: Tiered<K, Option<T>, R>,
    source: S,
    max_batch_size: usize,
    max_delay: Duration,
    queue_capacity: usize,
    enqueue_timeout: Duration,
    retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    metrics: WriteBehindMetrics,
    on_failure: Option<OnFailure<K, T, S::Error>>,
}

impl<K, T, S: Source<K, T>, R: fmt::Debug> fmt::Debug for WriteBehindBuilder<K, T, S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehindBuilder")
            .field("cache", &self.cache)
            .field("max_batch_size", &self.max_batch_size)
            .field("max_delay", &self.max_delay)
            .field("queue_capacity", &self.queue_capacity)
            .field("enqueue_timeout", &self.enqueue_timeout)
            .field("retries", &self.retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("on_failure", &self.on_failure.is_some())
            .finish_non_exhaustive()
    }
}

impl<K, T, S, R> WriteBehindBuilder<K, T, S, R>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    /// The most rows queued ([`put`](WriteBehind::put) calls) in one batch, before repeated
    /// keys are coalesced. Default 100; 0 is refused by [`build`](Self::build).
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.max_batch_size = max;
        self
    }

    /// How long the first row of a batch waits for more before the batch is written anyway.
    /// Default 100 ms. A delay too long to add to the clock (`Duration::MAX`) means no time
    /// limit: a batch is written when full, on [`flush`](WriteBehind::flush) or on
    /// [`shutdown`](WriteBehind::shutdown).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How many rows may wait in the queue for their batch. Default 1000; 0 is refused by
    /// [`build`](Self::build). With the batch being filled and the one being written (with
    /// its retries), this bounds the rows a `WriteBehind` holds: at most `queue_capacity + 2 ×
    /// max_batch_size`.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// How long [`put`](WriteBehind::put) waits for room in a full queue before it answers
    /// [`Error::QueueFull`], the wait for its key's turn (puts of one key are ordered)
    /// included. Default 1 s; `Duration::ZERO` answers at once when the queue is full.
    pub fn enqueue_timeout(mut self, timeout: Duration) -> Self {
        self.enqueue_timeout = timeout;
        self
    }

    /// How many more times a batch the source refused is tried before it counts as failed.
    /// Default 5; 0 reports the first failure. Panics are not retried.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The wait before the first retry, doubled before each next one up to `max`. Default
    /// 100 ms up to 5 s (with 5 retries: 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s, so a batch is tried
    /// for about 3.1 s plus its write times). [`build`](Self::build) refuses an `initial`
    /// above `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Reports rows queued, rows written, retries, failed batches and their rows, and puts
    /// refused by a full queue to `recorder`, labelled `name="<name>"`
    /// (`brisk_cache_write_behind_*`, see [`METRICS`](crate::METRICS)).
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = WriteBehindMetrics::new(recorder, name);
        self
    }

    /// Calls `callback` with every batch the source finally refused (after its retries) or
    /// whose write panicked: the rows, the attempts made and the cause. It runs on the
    /// writer's task, before the next batch is written: keep it short (log, count, or hand
    /// the rows to a dead-letter queue). A panic in it is caught and ignored. Without a
    /// callback, such a batch is only counted (`brisk_cache_write_behind_failed_batches_total`).
    pub fn on_failure(
        mut self,
        callback: impl Fn(FailedBatch<K, T, S::Error>) + Send + Sync + 'static,
    ) -> Self {
        self.on_failure = Some(Arc::new(callback));
        self
    }

    /// Starts the writer (call it inside a tokio runtime), or [`Error::Config`] for a
    /// setting out of range.
    pub fn build(self) -> Result<WriteBehind<K, T, S, R>, Error> {
        if self.max_batch_size == 0 {
            return Err(config("max_batch_size", 0, "at least 1 row"));
        }
        if self.queue_capacity == 0 {
            return Err(config("queue_capacity", 0, "at least 1 row"));
        }
        if self.initial_backoff > self.max_backoff {
            return Err(config(
                "backoff",
                format_args!("{:?}, {:?}", self.initial_backoff, self.max_backoff),
                "an initial backoff no longer than the max",
            ));
        }
        let source = Arc::new(self.source);
        let metrics = Arc::new(self.metrics);
        let rows = Rows {
            source: Arc::clone(&source),
            retries: self.retries,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            metrics: Arc::clone(&metrics),
            on_failure: self.on_failure,
            _types: PhantomData,
        };
        let batcher = WriteBatcher::builder(rows)
            .max_batch_size(self.max_batch_size)
            .max_delay(self.max_delay)
            .queue_capacity(self.queue_capacity)
            .build()
            .map_err(|error| match error {
                brisk_batch::Error::Config {
                    setting,
                    value,
                    reason,
                } => Error::Config {
                    setting,
                    value,
                    reason,
                },
                other => Error::Config {
                    setting: "queue_capacity",
                    value: other.to_string(),
                    reason: "a write batcher it can build",
                },
            })?;
        Ok(WriteBehind {
            cache: self.cache,
            source,
            batcher,
            enqueue_timeout: self.enqueue_timeout,
            queue_capacity: self.queue_capacity,
            metrics,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: ahash::RandomState::new(),
        })
    }
}

fn config(setting: &'static str, value: impl fmt::Display, reason: &'static str) -> Error {
    Error::Config {
        setting,
        value: value.to_string(),
        reason,
    }
}

/// A [`Tiered`] cache whose writes reach their [`Source`] later, in batches: `put` updates
/// the cache and queues the row; a writer task writes the queue with
/// [`Source::save_many`], repeated writes to one key in a batch coalesced to the last.
///
/// [`WriteBehind::new`] uses the defaults of [`WriteBehind::builder`]: batches of up to 100
/// rows gathered for at most 100 ms, a queue of 1000 rows, `put` waiting up to 1 s for room,
/// 5 retries 100 ms to 5 s apart.
///
/// - **Nothing acknowledged is lost silently**: a row is acknowledged when `put` returns
///   `Ok`. It is then written, or its batch fails after every retry and reaches the
///   [failure callback](WriteBehindBuilder::on_failure) and the metrics
///   (`brisk_cache_write_behind_failed_batches_total`, `..._failed_rows_total`).
///   [`flush`](Self::flush) returns once everything queued before it is written or has
///   failed, retries included; [`shutdown`](Self::shutdown) does the same for everything and
///   stops; dropping the last handle writes the queue in the background. Call `shutdown`
///   before the process exits.
/// - **Bounded memory, back-pressure**: `put` first takes room in the queue, waiting up to
///   the [enqueue timeout](WriteBehindBuilder::enqueue_timeout) (1 s) while it is full, and
///   answers [`Error::QueueFull`] if none frees up: then nothing was cached or queued. While
///   the source is down, the writer retries one batch and the queue fills, so writers get
///   `QueueFull` instead of memory growing: a `WriteBehind` holds at most
///   `queue_capacity + 2 × max_batch_size` rows.
/// - **A failed batch stays in the cache**: the cache keeps the values the source refused;
///   the callback gets them (to retry later, or to alert). Use [`WriteThrough`](crate::WriteThrough)
///   where every write must be confirmed before it is answered.
/// - **Order**: the puts of one key reach the cache and the queue in the same order (they
///   hold a lock stripe for the key meanwhile), and batches are written one at a time, so
///   the source ends with the value the cache ends with, even when tasks race on a key.
pub struct WriteBehind<K, T, S, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
{
    cache: Tiered<K, Option<T>, R>,
    source: Arc<S>,
    batcher: WriteBatcher<Rows<K, T, S>>,
    enqueue_timeout: Duration,
    queue_capacity: usize,
    metrics: Arc<WriteBehindMetrics>,
    /// Puts of one key hold its stripe from the cache write to the enqueue, so that the
    /// cache and the queue see a key's writes in the same order.
    stripes: Box<[tokio::sync::Mutex<()>]>,
    hasher: ahash::RandomState,
}

impl<K, T, S, R> fmt::Debug for WriteBehind<K, T, S, R>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
    R: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBehind")
            .field("cache", &self.cache)
            .field("queue_capacity", &self.queue_capacity)
            .field("enqueue_timeout", &self.enqueue_timeout)
            .finish_non_exhaustive()
    }
}

impl<K, T, S, R> WriteBehind<K, T, S, R>
where
    K: Hash + Eq + Clone + fmt::Debug + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
    R: Remote<K, Stamped<Option<T>>> + 'static,
{
    /// Writes behind `cache` to `source` with the [builder](Self::builder)'s defaults:
    /// batches of up to 100 rows gathered for at most 100 ms, a queue of 1000 rows, `put`
    /// waiting up to 1 s for room, 5 retries from 100 ms apart up to 5 s, no metrics, no
    /// failure callback. Call it inside a tokio runtime.
    pub fn new(cache: Tiered<K, Option<T>, R>, source: S) -> Self {
        Self::builder(cache, source)
            .build()
            .expect("the default settings are valid")
    }

    /// Configures a write-behind of `cache` to `source`.
    pub fn builder(cache: Tiered<K, Option<T>, R>, source: S) -> WriteBehindBuilder<K, T, S, R> {
        WriteBehindBuilder {
            cache,
            source,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_delay: DEFAULT_MAX_DELAY,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
            retries: DEFAULT_RETRIES,
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            metrics: WriteBehindMetrics::noop(),
            on_failure: None,
        }
    }

    /// The cache.
    pub fn cache(&self) -> &Tiered<K, Option<T>, R> {
        &self.cache
    }

    /// The value for `key`: from the cache, else loaded from the source and cached.
    ///
    /// # Errors
    /// [`Error::Load`] with the source's error, [`Error::LoadPanicked`].
    pub async fn get(&self, key: K) -> Result<Option<T>, Error<Arc<S::Error>>> {
        read_through(&self.cache, &self.source, key).await
    }

    /// Takes room in the queue (waiting up to the enqueue timeout), caches `value`, and
    /// queues it for the source. `Ok` acknowledges the row: see [the guarantees](Self).
    ///
    /// Cancellation: dropped while it waits for room, nothing is cached or queued; dropped
    /// once its cache write has begun (the value may then be in memory or the remote level),
    /// the row is queued all the same and reaches the source like an acknowledged one.
    ///
    /// # Errors
    /// - [`Error::QueueFull`]: no room freed up within the enqueue timeout; nothing was
    ///   cached or queued.
    /// - [`Error::Closed`] after [`shutdown`](Self::shutdown); nothing was cached or queued.
    /// - A cache error: nothing was queued.
    pub async fn put(&self, key: K, value: T) -> Result<(), Error<Arc<S::Error>>> {
        let stripe = &self.stripes[self.hasher.hash_one(&key) as usize % self.stripes.len()];
        // The key's ordering stripe and the queue room are taken within one bound: puts
        // racing on a key do not each wait out the timeout in turn.
        let taken = if self.enqueue_timeout.is_zero() {
            let ordered = stripe.lock().await;
            self.batcher.try_reserve().map(|room| (ordered, room))
        } else {
            tokio::time::timeout(self.enqueue_timeout, async {
                let ordered = stripe.lock().await;
                self.batcher.reserve().await.map(|room| (ordered, room))
            })
            .await
            .unwrap_or(Err(brisk_batch::Error::QueueFull {
                capacity: self.queue_capacity,
            }))
        };
        let (_ordered, room) = match taken {
            Ok(taken) => taken,
            Err(brisk_batch::Error::QueueFull { capacity }) => {
                self.metrics.rejected.increment();
                return Err(Error::QueueFull {
                    key: format!("{key:?}"),
                    capacity,
                    waited: self.enqueue_timeout,
                });
            }
            Err(_) => {
                return Err(Error::Closed {
                    key: format!("{key:?}"),
                });
            }
        };
        // From here the cache write may have happened (in memory, in L2, announced): if this
        // future is dropped before it answers, the row is queued all the same, so that the
        // source is never left behind a value the cache holds.
        let mut queue_on_drop = QueueOnDrop(Some((room, (key.clone(), value.clone()))));
        let inserted = self
            .cache
            .insert(key, Some(value), None)
            .await
            .map_err(|error| error.map_load(|never| match never {}));
        match inserted {
            Ok(()) => {
                // Queues the row.
                drop(queue_on_drop);
                self.metrics.queued.increment();
                Ok(())
            }
            Err(error) => {
                // The cache refused the write: nothing is queued (the room is given back).
                queue_on_drop.0 = None;
                Err(error)
            }
        }
    }

    /// Returns once everything queued before this call has been written, or has failed after
    /// its retries (and reached the failure callback).
    pub async fn flush(&self) {
        self.batcher.flush().await;
    }

    /// Stops taking writes, writes everything queued (retries included), and returns once
    /// every batch is written or has failed.
    pub async fn shutdown(&self) {
        self.batcher.shutdown().await;
    }
}

/// A put's reserved room and row while its cache write runs: dropped armed (the put was
/// cancelled inside the cache write), it queues the row.
struct QueueOnDrop<'a, W: BatchWrite>(Option<(brisk_batch::Reservation<'a, W>, W::Item)>);

impl<W: BatchWrite> Drop for QueueOnDrop<'_, W> {
    fn drop(&mut self) {
        if let Some((room, row)) = self.0.take() {
            room.enqueue(row);
        }
    }
}

/// What a [`WriteBehind`] reports, each labelled `name="<name>"`.
struct WriteBehindMetrics {
    /// `brisk_cache_write_behind_queued_total`: rows acknowledged by `put`.
    queued: Counter,
    /// `brisk_cache_write_behind_written_total`: rows the source took (after coalescing).
    written: Counter,
    /// `brisk_cache_write_behind_retries_total`: batch writes repeated after a failure.
    retries: Counter,
    /// `brisk_cache_write_behind_failed_batches_total`: batches that failed after every
    /// retry, or panicked.
    failed_batches: Counter,
    /// `brisk_cache_write_behind_failed_rows_total`: the rows of those batches.
    failed_rows: Counter,
    /// `brisk_cache_write_behind_rejected_total`: puts refused by a full queue.
    rejected: Counter,
}

impl WriteBehindMetrics {
    fn noop() -> Self {
        Self {
            queued: Counter::noop(),
            written: Counter::noop(),
            retries: Counter::noop(),
            failed_batches: Counter::noop(),
            failed_rows: Counter::noop(),
            rejected: Counter::noop(),
        }
    }

    fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        Self {
            queued: series.counter("brisk_cache_write_behind_queued_total"),
            written: series.counter("brisk_cache_write_behind_written_total"),
            retries: series.counter("brisk_cache_write_behind_retries_total"),
            failed_batches: series.counter("brisk_cache_write_behind_failed_batches_total"),
            failed_rows: series.counter("brisk_cache_write_behind_failed_rows_total"),
            rejected: series.counter("brisk_cache_write_behind_rejected_total"),
        }
    }
}

/// The batch write behind a [`WriteBehind`]: coalesce, then `save_many`, retried with
/// backoff; a batch that finally fails goes to the callback. It never fails towards the
/// batcher: nobody waits on its outcome there.
struct Rows<K, T, S: Source<K, T>> {
    source: Arc<S>,
    retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    metrics: Arc<WriteBehindMetrics>,
    on_failure: Option<OnFailure<K, T, S::Error>>,
    _types: PhantomData<fn(K, T)>,
}

impl<K, T, S: Source<K, T>> Rows<K, T, S> {
    /// The wait before retry number `retry` (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

impl<K, T, S> BatchWrite for Rows<K, T, S>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
    S: Source<K, T> + 'static,
{
    type Item = (K, T);
    type Output = ();
    type Error = std::convert::Infallible;

    async fn write(&self, items: &[(K, T)]) -> Result<Vec<()>, Self::Error> {
        // The last write of each key wins; keys keep the order of their last write.
        let mut last: HashMap<&K, usize> = HashMap::with_capacity(items.len());
        for (at, (key, _)) in items.iter().enumerate() {
            last.insert(key, at);
        }
        let rows: Vec<(K, T)> = items
            .iter()
            .enumerate()
            .filter(|(at, (key, _))| last.get(key) == Some(at))
            .map(|(_, row)| row.clone())
            .collect();
        drop(last);
        let mut attempts = 0;
        let cause = loop {
            attempts += 1;
            match catch_unwind(async { self.source.save_many(&rows).await }).await {
                Ok(Ok(())) => {
                    self.metrics.written.add(rows.len() as u64);
                    return Ok(vec![(); items.len()]);
                }
                Ok(Err(error)) if attempts > self.retries => break WriteFailure::Source(error),
                Ok(Err(_)) => {
                    self.metrics.retries.increment();
                    tokio::time::sleep(self.backoff(attempts)).await;
                }
                Err(payload) => break WriteFailure::Panicked(panic_message(payload.as_ref())),
            }
        };
        self.metrics.failed_batches.increment();
        self.metrics.failed_rows.add(rows.len() as u64);
        tracing::error!(
            rows = rows.len(),
            attempts,
            panicked = matches!(cause, WriteFailure::Panicked(_)),
            "brisk-cache: a write-behind batch failed after every retry; its rows did not reach the source"
        );
        if let Some(callback) = &self.on_failure {
            let failed = FailedBatch {
                rows,
                attempts,
                cause,
            };
            // The writer goes on whatever the callback does.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| callback(failed)));
        }
        Ok(vec![(); items.len()])
    }
}
