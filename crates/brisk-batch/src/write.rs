//! [`WriteBatcher`]: items submitted one at a time, written in batches by a [`BatchWrite`].

use std::{fmt, future::Future, sync::Arc, time::Duration};

use brisk_metrics::Recorder;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, SetOnce, mpsc, oneshot},
    time::Instant,
};

use crate::{error::Error, metrics::WriteMetrics};

/// Writes many items at once: the bulk operation behind a [`WriteBatcher`] (a multi-row
/// `INSERT`, a `COPY`, a pipelined `MSET`).
///
/// # Contract
/// - `items` holds between 1 and the batcher's max batch size items, in submission order.
/// - `Ok` holds one output per item, in the same order (the ids an `INSERT ... RETURNING id`
///   assigned, or `()`); a different count fails the batch with
///   [`Error::OutputCount`](crate::Error::OutputCount).
/// - `Err` fails the whole batch. The batcher retries it as its [`Retry`] policy allows (when
///   [`is_retryable`](Self::is_retryable) agrees), then reports the error to every submitter.
///   A retried batch is written again whole, so a write should be all-or-nothing (one
///   statement, or a transaction).
/// - Each write runs in its own task; a panic reaches its submitters as
///   [`Error::Panicked`](crate::Error::Panicked) and is not retried.
///
/// # Per-item failures
/// When some items of a batch can fail while the rest are written (a row that violates a
/// check, a conflict that `ON CONFLICT DO NOTHING` skipped), make `Output` a `Result`: the
/// write returns `Ok` with one `Err` or `Ok` per item, each submitter gets its own, and the
/// batch counts as written (not retried, not failed for the others). `Err` from `write`
/// stays what fails the whole batch.
///
/// ```
/// use brisk_batch::BatchWrite;
///
/// struct Events;
///
/// impl BatchWrite for Events {
///     type Item = i64;
///     type Output = Result<i64, String>; // this item's id, or why it was refused
///     type Error = String; // the whole batch failed
///
///     async fn write(&self, items: &[i64]) -> Result<Vec<Result<i64, String>>, String> {
///         Ok(items
///             .iter()
///             .map(|&n| if n >= 0 { Ok(n) } else { Err(format!("{n} is negative")) })
///             .collect())
///     }
/// }
/// ```
pub trait BatchWrite: Send + Sync + 'static {
    /// What is submitted.
    type Item: Send + Sync + 'static;
    /// What each submitter gets back for its item.
    type Output: Send + 'static;
    /// What a write can fail with; shared between the batch's submitters in an `Arc`.
    type Error: Send + Sync + 'static;

    /// Writes `items` (see the trait docs for the contract).
    fn write(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Output>, Self::Error>> + Send;

    /// Whether a failed write may succeed if tried again (a lost connection, a serialization
    /// failure), as opposed to one that will fail again (a constraint violation). Only
    /// consulted when the [`Retry`] policy allows another attempt. Default: always.
    fn is_retryable(&self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }
}

/// How often a failed write is tried again, and how long to wait in between.
///
/// The wait doubles after each attempt, from [`backoff`](Self::backoff) up to its cap. The
/// default, [`Retry::never`], reports the first failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    retries: u32,
    first: Duration,
    cap: Duration,
}

impl Retry {
    /// No retries: a failed write is reported to its submitters at once.
    pub const fn never() -> Self {
        Self {
            retries: 0,
            first: Duration::ZERO,
            cap: Duration::ZERO,
        }
    }

    /// Up to `retries` more attempts after the first, waiting 10 ms, 20 ms, 40 ms ... (at most
    /// 1 s) in between.
    pub const fn times(retries: u32) -> Self {
        Self {
            retries,
            first: Duration::from_millis(10),
            cap: Duration::from_secs(1),
        }
    }

    /// Waits `first` before the first retry, doubling up to `cap`.
    pub const fn backoff(mut self, first: Duration, cap: Duration) -> Self {
        self.first = first;
        self.cap = cap;
        self
    }

    /// The wait before retry number `retry` (1-based).
    fn wait(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.cap)
    }
}

impl Default for Retry {
    fn default() -> Self {
        Self::never()
    }
}

