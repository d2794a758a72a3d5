use std::{
    fmt,
    future::{Future, poll_fn},
    ops::{Deref, DerefMut},
    panic::Location,
    pin::pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use brisk_metrics::Recorder;

use crate::{
    config::{CircuitBreaker, Config, Order, Validation},
    connect::{Connect, Hook, HookDebug, HookFuture},
    error::{Error, Result},
    leak::SuspectedLeak,
    manager::{Dial, Failure, Manager, Shared},
    metrics::{CloseReason, Metrics},
};

/// The pool API that every connection kind shares, so code can be generic over it (a real
/// pool of dedicated connections, or `SharedRedis`, one multiplexed
/// connection behind the same calls).
pub trait ConnectionPool: Send + Sync {
    /// What a checkout derefs to.
    type Connection;
    /// A checked-out connection; dropping it returns the connection.
    type Guard<'a>: DerefMut<Target = Self::Connection> + Send
    where
        Self: 'a;

    /// Checks a connection out, waiting up to the acquire timeout.
    ///
    /// Dropping the future before it completes gives up the place in line and never loses a
    /// connection.
    fn get(&self) -> impl Future<Output = Result<Self::Guard<'_>>> + Send;

    /// A checkout that owns its handle on the pool, so it can move into `tokio::spawn`.
    type OwnedGuard: DerefMut<Target = Self::Connection> + Send + 'static;

    /// Checks a connection out like [`get`](Self::get), as a guard that does not borrow the
    /// pool.
    fn get_owned(&self) -> impl Future<Output = Result<Self::OwnedGuard>> + Send;

    /// Counts of connections and waiting checkouts, right now.
    fn status(&self) -> Status;

    /// Stops new checkouts (they fail with [`Error::Closed`]), fails waiting ones, and waits
    /// until every checked-out connection has come back and been closed.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// A pool's counts at one moment, from [`ConnectionPool::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The configured maximum number of connections.
    pub max_size: u32,
    /// Open connections, idle or in use (connects in progress not included).
    pub size: u32,
    /// Connections ready for a checkout.
    pub idle: u32,
    /// Connections checked out.
    pub in_use: u32,
    /// Checkouts waiting for a connection.
    pub waiting: usize,
}

/// A connection pool on bb8, for any [`Connect`].
///
/// Cheap to clone: clones share the connections. See the [crate docs](crate) for an example.
pub struct Pool<C: Connect> {
    inner: Arc<Inner<C>>,
}

struct Inner<C: Connect> {
    bb8: bb8::Pool<Manager<C>>,
    /// One permit per connection, handed out in FIFO order: bb8 wakes its waiters in order,
    /// but a caller that has just returned a connection and asks again takes it back before
    /// the woken waiter runs, so under load the longest waiters starved. A checkout holds a
    /// permit until its connection is back, and a freed permit goes to the oldest waiter.
    gate: Arc<tokio::sync::Semaphore>,
    /// How the refill task connects, outside bb8.
    dial: Arc<Dial<C>>,
    shared: Arc<Shared>,
    max_size: u32,
    acquire_timeout: Duration,
}

impl<C: Connect> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<C: Connect> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.inner.shared.target)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl<C: Connect> Pool<C> {
    /// Starts configuring a pool of connections made by `connector`.
    pub fn builder(connector: C) -> PoolBuilder<C> {
        PoolBuilder {
            connector,
            config: Config::default(),
            hook: None,
            metrics: None,
        }
    }

    /// Checks a connection out, waiting up to the acquire timeout.
    ///
    /// The connection is validated first if the [`Validation`] policy says so, and is never
    /// one already known to be broken. The call site is recorded for leak reports.
    ///
    /// # Errors
    /// [`Error::Timeout`] (naming the last connect error if connects are failing),
    /// [`Error::Unavailable`] while the circuit breaker is open, or [`Error::Closed`].
    #[track_caller]
    pub fn get(&self) -> impl Future<Output = Result<PooledConnection<'_, C>>> + Send + '_ {
        let location = Location::caller();
        let inner = &*self.inner;
        self.acquire(location, SharedRef::Borrowed(&inner.shared), || {
            inner.bb8.get()
        })
    }

