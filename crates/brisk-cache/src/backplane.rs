//! The backplane (feature `redis`): Redis pub/sub between the instances of a service, so that
//! a write or removal in one drops the key from every other instance's memory level.

use std::{
    collections::{HashMap, VecDeque},
    fmt::{self, Display},
    future::Future,
    hash::{BuildHasher, Hasher, RandomState},
    marker::PhantomData,
    panic::{self, AssertUnwindSafe},
    pin::Pin,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use brisk_metrics::{Counter, Gauge, Recorder};
use futures_core::Stream;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::sync::{Notify, oneshot};

use crate::metrics::Series;
use crate::{
    Error, Result,
    breaker::{Breaker, BreakerMetrics},
    tiered::{Event, Link, Sink},
};

/// The most senders whose message numbers are tracked; past it the table starts over, and
/// that counts as a gap (a missed message could not be told).
const MAX_SENDERS: usize = 4096;

/// The most messages waiting to be published; past it a message is dropped, its number
/// skipped, so that the others see a gap.
const MAX_QUEUED: usize = 10_000;

/// The most messages published in one pipeline.
const MAX_BATCH: usize = 256;

/// The number of a sender's hello: published once, before its first change, so that an
/// instance subscribed before the sender started knows to expect message 1 next.
const HELLO: u64 = 0;

/// The last message number seen from each sender, at most [`MAX_SENDERS`] of them.
#[derive(Debug, Default)]
struct Numbers(HashMap<u64, u64>);

impl Numbers {
    /// Records `number` from `sender`; true if messages may have been missed: the sender's
    /// numbering jumped, or the table was full and starts over.
    fn follows(&mut self, sender: u64, number: u64) -> bool {
        let mut gap = false;
        if self.0.len() >= MAX_SENDERS && !self.0.contains_key(&sender) {
            self.0.clear();
            gap = true;
        }
        let last = self.0.insert(sender, number);
        // Unknown until now: followed from here (see the gap policy on `Backplane`).
        gap || last.is_some_and(|last| last.checked_add(1) != Some(number))
    }

    /// Forgets every sender: after a lost subscription numbering starts over.
    fn clear(&mut self) {
        self.0.clear();
    }
}

/// One message on the channel, with the change as `C` (`Change<K>` received, `&Change<K>`
/// sent).
#[derive(Serialize, Deserialize)]
struct Message<C> {
    /// The sending instance's random id: an instance skips its own messages.
    sender: u64,
    /// The sender's message number: [`HELLO`] first, then its changes from 1, in the order
    /// they reach Redis. A jump means a message was lost.
    number: u64,
    change: C,
}

/// What changed.
#[derive(Serialize, Deserialize)]
enum Change<K> {
    /// These keys were written or removed.
    Keys(Vec<K>),
    /// Every key whose text starts with this was removed.
    Prefix(String),
}

/// Redis pub/sub between the instances of a service: a [`Tiered`](crate::Tiered) cache given
/// one (with [`TieredBuilder::backplane`](crate::TieredBuilder::backplane)) publishes the keys
/// it writes or removes, and drops from its memory level the keys other instances publish.
///
/// **Numbering.** Each instance numbers its messages and publishes them from one task, in
/// pipelines of up to 256, one pipeline at a time: a number is taken as the message is
/// queued, and messages reach Redis (and so every subscriber) in the order of their numbers,
/// however many writes publish at once. Before its first change an instance publishes a
/// hello, number 0.
///
/// **Gap policy.** Pub/sub delivers at most once. When the subscription is lost, or a
/// sender's message numbers jump (one of its publishes failed, timed out or was refused by
/// the breaker, its message could not be encoded, more than 10 000 were waiting, or Redis
/// dropped one), every value the memory level holds is made stale (served only where a stale
/// value may be: stale-while-revalidate and fail-safe; otherwise read again from L2), once
/// when the gap is seen and once more when the subscription is back, since values filled in
/// between may have missed messages too. The subscription is retried every 100 ms to 2 s
/// until it is back. A failed publish is not retried: the others see the gap at the sender's
/// next message that arrives.
///
/// A sender's first message an instance hears: if it is the sender's hello, the instance was
/// subscribed before the sender published anything, and expects 1 next (a first change
/// numbered above 1 is a gap). Otherwise the sender was already publishing when this instance
/// subscribed; what it published before cannot matter (nothing was in memory from this
/// subscription then) and cannot be told apart from what was lost since, so the instance
/// follows the sender from that message, with no gap: a message of that sender lost after
/// this instance subscribed but before the first one it hears is not seen as a gap.
///
/// One subscription connection per backplane, and one connection (a `ConnectionManager`)
/// to publish, whose calls have a timeout and a circuit breaker of their own.
pub struct Backplane<K> {
    shared: Arc<Shared<K>>,
    task: tokio::task::JoinHandle<()>,
    publishing: tokio::task::JoinHandle<()>,
}

struct Shared<K> {
    publisher: ConnectionManager,
    channel: String,
    sender: u64,
    outbox: Outbox<K>,
    timeout: Duration,
    breaker: Breaker,
    sink: OnceLock<Sink<K>>,
    metrics: Metrics,
}

/// What a backplane reports, each series labelled `name="<name>"`.
#[derive(Debug, Clone)]
struct Metrics {
    /// `brisk_cache_backplane_messages_total{direction="sent"}`
    sent: Counter,
    /// `brisk_cache_backplane_messages_total{direction="received"}`: other instances' only,
    /// counted once applied to memory.
    received: Counter,
    /// `brisk_cache_backplane_gaps_total`
    gaps: Counter,
    /// `brisk_cache_backplane_errors_total`: messages not published (failed, refused,
    /// unencodable, dropped from a full queue), undecodable messages, messages whose
    /// application panicked.
    errors: Counter,
    /// `brisk_cache_backplane_subscribed`: 1 while the subscription is up.
    subscribed: Gauge,
}

impl Metrics {
    fn noop() -> Self {
        Self {
            sent: Counter::noop(),
            received: Counter::noop(),
            gaps: Counter::noop(),
            errors: Counter::noop(),
            subscribed: Gauge::noop(),
        }
    }

    fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        let messages = |direction| {
            series.counter_with(
                "brisk_cache_backplane_messages_total",
                Some(("direction", direction)),
            )
        };
        Self {
            sent: messages("sent"),
            received: messages("received"),
            gaps: series.counter("brisk_cache_backplane_gaps_total"),
            errors: series.counter("brisk_cache_backplane_errors_total"),
            subscribed: series.gauge("brisk_cache_backplane_subscribed"),
        }
    }
}