const DEFAULT_MAX_BATCH_SIZE: usize = 100;
const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);
const DEFAULT_QUEUE: usize = 1000;
/// The most items a new batch makes room for before they arrive: a huge max batch size
/// (`usize::MAX`) must not be preallocated.
const MAX_PRESIZE: usize = 1024;

type ItemResult<W> = Result<<W as BatchWrite>::Output, Error<<W as BatchWrite>::Error>>;
type Reply<W> = oneshot::Sender<ItemResult<W>>;

enum Message<W: BatchWrite> {
    Item(W::Item, Reply<W>),
    Flush(oneshot::Sender<()>),
    Shutdown,
}

/// Collects submitted items into batches for a [`BatchWrite`]: a batch is written when it
/// holds [max batch size](WriteBatcherBuilder::max_batch_size) items (100) or its first item has
/// waited [max delay](WriteBatcherBuilder::max_delay) (100 ms), whichever comes first.
///
/// Submitting waits while the [queue](WriteBatcherBuilder::queue_capacity) (1000 items) is full: backpressure
/// instead of unbounded memory when the database falls behind. Writes run one at a time by
/// default, in submission order ([`max_concurrent_writes`](WriteBatcherBuilder::max_concurrent_writes)).
///
/// # Nothing lost
/// An item, once queued, is written: [`shutdown`](Self::shutdown) writes everything queued
/// before it returns, and so does dropping the last handle (in the background). The one
/// exception is the runtime shutting down under the worker: then `flush` and `shutdown`
/// return at once and what was not yet written is lost (its submitters get
/// [`Error::Abandoned`]). A submitter
/// that stops waiting does not withdraw its item. A submit that is cancelled while it waits
/// for queue space does not queue the item; after shutdown, submitting fails with
/// [`Error::Closed`].
///
/// Cloning a `WriteBatcher` is cheap and shares its queue.
pub struct WriteBatcher<W: BatchWrite> {
    queue: mpsc::Sender<Message<W>>,
    shared: Arc<WriteShared<W>>,
}

impl<W: BatchWrite> Clone for WriteBatcher<W> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<W: BatchWrite> fmt::Debug for WriteBatcher<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBatcher")
            .field("max_batch_size", &self.shared.max_batch_size)
            .field("max_delay", &self.shared.max_delay)
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .field("stopped", &self.shared.stopped.initialized())
            .finish_non_exhaustive()
    }
}

/// Configures a [`WriteBatcher`]; from [`WriteBatcher::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct WriteBatcherBuilder<W: BatchWrite> {
    write_fn: W,
    max_batch_size: usize,
    max_delay: Duration,
    queue: usize,
    max_concurrent_writes: usize,
    retry: Retry,
    metrics: WriteMetrics,
}

impl<W: BatchWrite> fmt::Debug for WriteBatcherBuilder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteBatcherBuilder")
            .field("max_batch_size", &self.max_batch_size)
            .field("max_delay", &self.max_delay)
            .field("queue", &self.queue)
            .field("max_concurrent_writes", &self.max_concurrent_writes)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl<W: BatchWrite> WriteBatcherBuilder<W> {
    /// The most items in one write. Default 100; 0 is refused by [`build`](Self::build).
    /// Mind the database's limits: PostgreSQL takes at most 65535 bind parameters per
    /// statement.
    pub fn max_batch_size(mut self, max: usize) -> Self {
        self.max_batch_size = max;
        self
    }

    /// How long the first item of a batch waits for more before the batch is written anyway.
    /// Default 100 ms. A delay too long to add to the clock (`Duration::MAX`) means no time
    /// limit: a batch is written when it is full, on [`flush`](WriteBatcher::flush) or on
    /// [`shutdown`](WriteBatcher::shutdown).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// How many submitted items (and flush requests) may wait to be batched; submitting waits
    /// while it is full. Default 1000; [`build`](Self::build) refuses 0 and more than
    /// tokio's semaphore holds (`Semaphore::MAX_PERMITS`).
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue = capacity;
        self
    }

    /// How many writes may run at the same time. Default 1, which writes batches in
    /// submission order; more overlap writes (on separate connections) at the cost of order.
    /// [`build`](Self::build) refuses 0 and more than `u32::MAX`.
    pub fn max_concurrent_writes(mut self, max: usize) -> Self {
        self.max_concurrent_writes = max;
        self
    }

    /// How a failed write is retried. Default [`Retry::never`].
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Reports items, writes, batch sizes, retries and failures to `recorder`, labelled
    /// `name="<name>"`.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = WriteMetrics::new(recorder, name);
        self
    }

    /// Starts the batcher's worker task (call it inside a tokio runtime), or returns
    /// [`Error::Config`] for a setting out of range.
    pub fn build(self) -> Result<WriteBatcher<W>, Error> {
        if self.max_batch_size == 0 {
            return Err(Error::config("max_batch_size", 0, "at least 1 item"));
        }
        if !(1..=Semaphore::MAX_PERMITS).contains(&self.queue) {
            return Err(Error::config(
                "queue_capacity",
                self.queue,
                "from 1 to tokio's Semaphore::MAX_PERMITS items",
            ));
        }
        if !(1..=u32::MAX as usize).contains(&self.max_concurrent_writes) {
            return Err(Error::config(
                "max_concurrent_writes",
                self.max_concurrent_writes,
                "from 1 to u32::MAX writes",
            ));
        }
        let (queue, receiver) = mpsc::channel(self.queue);
        let shared = Arc::new(WriteShared {
            write_fn: Arc::new(self.write_fn),
            max_batch_size: self.max_batch_size,
            max_delay: self.max_delay,
            max_concurrent_writes: self.max_concurrent_writes,
            writes: Arc::new(Semaphore::new(self.max_concurrent_writes)),
            retry: self.retry,
            metrics: self.metrics,
            stopped: SetOnce::new(),
        });
        let stopped = MarkStopped(Arc::clone(&shared));
        tokio::spawn(Arc::clone(&shared).work(receiver, stopped));
        Ok(WriteBatcher { queue, shared })
    }
}