    /// Checks a connection out like [`get`](Self::get), as a guard that holds its own handle
    /// on the pool instead of borrowing it, so it can move into `tokio::spawn` or a
    /// `'static` stream. Prefer `get` where it fits: an owned guard keeps the pool's state
    /// alive for as long as it is held.
    ///
    /// ```no_run
    /// # #[cfg(feature = "sqlite")]
    /// # async fn example(pool: brisk_pool::diesel::SqlitePool) -> Result<(), brisk_pool::Error> {
    /// let mut connection = pool.get_owned().await?;
    /// tokio::spawn(async move {
    ///     use diesel_async::SimpleAsyncConnection;
    ///     let _ = connection.batch_execute("VACUUM").await;
    ///     // The connection goes back to the pool here.
    /// });
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`get`](Self::get).
    #[track_caller]
    pub fn get_owned(&self) -> impl Future<Output = Result<OwnedPooledConnection<C>>> + Send + '_ {
        let location = Location::caller();
        let inner = &*self.inner;
        self.acquire(
            location,
            SharedRef::Owned(Arc::clone(&inner.shared)),
            || inner.bb8.get_owned(),
        )
    }

    /// Takes a permit, then a connection from `take`, both within the acquire timeout; the
    /// guard's lifetime `'g` is the connection's (the pool's borrow, or `'static` if owned).
    async fn acquire<'g, T, F>(
        &self,
        location: &'static Location<'static>,
        guard_shared: SharedRef<'g>,
        take: T,
    ) -> Result<PooledConnection<'g, C>>
    where
        T: Fn() -> F,
        F: Future<Output = Result<bb8::PooledConnection<'g, Manager<C>>, bb8::RunError<Failure>>>,
    {
        let shared = &*self.inner.shared;
        if shared.is_closed() {
            return Err(Error::Closed {
                target: Arc::clone(&shared.target),
            });
        }
        if let Some(error) = shared.unavailable() {
            shared.metrics.rejected.increment();
            return Err(error);
        }
        let inner = &*self.inner;
        let mut checkout = pin!(async {
            // The fast path takes a free permit and an idle connection without a clock read.
            let permit = match Arc::clone(&inner.gate).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    // No deadline when it lies beyond what an `Instant` holds (an acquire
                    // timeout of `Duration::MAX`: wait as long as it takes).
                    let deadline = tokio::time::Instant::now().checked_add(inner.acquire_timeout);
                    let waiting = Arc::clone(&inner.gate).acquire_owned();
                    let Some(permit) = until(deadline, waiting).await else {
                        return Err(bb8::RunError::TimedOut);
                    };
                    let permit = permit.map_err(|_| bb8::RunError::User(Failure::Closed))?;
                    let connection = until(deadline, take())
                        .await
                        .unwrap_or(Err(bb8::RunError::TimedOut))?;
                    return Ok((permit, connection));
                }
            };
            Ok((permit, take().await?))
        });
        let mut closing = pin!(shared.close_notify.notified());
        let mut opened = pin!(
            shared
                .breaker
                .as_ref()
                .map(|breaker| breaker.opened.notified())
        );
        let mut waited: Option<Waiting<'_>> = None;
        // `None`: the pool closed, or its circuit breaker opened, during the wait.
        let outcome = poll_fn(|cx| {
            if let Poll::Ready(result) = checkout.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            // The slow path: no idle connection. Count the wait, and listen for `close()` and
            // for the breaker opening.
            if waited.is_none() {
                waited = Some(Waiting::start(shared));
                closing.as_mut().enable();
                if let Some(opened) = opened.as_mut().as_pin_mut() {
                    opened.enable();
                }
            }
            if closing.as_mut().poll(cx).is_ready() || shared.is_closed() {
                return Poll::Ready(None);
            }
            if let Some(breaker) = &shared.breaker {
                let notified = opened
                    .as_mut()
                    .as_pin_mut()
                    .is_some_and(|opened| opened.poll(cx).is_ready());
                if breaker.is_open() {
                    return Poll::Ready(None);
                }
                if notified {
                    // It opened and a connect closed it again before this checkout ran: it
                    // goes on waiting, listening for the next opening.
                    opened.set(Some(breaker.opened.notified()));
                    if let Some(mut again) = opened.as_mut().as_pin_mut() {
                        again.as_mut().enable();
                        let _ = again.poll(cx);
                        if breaker.is_open() {
                            return Poll::Ready(None);
                        }
                    }
                }
            }
            Poll::Pending
        })
        .await;
        match outcome {
            Some(Ok((permit, connection))) => {
                let wait = waited.map_or(Duration::ZERO, |waiting| waiting.since.elapsed());
                shared.metrics.acquire.record_duration(wait);
                let leak_slot = shared
                    .leaks
                    .as_ref()
                    .map(|leaks| leaks.check_out(shared.clock.now(), location));
                Ok(PooledConnection {
                    connection,
                    _permit: permit,
                    shared: guard_shared,
                    leak_slot,
                })
            }
            Some(Err(bb8::RunError::TimedOut)) => {
                shared.metrics.timeouts.increment();
                let since = waited.map_or_else(Instant::now, |waiting| waiting.since);
                Err(Error::Timeout {
                    target: Arc::clone(&shared.target),
                    waited: self.inner.acquire_timeout,
                    last_connect_error: shared.connect_error_since(since),
                })
            }
            Some(Err(bb8::RunError::User(failure))) => {
                Err(failure.into_error(Arc::clone(&shared.target)))
            }
            // The breaker opened (it may have closed again since: then the error says the
            // next probe is due now), or the pool closed.
            None if !shared.is_closed() => {
                shared.metrics.rejected.increment();
                Err(shared.unavailable_error())
            }
            None => Err(Error::Closed {
                target: Arc::clone(&shared.target),
            }),
        }
    }

    /// Counts of connections and waiting checkouts, right now.
    pub fn status(&self) -> Status {
        let state = self.inner.bb8.state();
        Status {
            max_size: self.inner.max_size,
            size: state.connections,
            idle: state.idle_connections,
            in_use: state.connections.saturating_sub(state.idle_connections),
            waiting: self.inner.shared.waiting.load(Ordering::Relaxed),
        }
    }

    /// Checkouts held longer than the leak threshold right now, with where they were made.
    /// Empty when leak detection is off ([`PoolBuilder::leak_threshold`]).
    pub fn suspected_leaks(&self) -> Vec<SuspectedLeak> {
        let shared = &self.inner.shared;
        shared
            .leaks
            .as_ref()
            .map_or_else(Vec::new, |leaks| leaks.suspects(shared.clock.now()))
    }

    /// What the pool connects to, without credentials.
    pub fn target(&self) -> &str {
        &self.inner.shared.target
    }

    /// Stops new checkouts (they fail with [`Error::Closed`]), fails the waiting ones, closes
    /// idle connections, and waits until every checked-out connection has come back and been
    /// closed. Calling it again waits again; the pool stays closed.
    pub async fn close(&self) {
        let shared = &*self.inner.shared;
        shared.closed.store(true, Ordering::Release);
        shared.close_notify.notify_waiters();
        loop {
            let mut gone = pin!(shared.close_notify.notified());
            gone.as_mut().enable();
            self.inner.drain_idle();
            if self.inner.bb8.state().connections == 0 {
                return;
            }
            // Woken as each connection goes. A connect that was already under way when the
            // pool closed may still add one to the idle queue, so look again each period.
            let _ = tokio::time::timeout(shared.clock.period, gone).await;
        }
    }
}