impl<K> fmt::Debug for Backplane<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backplane")
            .field("channel", &self.shared.channel)
            .field("sender", &self.shared.sender)
            .finish_non_exhaustive()
    }
}

impl<K> Drop for Backplane<K> {
    fn drop(&mut self) {
        self.task.abort();
        self.publishing.abort();
    }
}

/// Messages waiting to be published, numbered in the order they were queued.
struct Outbox<K> {
    queue: Mutex<Queue<K>>,
    /// Told when a message is queued.
    queued: Notify,
}

struct Queue<K> {
    /// The number the next message takes.
    next: u64,
    waiting: VecDeque<Outgoing<K>>,
}

/// A message waiting to be published.
struct Outgoing<K> {
    number: u64,
    change: Change<K>,
    /// Dropped once the publish was tried: its caller waits for that.
    tried: Option<oneshot::Sender<()>>,
}

impl<K> Outbox<K> {
    /// An outbox holding the sender's hello.
    fn new() -> Self {
        let hello = Outgoing {
            number: HELLO,
            change: Change::Keys(Vec::new()),
            tried: None,
        };
        Self {
            queue: Mutex::new(Queue {
                next: HELLO + 1,
                waiting: VecDeque::from([hello]),
            }),
            queued: Notify::new(),
        }
    }

    /// Numbers `change` and queues it; false if too many are waiting (it is dropped, its
    /// number used).
    fn push(&self, change: Change<K>, tried: oneshot::Sender<()>) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let number = queue.next;
        queue.next += 1;
        if queue.waiting.len() >= MAX_QUEUED {
            return false;
        }
        queue.waiting.push_back(Outgoing {
            number,
            change,
            tried: Some(tried),
        });
        drop(queue);
        self.queued.notify_one();
        true
    }

    /// Waits for messages, then moves up to [`MAX_BATCH`] of them, oldest first, to `batch`.
    async fn take(&self, batch: &mut Vec<Outgoing<K>>) {
        loop {
            {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                if !queue.waiting.is_empty() {
                    let count = queue.waiting.len().min(MAX_BATCH);
                    batch.extend(queue.waiting.drain(..count));
                    return;
                }
            }
            // A `notify_one` between the check and here is kept for this wait.
            self.queued.notified().await;
        }
    }
}