impl<W: BatchWrite> WriteBatcher<W> {
    /// A batcher with the defaults: batches of up to 100 items, 100 ms max delay, a queue of
    /// 1000, one write at a time, no retries. Call it inside a tokio runtime.
    pub fn new(write_fn: W) -> Self {
        Self::builder(write_fn)
            .build()
            .expect("the default settings are valid")
    }

    /// Configures a batcher.
    pub fn builder(write_fn: W) -> WriteBatcherBuilder<W> {
        WriteBatcherBuilder {
            write_fn,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            max_delay: DEFAULT_MAX_DELAY,
            queue: DEFAULT_QUEUE,
            max_concurrent_writes: 1,
            retry: Retry::never(),
            metrics: WriteMetrics::noop(),
        }
    }

    /// The write function.
    pub fn write_fn(&self) -> &W {
        &self.shared.write_fn
    }

    /// Queues `item` (waiting while the queue is full) and returns its output once its batch
    /// is written.
    ///
    /// # Errors
    /// - [`Error::Batch`]: the write failed (after any retries); every item of the batch gets it.
    /// - [`Error::OutputCount`], [`Error::Panicked`]: the write function broke its contract.
    /// - [`Error::Closed`]: the batcher was shut down; the item was not written.
    /// - [`Error::Abandoned`]: the runtime shut down before the item's batch reported.
    pub async fn submit(&self, item: W::Item) -> ItemResult<W> {
        let (reply, result) = oneshot::channel();
        self.queue
            .send(Message::Item(item, reply))
            .await
            .map_err(|_| Error::Closed)?;
        self.shared.metrics.items.increment();
        result.await.unwrap_or(Err(Error::Abandoned))
    }

    /// Queues `item` (waiting while the queue is full) and returns without waiting for its
    /// write: write-behind. The item is written like any other ([`shutdown`](Self::shutdown)
    /// and [`flush`](Self::flush) wait for it); its outcome reaches no one but the metrics
    /// (`brisk_batch_write_failures_total` counts a failed batch).
    ///
    /// # Errors
    /// [`Error::Closed`]: the batcher was shut down; the item was not queued.
    pub async fn enqueue(&self, item: W::Item) -> Result<(), Error<W::Error>> {
        // Nobody listens for the reply: the worker's send to it fails, which it ignores.
        let (reply, _) = oneshot::channel();
        self.queue
            .send(Message::Item(item, reply))
            .await
            .map_err(|_| Error::Closed)?;
        self.shared.metrics.items.increment();
        Ok(())
    }