impl<C: Connect> Inner<C> {
    /// Closes every idle connection. On a closed pool each checkout rejects the connection it
    /// takes and moves to the next; when none is left it would wait, so one poll empties the
    /// queue.
    fn drain_idle(&self) {
        let checkout = pin!(self.bb8.get());
        let mut cx = Context::from_waker(Waker::noop());
        // A connection cannot pass the closed check; if one did, dropping it closes it.
        drop(checkout.poll(&mut cx));
    }
}

impl<C: Connect> Inner<C> {
    /// Whether the refill task should connect: checkouts wait, the last connect failed (so
    /// bb8's own connects may have given up), and the pool is open and below its size.
    fn wants_refill(&self) -> bool {
        let shared = &self.shared;
        shared.waiting.load(Ordering::Relaxed) > 0
            && shared.is_failing()
            && !shared.is_closed()
            && self.bb8.state().connections < self.max_size
    }

    /// Connects while checkouts wait and the pool is below its size: one attempt at a time,
    /// a jittered wait of at most the retry backoff after each failure, none after a success.
    /// Each new connection goes to the pool's idle queue, which wakes the longest-waiting
    /// checkout (bb8 wakes its waiters in FIFO order).
    async fn refill(&self) {
        let shared = &self.shared;
        while shared.waiting.load(Ordering::Relaxed) > 0
            && !shared.is_closed()
            && self.bb8.state().connections < self.max_size
        {
            match self.dial.attempt().await {
                // At capacity (bb8's own connects won the race): the extra connection closes.
                Ok(connection) => {
                    if self.bb8.add(connection).is_err() {
                        return;
                    }
                }
                Err(_) => tokio::time::sleep(shared.jitter(shared.retry_backoff)).await,
            }
        }
    }
}