impl<K> Backplane<K>
where
    K: Display + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts configuring a backplane over the Redis at `client`.
    pub fn builder(client: redis::Client) -> BackplaneBuilder<K> {
        BackplaneBuilder {
            client,
            channel: "brisk:backplane".to_owned(),
            timeout: Duration::from_millis(500),
            metrics: Metrics::noop(),
            _keys: PhantomData,
        }
    }

    /// Tells the other instances that `keys` changed: numbers and queues the message at
    /// once (a caller that stops waiting does not stop it), and resolves when its publish was
    /// tried. A failure is counted, not returned: the write it follows has happened, and the
    /// others see the gap in this instance's message numbers at its next message.
    fn send(&self, change: Change<K>) -> impl Future<Output = ()> + Send + 'static {
        let (tried, done) = oneshot::channel();
        if !self.shared.outbox.push(change, tried) {
            self.shared.metrics.errors.increment();
        }
        async move {
            // Dropped (never sent to) once tried.
            let _ = done.await;
        }
    }
}

impl<K> Shared<K>
where
    K: Serialize,
{
    /// Publishes one batch in one pipeline, in number order. A message that cannot be
    /// encoded is left out; its number is used, so the others see a gap.
    async fn publish(&self, batch: &[Outgoing<K>]) {
        let mut pipeline = redis::pipe();
        let (mut messages, mut changes) = (0, 0);
        for outgoing in batch {
            let message = Message {
                sender: self.sender,
                number: outgoing.number,
                change: &outgoing.change,
            };
            let Ok(payload) = postcard::to_allocvec(&message) else {
                self.metrics.errors.increment();
                continue;
            };
            pipeline
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(payload)
                .ignore();
            messages += 1;
            if outgoing.number != HELLO {
                changes += 1;
            }
        }
        if messages == 0 {
            return;
        }
        let Some(permit) = self.breaker.admit() else {
            self.metrics.errors.add(messages);
            return;
        };
        let mut connection = self.publisher.clone();
        let published =
            tokio::time::timeout(self.timeout, pipeline.query_async::<()>(&mut connection)).await;
        if let Ok(Ok(())) = published {
            permit.succeeded();
            self.metrics.sent.add(changes);
        } else {
            permit.failed();
            self.metrics.errors.add(messages);
        }
    }
}

/// Publishes what is queued, a batch at a time, until the backplane is dropped: one task, so
/// that messages reach Redis in the order of their numbers.
async fn send_queued<K: Serialize>(shared: Arc<Shared<K>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        shared.outbox.take(&mut batch).await;
        shared.publish(&batch).await;
        for outgoing in batch.drain(..) {
            // Tells its caller that it was tried.
            drop(outgoing.tried);
        }
    }
}

impl<K> Link<K> for Backplane<K>
where
    K: Display + Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    fn attach(&self, sink: Sink<K>) {
        let _ = self.shared.sink.set(sink);
    }

    fn publish<'a>(&'a self, keys: &'a [K]) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        // Queued now, not when first polled.
        Box::pin(self.send(Change::Keys(keys.to_vec())))
    }

    fn publish_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(self.send(Change::Prefix(prefix.to_owned())))
    }
}