    /// Waits for room for one item in the queue and holds it: the item is then queued by
    /// [`Reservation::enqueue`], which cannot fail or wait. Lets a caller that must do
    /// something before queuing (write a cache) know first that the item will be taken.
    /// Dropping the reservation (or this future) gives the room back; cancel-safe.
    ///
    /// # Errors
    /// [`Error::Closed`]: the batcher was shut down.
    pub async fn reserve(&self) -> Result<Reservation<'_, W>, Error<W::Error>> {
        let permit = self.queue.reserve().await.map_err(|_| Error::Closed)?;
        Ok(Reservation {
            permit,
            shared: &self.shared,
        })
    }

    /// [`reserve`](Self::reserve) without waiting.
    ///
    /// # Errors
    /// [`Error::QueueFull`] when the queue has no room now; [`Error::Closed`] after shutdown.
    pub fn try_reserve(&self) -> Result<Reservation<'_, W>, Error<W::Error>> {
        let permit = self.queue.try_reserve().map_err(|error| match error {
            mpsc::error::TrySendError::Full(()) => Error::QueueFull {
                capacity: self.queue.max_capacity(),
            },
            mpsc::error::TrySendError::Closed(()) => Error::Closed,
        })?;
        Ok(Reservation {
            permit,
            shared: &self.shared,
        })
    }

    /// Writes what is queued now, without waiting for a batch to fill, and returns once
    /// everything submitted before this call has been written (or has failed).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() && written.await.is_ok() {
            return;
        }
        // Shut down meanwhile: the worker writes everything before it stops.
        self.shared.stopped.wait().await;
    }

    /// Stops taking items, writes everything queued, and returns once every write has
    /// finished. Submitting afterwards fails with [`Error::Closed`]. Calling it again, or from
    /// another clone, waits for the same end.
    pub async fn shutdown(&self) {
        // Fails only if the worker has already stopped.
        let _ = self.queue.send(Message::Shutdown).await;
        self.shared.stopped.wait().await;
    }
}

/// Room for one item in a [`WriteBatcher`]'s queue, from [`WriteBatcher::reserve`] or
/// [`WriteBatcher::try_reserve`]; dropping it unused gives the room back.
#[must_use = "the room is given back unless `enqueue` is called"]
pub struct Reservation<'a, W: BatchWrite> {
    permit: mpsc::Permit<'a, Message<W>>,
    shared: &'a WriteShared<W>,
}

impl<W: BatchWrite> fmt::Debug for Reservation<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation").finish_non_exhaustive()
    }
}

impl<W: BatchWrite> Reservation<'_, W> {
    /// Queues `item` in the reserved room, without waiting for its write (as
    /// [`WriteBatcher::enqueue`] does): it is written like any other, and its outcome reaches
    /// no one but the metrics and the write function itself.
    pub fn enqueue(self, item: W::Item) {
        // Nobody listens for the reply: the worker's send to it fails, which it ignores.
        let (reply, _) = oneshot::channel();
        self.permit.send(Message::Item(item, reply));
        self.shared.metrics.items.increment();
    }
}

struct WriteShared<W: BatchWrite> {
    write_fn: Arc<W>,
    max_batch_size: usize,
    max_delay: Duration,
    max_concurrent_writes: usize,
    /// One permit per write that may run.
    writes: Arc<Semaphore>,
    retry: Retry,
    metrics: WriteMetrics,
    /// Set when the worker has written everything and stopped.
    stopped: SetOnce<()>,
}

/// Marks the worker stopped when dropped.
struct MarkStopped<W: BatchWrite>(Arc<WriteShared<W>>);

impl<W: BatchWrite> Drop for MarkStopped<W> {
    fn drop(&mut self) {
        let _ = self.0.stopped.set(());
    }
}

/// The batch the worker is filling.
struct Pending<W: BatchWrite> {
    items: Vec<W::Item>,
    replies: Vec<Reply<W>>,
    /// `None` when the max delay does not fit on the clock (`Duration::MAX`): no time limit.
    deadline: Option<Instant>,
}