/// bb8 connects only when a checkout starts or a connection returns; once its connects have
/// failed and every caller already waits, nothing would try again until a checkout timed out.
/// This task keeps connecting in that state, so callers already waiting when the server comes
/// back get a connection within a retry backoff of it. It holds the pool only while it works.
async fn refill<C: Connect>(pool: Weak<Inner<C>>) {
    loop {
        let Some(shared) = pool.upgrade().map(|inner| Arc::clone(&inner.shared)) else {
            return;
        };
        // Woken by a failed connect or a new wait while connects fail; the period bounds the
        // cost of a wake-up that raced the check below.
        let period = shared.clock.period;
        let _ = tokio::time::timeout(period, shared.refill_wanted.notified()).await;
        drop(shared);
        let Some(inner) = pool.upgrade() else {
            return;
        };
        if inner.wants_refill() {
            inner.refill().await;
        }
    }
}

/// `future`'s output, or `None` once `deadline` passes; without a deadline, however long it
/// takes.
async fn until<F: Future>(deadline: Option<tokio::time::Instant>, future: F) -> Option<F::Output> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.ok(),
        None => Some(future.await),
    }
}

/// While the circuit breaker is open, connects once per probe interval; a success goes to the
/// idle queue (and the connect's bookkeeping closes the breaker). It holds the pool only while
/// it connects.
async fn probe<C: Connect>(pool: Weak<Inner<C>>) {
    loop {
        let Some(shared) = pool.upgrade().map(|inner| Arc::clone(&inner.shared)) else {
            return;
        };
        let Some(breaker) = &shared.breaker else {
            return;
        };
        if shared.is_closed() {
            return;
        }
        if !breaker.is_open() {
            let mut opened = pin!(breaker.opened.notified());
            opened.as_mut().enable();
            if !breaker.is_open() {
                // The period bounds how long a dropped pool keeps this task.
                let _ = tokio::time::timeout(shared.clock.period, opened).await;
            }
            continue;
        }
        tokio::time::sleep_until(breaker.next_probe()).await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        if !breaker.is_open() || shared.is_closed() || breaker.retry_after() > Duration::ZERO {
            continue;
        }
        breaker.schedule_probe();
        if let Ok(connection) = inner.dial.attempt().await {
            // At capacity: the extra connection closes.
            let _ = inner.bb8.add(connection);
        }
    }
}

/// Counts a checkout as waiting until it completes or is dropped.
struct Waiting<'a> {
    count: &'a AtomicUsize,
    since: Instant,
}