impl<K> Shared<K>
where
    K: Display + DeserializeOwned,
{
    /// One message from the channel: skipped if it is this instance's own, else its keys are
    /// told, after a gap if the sender's numbering jumped.
    fn deliver(&self, payload: &[u8], numbers: &mut Numbers) {
        let Ok(message) = postcard::from_bytes::<Message<Change<K>>>(payload) else {
            self.metrics.errors.increment();
            return;
        };
        if message.sender == self.sender {
            return;
        }
        if numbers.follows(message.sender, message.number) {
            self.tell(Event::Gap);
        }
        if message.number == HELLO {
            // Nothing changed: from now on, this sender's 1 is expected next.
            return;
        }
        match message.change {
            Change::Keys(keys) => self.tell(Event::Changed(keys)),
            Change::Prefix(prefix) => self.tell(Event::Matching(Box::new(move |key: &K| {
                key.to_string().starts_with(&prefix)
            }))),
        }
        // Counted once applied: a reader of the count may rely on memory having followed.
        self.metrics.received.increment();
    }

    fn tell(&self, event: Event<K>) {
        if let Event::Gap = event {
            self.metrics.gaps.increment();
        }
        if let Some(sink) = self.sink.get() {
            sink(event);
        }
    }
}

/// Delivers messages until the backplane is dropped; after a lost subscription, tells the
/// gap, resubscribes, and tells it again. A panic while applying a message (in an eviction
/// listener, say) is counted as an error and told as a gap, and delivery goes on.
async fn subscribe<K>(shared: Arc<Shared<K>>, client: redis::Client, first: redis::aio::PubSub)
where
    K: Display + DeserializeOwned + Send + Sync + 'static,
{
    let mut connection = first;
    let mut numbers = Numbers::default();
    loop {
        shared.metrics.subscribed.set(1);
        let mut stream = connection.into_on_message();
        while let Some(message) = next(&mut stream).await {
            // Applying a change runs the cache's code (an eviction listener): a panic there
            // must not end this task, which every later message needs.
            let delivered = panic::catch_unwind(AssertUnwindSafe(|| {
                shared.deliver(message.get_payload_bytes(), &mut numbers);
            }));
            if delivered.is_err() {
                // The change may not have been applied.
                shared.metrics.errors.increment();
                shared.tell(Event::Gap);
            }
        }
        // Lost: what memory holds may miss messages from now on.
        shared.metrics.subscribed.set(0);
        numbers.clear();
        shared.tell(Event::Gap);
        connection = resubscribe(&shared, &client).await;
        // Values filled while it was lost may have missed messages too.
        shared.tell(Event::Gap);
    }
}