impl<W: BatchWrite> WriteShared<W> {
    /// The worker: fills batches from the queue and starts their writes.
    /// `_stopped` is made before the task is spawned and dropped last: however the worker
    /// ends (here, by a panic, or dropped with its runtime, polled or not), `flush` and
    /// `shutdown` stop waiting for it; the replies of a batch it was filling are dropped
    /// first, and their submitters get `Error::Abandoned`.
    async fn work(
        self: Arc<Self>,
        mut queue: mpsc::Receiver<Message<W>>,
        _stopped: MarkStopped<W>,
    ) {
        let mut pending: Option<Pending<W>> = None;
        loop {
            let message = match &pending {
                None | Some(Pending { deadline: None, .. }) => queue.recv().await,
                Some(Pending {
                    deadline: Some(deadline),
                    ..
                }) => match queue.try_recv() {
                    Ok(message) => Some(message),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(*deadline, queue.recv()).await {
                            Ok(message) => message,
                            Err(_elapsed) => {
                                self.write(pending.take()).await;
                                continue;
                            }
                        }
                    }
                },
            };
            match message {
                Some(Message::Item(item, reply)) => {
                    let presize = self.max_batch_size.min(MAX_PRESIZE);
                    let batch = pending.get_or_insert_with(|| Pending {
                        items: Vec::with_capacity(presize),
                        replies: Vec::with_capacity(presize),
                        deadline: Instant::now().checked_add(self.max_delay),
                    });
                    batch.items.push(item);
                    batch.replies.push(reply);
                    if batch.items.len() >= self.max_batch_size {
                        self.write(pending.take()).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    self.write(pending.take()).await;
                    self.writes_finished().await;
                    let _ = done.send(());
                }
                // Items queued before the shutdown are still received; those after are refused.
                Some(Message::Shutdown) => queue.close(),
                None => break,
            }
        }
        self.write(pending.take()).await;
        self.writes_finished().await;
    }

    /// Starts writing `batch` once a write may run (waiting here is the backpressure that
    /// fills the queue).
    async fn write(self: &Arc<Self>, batch: Option<Pending<W>>) {
        let Some(batch) = batch else { return };
        // The semaphore is never closed.
        let Ok(permit) = Arc::clone(&self.writes).acquire_owned().await else {
            return;
        };
        tokio::spawn(Arc::clone(self).write_batch(batch.items, batch.replies, permit));
    }

    /// Waits until no write is running.
    async fn writes_finished(&self) {
        let all = u32::try_from(self.max_concurrent_writes).unwrap_or(u32::MAX);
        drop(self.writes.acquire_many(all).await);
    }

    /// Writes one batch, retrying as the policy allows, and answers its submitters.
    async fn write_batch(
        self: Arc<Self>,
        items: Vec<W::Item>,
        replies: Vec<Reply<W>>,
        _permit: OwnedSemaphorePermit,
    ) {
        let size = items.len();
        self.metrics.write_size.record(size as u64);
        let items: Arc<[W::Item]> = items.into();
        let mut retries = 0;
        let error = loop {
            self.metrics.writes.increment();
            // In a task of its own, so that a panic is reported rather than losing the replies.
            let task = {
                let write_fn = Arc::clone(&self.write_fn);
                let items = Arc::clone(&items);
                tokio::spawn(async move { write_fn.write(&items).await })
            };
            match task.await {
                Ok(Ok(outputs)) if outputs.len() == size => {
                    for (reply, output) in replies.into_iter().zip(outputs) {
                        let _ = reply.send(Ok(output));
                    }
                    return;
                }
                Ok(Ok(outputs)) => {
                    break Error::OutputCount {
                        expected: size,
                        got: outputs.len(),
                    };
                }
                Ok(Err(error)) => {
                    if retries < self.retry.retries && self.write_fn.is_retryable(&error) {
                        retries += 1;
                        self.metrics.retries.increment();
                        tokio::time::sleep(self.retry.wait(retries)).await;
                        continue;
                    }
                    break Error::Batch {
                        size,
                        error: Arc::new(error),
                    };
                }
                Err(join) => {
                    break match join.try_into_panic() {
                        Ok(payload) => Error::panicked(size, payload),
                        Err(_) => Error::Abandoned,
                    };
                }
            }
        };
        self.metrics.failures.increment();
        for reply in replies {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_double_up_to_the_cap() {
        let retry = Retry::times(5).backoff(Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<_> = (1..=5).map(|n| retry.wait(n).as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 50, 50]);
        assert_eq!(
            Retry::times(1).wait(40),
            Duration::from_secs(1),
            "no overflow"
        );
        assert_eq!(Retry::default(), Retry::never());
    }
}