impl<'a> Waiting<'a> {
    fn start(shared: &'a Shared) -> Self {
        shared.waiting.fetch_add(1, Ordering::Relaxed);
        if shared.is_failing() {
            shared.refill_wanted.notify_one();
        }
        Self {
            count: &shared.waiting,
            since: Instant::now(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<C: Connect> ConnectionPool for Pool<C> {
    type Connection = C::Connection;
    type Guard<'a> = PooledConnection<'a, C>;
    type OwnedGuard = OwnedPooledConnection<C>;

    #[track_caller]
    fn get(&self) -> impl Future<Output = Result<Self::Guard<'_>>> + Send {
        Pool::get(self)
    }

    #[track_caller]
    fn get_owned(&self) -> impl Future<Output = Result<Self::OwnedGuard>> + Send {
        Pool::get_owned(self)
    }

    fn status(&self) -> Status {
        Pool::status(self)
    }

    fn close(&self) -> impl Future<Output = ()> + Send {
        Pool::close(self)
    }
}

/// A checked-out connection: derefs to the connection, and returns it to the pool on drop.
///
/// On return the connection is closed instead of reused if it is broken (socket closed,
/// transaction left open or failed), past its lifetime, or returned during a panic.
#[must_use = "dropping the guard returns the connection at once"]
pub struct PooledConnection<'a, C: Connect> {
    connection: bb8::PooledConnection<'a, Manager<C>>,
    /// Dropped after the connection (fields drop in order), so the waiter it wakes finds the
    /// connection back in the idle queue.
    _permit: tokio::sync::OwnedSemaphorePermit,
    shared: SharedRef<'a>,
    leak_slot: Option<usize>,
}

/// A checked-out connection that owns its handle on the pool, from [`Pool::get_owned`]:
/// `'static`, so it can move into a spawned task. It behaves as [`PooledConnection`].
pub type OwnedPooledConnection<C> = PooledConnection<'static, C>;

/// The pool state a guard reports to: borrowed from the pool, or shared with it.
enum SharedRef<'a> {
    Borrowed(&'a Shared),
    Owned(Arc<Shared>),
}

impl Deref for SharedRef<'_> {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        match self {
            Self::Borrowed(shared) => shared,
            Self::Owned(shared) => shared,
        }
    }
}

impl<C: Connect> Deref for PooledConnection<'_, C> {
    type Target = C::Connection;

    fn deref(&self) -> &C::Connection {
        &self.connection.connection
    }
}

impl<C: Connect> DerefMut for PooledConnection<'_, C> {
    fn deref_mut(&mut self) -> &mut C::Connection {
        &mut self.connection.connection
    }
}

impl<C: Connect> Drop for PooledConnection<'_, C> {
    fn drop(&mut self) {
        if let (Some(slot), Some(leaks)) = (self.leak_slot, &self.shared.leaks) {
            leaks.check_in(slot, self.shared.clock.now(), &self.shared.target);
        }
    }
}

impl<C: Connect> fmt::Debug for PooledConnection<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("target", &self.shared.target)
            .finish_non_exhaustive()
    }
}

/// Configures and builds a [`Pool`]; from [`Pool::builder`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct PoolBuilder<C: Connect> {
    connector: C,
    config: Config,
    hook: Option<Hook<C::Connection>>,
    metrics: Option<Metrics>,
}