/// Subscribes again, retrying every 100 ms to 2 s until it succeeds.
async fn resubscribe<K>(shared: &Shared<K>, client: &redis::Client) -> redis::aio::PubSub {
    let mut pause = Duration::from_millis(100);
    loop {
        if let Ok(mut connection) = client.get_async_pubsub().await
            && connection.subscribe(&shared.channel).await.is_ok()
        {
            return connection;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// Configures a [`Backplane`]; from [`Backplane::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct BackplaneBuilder<K> {
    client: redis::Client,
    channel: String,
    timeout: Duration,
    metrics: Metrics,
    _keys: PhantomData<fn() -> K>,
}

impl<K> fmt::Debug for BackplaneBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackplaneBuilder")
            .field("channel", &self.channel)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<K> BackplaneBuilder<K>
where
    K: Display + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The pub/sub channel: one per cache (the same in every instance of it). Default:
    /// `brisk:backplane`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// How long one publish may take. Default: 500 ms.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reports to `recorder`, labelled `name="<name>"`:
    /// `brisk_cache_backplane_messages_total` (with `direction="sent"` or `"received"`),
    /// `brisk_cache_backplane_gaps_total`, `brisk_cache_backplane_errors_total` and
    /// `brisk_cache_backplane_subscribed`. Default: none.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// Connects the publisher, subscribes, and starts delivering in a task of its own.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty channel or a zero timeout; [`Error::Redis`] if Redis
    /// cannot be reached.
    pub async fn build(self) -> Result<Backplane<K>> {
        if self.channel.is_empty() {
            return Err(Error::Config {
                setting: "channel",
                value: "\"\"".into(),
                reason: "must be non-empty",
            });
        }
        if self.timeout.is_zero() {
            return Err(Error::Config {
                setting: "timeout",
                value: "0s".into(),
                reason: "must be longer than zero",
            });
        }
        let redis_error = |op| {
            let channel = self.channel.clone();
            move |source| Error::Redis {
                op,
                key: channel,
                source,
            }
        };
        let publisher = ConnectionManager::new(self.client.clone())
            .await
            .map_err(redis_error("connect"))?;
        let mut subscription = self
            .client
            .get_async_pubsub()
            .await
            .map_err(redis_error("SUBSCRIBE"))?;
        subscription
            .subscribe(&self.channel)
            .await
            .map_err(redis_error("SUBSCRIBE"))?;
        let breaker = Breaker::new(
            5,
            crate::redis::BREAKER_OPEN_FOR,
            BreakerMetrics {
                state: Gauge::noop(),
                opened: Counter::noop(),
            },
        );
        let shared = Arc::new(Shared {
            publisher,
            channel: self.channel,
            sender: RandomState::new().build_hasher().finish(),
            outbox: Outbox::new(),
            timeout: self.timeout,
            breaker,
            sink: OnceLock::new(),
            metrics: self.metrics,
        });
        shared.metrics.subscribed.set(1);
        let task = tokio::spawn(subscribe(Arc::clone(&shared), self.client, subscription));
        let publishing = tokio::spawn(send_queued(Arc::clone(&shared)));
        Ok(Backplane {
            shared,
            task,
            publishing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_a_senders_numbers_is_a_gap() {
        let mut numbers = Numbers::default();
        assert!(!numbers.follows(7, 5), "a sender first heard mid-way");
        assert!(!numbers.follows(7, 6));
        assert!(!numbers.follows(9, 1), "senders are numbered apart");
        assert!(numbers.follows(7, 8), "7 skipped a message");
        assert!(!numbers.follows(7, 9));
        assert!(
            numbers.follows(9, 1),
            "a restarted sender starts over: missed its end"
        );
        numbers.clear();
        assert!(!numbers.follows(7, 20));
        assert!(!numbers.follows(11, HELLO), "a sender heard from its start");
        assert!(numbers.follows(11, 2), "its 1 was missed");
    }

    #[test]
    fn a_number_at_the_end_of_the_range_is_a_jump_not_an_overflow() {
        // A corrupt or hostile message must not panic the task that delivers them all.
        let mut numbers = Numbers::default();
        assert!(!numbers.follows(7, u64::MAX));
        assert!(numbers.follows(7, 1));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn messages_are_numbered_in_the_order_they_are_queued_and_taken_in_that_order() {
        let outbox = Outbox::<u64>::new();
        let mut callers = Vec::new();
        for key in 1..=300 {
            let (tried, done) = oneshot::channel();
            assert!(outbox.push(Change::Keys(vec![key]), tried));
            callers.push(done);
        }
        let mut batch = Vec::new();
        outbox.take(&mut batch).await;
        assert_eq!(batch.len(), MAX_BATCH);
        let numbers: Vec<u64> = batch.iter().map(|outgoing| outgoing.number).collect();
        assert_eq!(numbers, (HELLO..MAX_BATCH as u64).collect::<Vec<_>>());
        batch.clear();
        assert!(
            matches!(
                callers[0].try_recv(),
                Err(oneshot::error::TryRecvError::Closed)
            ),
            "told it was tried"
        );
        assert!(matches!(
            callers[299].try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        outbox.take(&mut batch).await;
        assert_eq!(batch.first().map(|outgoing| outgoing.number), Some(256));
        assert_eq!(batch.last().map(|outgoing| outgoing.number), Some(300));
    }

    #[test]
    fn a_full_outbox_drops_a_message_and_skips_its_number() {
        let outbox = Outbox::<u64>::new();
        for key in 1..MAX_QUEUED as u64 {
            assert!(outbox.push(Change::Keys(vec![key]), oneshot::channel().0));
        }
        assert!(!outbox.push(Change::Keys(vec![0]), oneshot::channel().0));
        let queue = outbox.queue.lock().unwrap();
        assert_eq!(queue.waiting.len(), MAX_QUEUED);
        assert_eq!(
            queue.next,
            MAX_QUEUED as u64 + 1,
            "the dropped one's number is used"
        );
    }

    #[test]
    fn a_full_table_starts_over_and_says_so() {
        let mut numbers = Numbers::default();
        for sender in 0..MAX_SENDERS as u64 {
            assert!(!numbers.follows(sender, 1));
        }
        assert!(!numbers.follows(0, 2), "known senders still fit");
        assert!(numbers.follows(u64::MAX, 1), "one too many");
        assert_eq!(numbers.0.len(), 1);
    }
}