impl<C: Connect> fmt::Debug for PoolBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("target", &self.connector.target())
            .field("config", &self.config)
            .field("on_connect", &HookDebug(&self.hook))
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl<C: Connect> PoolBuilder<C> {
    /// Replaces every setting at once, e.g. with one read by [`Config::from_env`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Most connections open at once. Default 10.
    pub fn max_size(mut self, max_size: u32) -> Self {
        self.config.max_size = max_size;
        self
    }

    /// Idle connections kept ready, opened while the pool is built. Default 1.
    pub fn min_idle(mut self, min_idle: u32) -> Self {
        self.config.min_idle = min_idle;
        self
    }

    /// Longest a checkout waits. Default 5 s.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.config.acquire_timeout = timeout;
        self
    }

    /// Longest one connect attempt, with its hook, or one validation may take. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Connections older than this are replaced. Default 30 min.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.max_lifetime = Some(lifetime);
        self
    }

    /// Keeps connections however old they get.
    pub fn no_max_lifetime(mut self) -> Self {
        self.config.max_lifetime = None;
        self
    }

    /// Each connection's lifetime is shortened by a random amount up to this. Default a tenth
    /// of the lifetime.
    pub fn lifetime_jitter(mut self, jitter: Duration) -> Self {
        self.config.lifetime_jitter = Some(jitter);
        self
    }

    /// Idle connections unused this long are closed, down to `min_idle`. Default 10 min.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.idle_timeout = Some(timeout);
        self
    }

    /// Keeps idle connections however long they go unused.
    pub fn no_idle_timeout(mut self) -> Self {
        self.config.idle_timeout = None;
        self
    }

    /// Which idle connection a checkout takes. Default [`Order::Fifo`].
    pub fn order(mut self, order: Order) -> Self {
        self.config.order = order;
        self
    }

    /// When connections are validated with a round trip. Default
    /// [`Validation::IdleFor`] 500 ms.
    pub fn validation(mut self, validation: Validation) -> Self {
        self.config.validation = validation;
        self
    }

    /// Further attempts after a failed connect, with backoff. Default 2.
    pub fn connect_retries(mut self, retries: u32) -> Self {
        self.config.connect_retries = retries;
        self
    }

    /// The first wait before a connect retry; it doubles, up to 2 s, with jitter.
    /// Default 100 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self
    }

    /// Reports checkouts held longer than `threshold` (a `tracing` warning with the call
    /// site, `brisk_pool_leaks_total`, [`Pool::suspected_leaks`]). Default off.
    pub fn leak_threshold(mut self, threshold: Duration) -> Self {
        self.config.leak_threshold = Some(threshold);
        self
    }

    /// A circuit breaker, for a database known to be down: after `failures` connect attempts
    /// in a row fail (retries included; any success resets the count), every checkout fails
    /// at once with [`Error::Unavailable`] — the waiting ones too — instead of waiting out the
    /// acquire timeout, and a probe connects `probe_interval` after the breaker opened and
    /// after each failed probe. The first probe that connects closes the breaker and puts its
    /// connection in the pool. Default off.
    ///
    /// While it is open no checkout is served, not even from idle connections: they were
    /// opened before connects began to fail and are likely cut too. Connections already
    /// checked out keep working and return as usual. Checkouts succeed again from the first
    /// successful probe, so `probe_interval` bounds how long the pool lags behind a
    /// recovered database; a short one (50 ms) costs one connect attempt per interval during
    /// an outage. Use `failures` above 1 so that one transient failure does not open it.
    pub fn circuit_breaker(mut self, failures: u32, probe_interval: Duration) -> Self {
        self.config.circuit_breaker = Some(CircuitBreaker::new(failures, probe_interval));
        self
    }

    /// No circuit breaker: checkouts wait up to the acquire timeout however connects fail.
    pub fn no_circuit_breaker(mut self) -> Self {
        self.config.circuit_breaker = None;
        self
    }

    /// Runs `hook` on every new connection before use, e.g. to set a statement timeout. Its
    /// error fails the connect attempt; so does a panic in it (or in the connector), with the
    /// error [`ConnectPanicked`](crate::ConnectPanicked), and the pool goes on connecting.
    ///
    /// ```no_run
    /// # #[cfg(feature = "postgres")]
    /// # async fn example() -> Result<(), brisk_pool::Error> {
    /// use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    /// let pool = brisk_pool::diesel::PgPool::builder(brisk_pool::diesel::PgConnector::new("postgres://app@db/app"))
    ///     .on_connect(|connection| Box::pin(async move {
    ///         connection.batch_execute("SET statement_timeout = '5s'").await?;
    ///         Ok(())
    ///     }))
    ///     .build()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_connect<F>(mut self, hook: F) -> Self
    where
        F: for<'c> Fn(&'c mut C::Connection) -> HookFuture<'c> + Send + Sync + 'static,
    {
        self.hook = Some(Box::new(hook));
        self
    }

    /// Reports acquire waits, timeouts, connects, connect failures, closes by reason, leaks,
    /// and connection gauges to `recorder`, labelled `name="<name>"`.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Some(Metrics::new(recorder, name));
        self
    }

    /// Builds the pool and opens `min_idle` connections.
    ///
    /// # Errors
    /// [`Error::Config`] for inconsistent settings; [`Error::Connect`] with the connector's
    /// own error as soon as one of the first connects fails (no retries here: a wrong URL or
    /// password should stop a service at start-up, not after a timeout).
    pub async fn build(self) -> Result<Pool<C>> {
        let config = self.config;
        config.check()?;
        let target: Arc<str> = self.connector.target().into();
        let metrics = self.metrics.unwrap_or_else(Metrics::noop);
        let shared = Arc::new(Shared::new(&config, Arc::clone(&target), metrics));
        let dial = Arc::new(Dial::new(self.connector, self.hook, Arc::clone(&shared)));
        let manager = Manager::new(Arc::clone(&dial));
        let mut builder = bb8::Pool::builder()
            .max_size(config.max_size)
            .min_idle(config.min_idle)
            .connection_timeout(config.acquire_timeout)
            // Lifetimes are enforced by the manager, with jitter; idle time by bb8's reaper.
            .max_lifetime(None)
            .idle_timeout(config.idle_timeout)
            // The manager decides per checkout whether a round trip is due.
            .test_on_check_out(true)
            // The manager retries with jittered backoff; bb8 would retry without jitter.
            .retry_connection(false)
            .queue_strategy(match config.order {
                Order::Fifo => bb8::QueueStrategy::Fifo,
                Order::Lifo => bb8::QueueStrategy::Lifo,
            });
        if let Some(idle) = config.idle_timeout {
            builder = builder
                .reaper_rate((idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30)));
        }
        let bb8 = builder
            .build(manager)
            .await
            .map_err(|failure| failure.into_error(Arc::clone(&target)))?;
        shared.warming.store(false, Ordering::Relaxed);
        let inner = Arc::new(Inner {
            bb8,
            gate: Arc::new(tokio::sync::Semaphore::new(config.max_size as usize)),
            dial,
            shared,
            max_size: config.max_size,
            acquire_timeout: config.acquire_timeout,
        });
        tokio::spawn(housekeep(Arc::downgrade(&inner)));
        tokio::spawn(refill(Arc::downgrade(&inner)));
        if inner.shared.breaker.is_some() {
            tokio::spawn(probe(Arc::downgrade(&inner)));
        }
        Ok(Pool { inner })
    }
}

/// Advances the pool's clock, samples its gauges, counts idle closes and reports leaks, once
/// per period, until the pool is dropped.
async fn housekeep<C: Connect>(pool: Weak<Inner<C>>) {
    let Some(period) = pool.upgrade().map(|inner| inner.shared.clock.period) else {
        return;
    };
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle_closes_seen = 0;
    loop {
        ticks.tick().await;
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let shared = &inner.shared;
        shared.clock.update();
        let state = inner.bb8.state();
        let metrics = &shared.metrics;
        metrics.idle.set(i64::from(state.idle_connections));
        metrics.in_use.set(i64::from(
            state.connections.saturating_sub(state.idle_connections),
        ));
        metrics
            .waiting
            .set(i64::try_from(shared.waiting.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        let idle_closes = state.statistics.connections_closed_idle_timeout;
        metrics.closed(
            CloseReason::Idle,
            idle_closes.saturating_sub(idle_closes_seen),
        );
        idle_closes_seen = idle_closes;
        if let Some(leaks) = &shared.leaks {
            leaks.scan(shared.clock.now(), &shared.target, metrics);
        }
    }
}
