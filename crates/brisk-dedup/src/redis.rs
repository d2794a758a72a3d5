//! Single-flight across processes that share one Redis.
//!
//! Protocol, per key (all keys of one flight share a `{hash tag}`, so it works on a cluster):
//!
//! - `<prefix>{<key>}:lease` holds the token of the instance running the work, with a TTL
//!   (`SET ... PX` inside a script, so acquiring is one round trip). While the work runs, the
//!   leader extends the TTL every third of it, but only while the token is still its own.
//! - When done, the leader saves the value in the [`ResultStore`], then in one script writes
//!   `<prefix>{<key>}:done:<token>` (`ok`, `retry` or `err:<message>`, with a short TTL) and
//!   deletes the lease if it still holds it (compare-and-delete).
//! - Followers poll `done:<token>` and the lease with exponential backoff (bounded by
//!   [`poll_interval`](RedisFlightBuilder::poll_interval)): `ok` means load the value from the
//!   store; an expired lease without a `done` means the leader died, so they race to acquire it.
//!
//! Inside each instance a [`SingleFlight`] runs first, so one process polls Redis once per key
//! however many of its callers wait.
//!
//! The release also `PUBLISH`es the lease key on `<prefix>released`. A flight built with
//! [`subscribe`](RedisFlightBuilder::subscribe) listens there and wakes its follower of that
//! key at once; while its subscription is live, its followers poll only at the slow end of
//! `poll_interval`, as a guard against a lost message.

mod wake;

use std::{
    fmt,
    future::Future,
    hash::{BuildHasher, RandomState},
    marker::PhantomData,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::Poll,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use brisk_metrics::Recorder;
use redis::{FromRedisValue, Script, ToRedisArgs, aio::ConnectionLike};
use tokio::time::Instant;

use crate::{
    Error, SingleFlight,
    catch::{self, CatchUnwind},
    metrics::Metrics,
};

/// Where a leader leaves its result for the followers in other instances: typically the cache
/// that the work fills anyway.
///
/// `save` is called by the leader before it announces completion, `load` by followers after
/// it. A `load` that finds nothing (evicted, or never saved) makes the follower run the work
/// itself.
pub trait ResultStore<T>: Send + Sync {
    /// The store's error; followers see it as text in [`Error::Store`].
    type Error: fmt::Display;

    /// Stores the value of `key`.
    fn save(&self, key: &str, value: &T) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Reads the value of `key`, if present.
    fn load(&self, key: &str) -> impl Future<Output = Result<Option<T>, Self::Error>> + Send;
}

/// A [`ResultStore`] in Redis itself: the value under `<prefix>{<key>}:value` with a TTL
/// (default 10 s: long enough for followers to read it, short enough not to become a cache).
///
/// Values are anything the redis crate can write and read back: strings, bytes, numbers.
pub struct RedisStore<C> {
    conn: C,
    prefix: String,
    ttl: Duration,
}

impl<C> RedisStore<C> {
    /// A store on `conn` with the prefix `brisk:dedup:` and a 10 s TTL.
    pub fn new(conn: C) -> Self {
        Self {
            conn,
            prefix: "brisk:dedup:".to_owned(),
            ttl: Duration::from_secs(10),
        }
    }

    /// The prefix of the keys it writes. Default: `brisk:dedup:`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long a stored value lives. Default: 10 s. Redis is given whole milliseconds, the
    /// fraction dropped, at least 1 and at most 2^62 (146 million years).
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    fn value_key(&self, key: &str) -> String {
        format!("{}{{{key}}}:value", self.prefix)
    }
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<C, T> ResultStore<T> for RedisStore<C>
where
    C: ConnectionLike + Clone + Send + Sync,
    T: ToRedisArgs + FromRedisValue + Send + Sync,
{
    type Error = redis::RedisError;

    async fn save(&self, key: &str, value: &T) -> Result<(), Self::Error> {
        redis::cmd("SET")
            .arg(self.value_key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(self.ttl))
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    async fn load(&self, key: &str) -> Result<Option<T>, Self::Error> {
        redis::cmd("GET")
            .arg(self.value_key(key))
            .query_async(&mut self.conn.clone())
            .await
    }
}

const ACQUIRE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const RELEASE: &str = r"
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call('PUBLISH', ARGV[4], KEYS[1])
return 1
";

/// Run for a leader that was dropped (cancelled) while it held, or may have just acquired, the
/// lease: deletes it only if it still holds the leader's token, and wakes subscribed followers,
/// whose next look finds the lease gone without a `done` and takes it over.
const ABANDON: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return 1
end
return 0
";

const OBSERVE: &str = r"
local done = redis.call('GET', KEYS[2])
if done then return {1, done} end
if redis.call('GET', KEYS[1]) == ARGV[1] then return {0, ''} end
return {2, ''}
";

/// Single-flight across instances: N processes sharing one Redis run the work once per key.
///
/// Each call first joins the in-process group; the one caller per process that goes on takes a
/// lease on the key in Redis or, if another instance holds it, waits for that instance to
/// finish and reads its result from the [`ResultStore`].
///
/// # Failure behaviour
/// - **Leader dies** (process killed, partitioned): its lease is no longer extended and expires
///   after [`lease_ttl`](RedisFlightBuilder::lease_ttl); one follower acquires it and runs the
///   work ([`brisk_dedup_handovers_total`](crate::SingleFlightBuilder::metrics)).
/// - **Leader's work fails**: followers get [`Error::Remote`] with the error's text; it
///   panics: the same, with the panic message.
/// - **The store has no value** after an `ok` (evicted, or saving failed): the follower runs
///   the work itself.
/// - **Redis fails**: calls return [`Error::Redis`] naming the step; nothing waits forever. A
///   leader whose work succeeded returns its value even if announcing it fails; followers then
///   take over when the lease expires.
/// - **Leader loses its lease** (the key evicted or deleted, lost in a failover, or expired
///   during a stall longer than the TTL, e.g. a blocked runtime): it stops extending the lease,
///   finishes its work and answers its own callers (the one that leads and those waiting in
///   its process) with the result, then saves and announces it as usual under its own token.
///   Its release deletes the lease only if it still holds its token, so a lease another
///   instance acquired meanwhile is left alone. Another instance may have started a second
///   execution in the meantime. Counted in [`brisk_dedup_lease_lost_total`].
/// - **Leader is cancelled** (its caller's future dropped, with no local waiter to take over):
///   the work is dropped, and a task spawned on the current tokio runtime deletes the lease if
///   it still holds the leader's token (also when the caller was dropped after Redis granted
///   the lease but before the reply was read), and publishes the release: followers elsewhere
///   take over at their next look instead of after `lease_ttl`. Dropped outside a runtime,
///   the lease expires after `lease_ttl`.
///
/// [`brisk_dedup_lease_lost_total`]: crate::SingleFlightBuilder::metrics
///
/// # Example
/// ```no_run
/// use std::sync::Arc;
/// use brisk_dedup::{redis::{RedisFlight, RedisStore}};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let client = redis::Client::open("redis://127.0.0.1/")?;
/// let conn = client.get_multiplexed_async_connection().await?;
/// let flight = RedisFlight::builder(conn.clone(), RedisStore::new(conn)).build()?;
/// let page: String = flight
///     .run("page:/home", || async {
///         Ok::<_, Arc<std::io::Error>>("<html>…".to_owned())
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct RedisFlight<C, S, T, E> {
    conn: C,
    store: S,
    local: SingleFlight<String, T, Error<E>>,
    settings: Settings,
    metrics: Metrics,
    scripts: Scripts,
    wakeups: Option<Arc<wake::Wakeups>>,
}

/// What the builder sets and the flight reads.
#[derive(Debug, Clone)]
struct Settings {
    prefix: String,
    lease_ttl: Duration,
    poll_min: Duration,
    poll_max: Duration,
    wait_timeout: Option<Duration>,
    redis_timeout: Duration,
    local_fallback: bool,
}

/// The Redis keys of one flight; they share a `{hash tag}`, so one script may touch them all.
struct Keys {
    base: String,
    lease: String,
}

impl Keys {
    fn new(prefix: &str, key: &str) -> Self {
        let base = format!("{prefix}{{{key}}}");
        let lease = format!("{base}:lease");
        Self { base, lease }
    }

    /// Where the holder of `token` announces its outcome.
    fn done(&self, token: &str) -> String {
        format!("{}:done:{token}", self.base)
    }
}

struct Scripts {
    acquire: Script,
    extend: Script,
    release: Script,
    observe: Script,
    abandon: Script,
}

impl<C, S, T, E> fmt::Debug for RedisFlight<C, S, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFlight")
            .field("settings", &self.settings)
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// What a follower learned from watching another instance's lease.
enum Followed<T, E> {
    Finished(Result<T, Error<E>>),
    /// Acquire the lease again: the leader died, or left no value in the store.
    TakeOver,
}

impl<C, S, T, E> RedisFlight<C, S, T, E>
where
    C: ConnectionLike + Clone + Send + Sync,
    S: ResultStore<T>,
    T: Clone + Send + Sync,
    E: Clone + fmt::Display,
{
    /// Configures a flight on `conn` (a `MultiplexedConnection` or `ConnectionManager`),
    /// leaving results in `store`.
    pub fn builder(conn: C, store: S) -> RedisFlightBuilder<C, S, T, E> {
        RedisFlightBuilder {
            conn,
            store,
            subscriber: None,
            settings: Settings {
                prefix: "brisk:dedup:".to_owned(),
                lease_ttl: Duration::from_secs(10),
                poll_min: Duration::from_millis(2),
                poll_max: Duration::from_millis(50),
                wait_timeout: None,
                redis_timeout: Duration::from_secs(2),
                local_fallback: false,
            },
            metrics: Metrics::noop(),
            value: PhantomData,
        }
    }

    /// Runs `work` for `key` once across all instances that share the Redis, or waits for the
    /// instance running it and returns its result.
    ///
    /// # Cancellation
    /// Dropping the future that leads drops the work; a caller waiting in this process takes
    /// over, and otherwise the lease is released by a task spawned on the current runtime
    /// (the connection is `'static` for that). See the type's "Failure behaviour".
    ///
    /// # Errors
    /// [`Error::Work`] or [`Error::Panicked`] when the work ran here, [`Error::Remote`] when it
    /// failed in another instance, [`Error::WaitTimeout`], [`Error::Redis`], [`Error::Store`].
    /// With [`local_fallback`](RedisFlightBuilder::local_fallback), an unreachable Redis is
    /// not an error: the work runs here instead.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> Result<T, Error<E>>
    where
        C: 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let result = self.local.run(key, || self.run_shared(key, work)).await;
        result.map_err(flatten)
    }

    /// How many keys this instance has an execution or a follower in flight for now: the
    /// callers of one key in this process share one, whether it runs here or follows another
    /// instance. For health checks and tests (0 once every call has ended or been dropped).
    pub fn in_flight(&self) -> usize {
        self.local.in_flight()
    }

    /// Whether this instance has an execution or a follower in flight for `key` now.
    pub fn is_in_flight(&self, key: &str) -> bool {
        self.local.is_in_flight(key)
    }

    /// Whether the pub/sub subscription of [`subscribe`](RedisFlightBuilder::subscribe) is
    /// live, so followers here are woken by releases (false without `subscribe`, before the
    /// first follower started it, and while it reconnects). For health checks and tests.
    pub fn is_subscribed(&self) -> bool {
        self.wakeups
            .as_ref()
            .is_some_and(|wakeups| wakeups.is_subscribed())
    }

    async fn run_shared<F, Fut>(&self, key: &str, work: F) -> Result<T, Error<E>>
    where
        C: 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        // A wait timeout too long for an `Instant` (`Duration::MAX`) is no limit.
        let deadline = self
            .settings
            .wait_timeout
            .and_then(|timeout| started.checked_add(timeout));
        let keys = Keys::new(&self.settings.prefix, key);
        let token = new_token();
        let mut lease = LeaseGuard {
            flight: self,
            lease: &keys.lease,
            token: &token,
            armed: false,
        };
        let mut took_over = false;
        let mut followed = false;
        loop {
            // From here the lease may be ours, even if this caller is dropped before it reads
            // the reply that says so.
            lease.armed = true;
            let acquired: Result<String, _> = self
                .bounded(
                    self.scripts
                        .acquire
                        .key(&keys.lease)
                        .arg(&token)
                        .arg(millis(self.settings.lease_ttl))
                        .invoke_async(&mut self.conn.clone()),
                )
                .await;
            // A script that timed out may still have taken the lease: the guard checks.
            if let Err(source) = &acquired
                && !source.is_timeout()
            {
                lease.armed = false;
            }
            let holder = match acquired {
                Ok(holder) => holder,
                Err(source) if self.falls_back(&source) => return self.run_here(key, work).await,
                Err(source) => return Err(redis_error("acquire lease", key, source)),
            };
            if holder == token {
                if took_over {
                    self.metrics.handovers.increment();
                }
                return self.lead(key, &keys, &token, work, &mut lease).await;
            }
            lease.armed = false;
            if !followed {
                // This caller joins an execution elsewhere instead of running one.
                self.metrics.coalesced.increment();
                followed = true;
            }
            match self.follow(key, &keys, &holder, started, deadline).await {
                Ok(Followed::Finished(result)) => return result,
                Ok(Followed::TakeOver) => took_over = true,
                // Redis went away while this caller followed another instance's execution.
                Err(Error::Redis { source, .. }) if self.falls_back(&source) => {
                    return self.run_here(key, work).await;
                }
                Err(Error::Store { .. }) if self.settings.local_fallback => {
                    return self.run_here(key, work).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn lead<F, Fut>(
        &self,
        key: &str,
        keys: &Keys,
        token: &str,
        work: F,
        lease: &mut LeaseGuard<'_, C, S, T, E>,
    ) -> Result<T, Error<E>>
    where
        C: 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.metrics.executions.increment();
        let outcome = {
            let mut work = pin!(CatchUnwind::new(async move { work().await }));
            let mut extend = pin!(self.extend_while_running(&keys.lease, token));
            let mut extending = true;
            // Runs the work; the lease is extended beside it until it completes, or until the
            // extension finds the lease lost: then the work goes on alone, and the finished
            // extension is never polled again.
            std::future::poll_fn(|cx| {
                if let Poll::Ready(outcome) = work.as_mut().poll(cx) {
                    return Poll::Ready(outcome);
                }
                if extending && extend.as_mut().poll(cx).is_ready() {
                    extending = false;
                }
                Poll::Pending
            })
            .await
        };
        let outcome = catch::outcome(outcome, key, &self.metrics);
        let status = match &outcome {
            Ok(value) => {
                let saved =
                    tokio::time::timeout(self.settings.redis_timeout, self.store.save(key, value));
                match saved.await {
                    Ok(Ok(())) => "ok".to_owned(),
                    // Followers will not find the value, so they run the work themselves.
                    Ok(Err(_)) | Err(_) => "retry".to_owned(),
                }
            }
            Err(Error::Work { error, .. }) => format!("err:{error}"),
            Err(Error::Panicked { message, .. }) => format!("err:panicked: {message}"),
            Err(other) => format!("err:{other}"),
        };
        let released = self
            .bounded(
                self.scripts
                    .release
                    .key(&keys.lease)
                    .key(keys.done(token))
                    .arg(token)
                    .arg(status)
                    .arg(millis(self.done_ttl()))
                    .arg(released_channel(&self.settings.prefix))
                    .invoke_async::<()>(&mut self.conn.clone()),
            )
            .await;
        // Released, or Redis failed: either way the guard has nothing more to do.
        lease.armed = false;
        // The work's outcome stands even if announcing it failed: followers take over when
        // the lease expires.
        if released.is_err() {
            self.metrics.release_failures.increment();
        }
        outcome
    }

    /// Whether `error` means Redis cannot be reached now and the caller should run the work
    /// without it ([`local_fallback`](RedisFlightBuilder::local_fallback) on).
    fn falls_back(&self, error: &redis::RedisError) -> bool {
        self.settings.local_fallback && is_outage(error)
    }

    /// Runs the work in this process, without Redis: the group's in-process single-flight
    /// still holds, so it runs once here however many callers wait.
    async fn run_here<F, Fut>(&self, key: &str, work: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.metrics.local_fallbacks.increment();
        self.metrics.executions.increment();
        let outcome = CatchUnwind::new(async move { work().await }).await;
        catch::outcome(outcome, key, &self.metrics)
    }

    /// One of the flight's own Redis calls, bounded by `redis_timeout`: a connection that
    /// waits out a reconnection does not hold the caller longer than that.
    async fn bounded<R>(
        &self,
        call: impl Future<Output = redis::RedisResult<R>>,
    ) -> redis::RedisResult<R> {
        match tokio::time::timeout(self.settings.redis_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no reply from Redis within {:?} (redis_timeout)",
                    self.settings.redis_timeout
                ),
            ))),
        }
    }

    /// Extends the lease every third of its TTL while the token is still ours; returns when
    /// the lease was lost. Redis errors are retried at the next tick.
    async fn extend_while_running(&self, lease_key: &str, token: &str) {
        loop {
            tokio::time::sleep(self.settings.lease_ttl / 3).await;
            let extended: Result<i64, _> = self
                .bounded(
                    self.scripts
                        .extend
                        .key(lease_key)
                        .arg(token)
                        .arg(millis(self.settings.lease_ttl))
                        .invoke_async(&mut self.conn.clone()),
                )
                .await;
            if extended == Ok(0) {
                self.metrics.lease_lost.increment();
                return;
            }
        }
    }

    async fn follow(
        &self,
        key: &str,
        keys: &Keys,
        holder: &str,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<Followed<T, E>, Error<E>> {
        let done_key = keys.done(holder);
        let mut interval = self.settings.poll_min;
        let waiter = self
            .wakeups
            .as_ref()
            .map(|wakeups| wakeups.register(&keys.lease));
        loop {
            // Listening starts before the lease is read: a release published after the read
            // finds this follower waiting.
            let mut woken = pin!(waiter.as_ref().map(|waiter| waiter.notify().notified()));
            if let Some(woken) = woken.as_mut().as_pin_mut() {
                woken.enable();
            }
            if self.is_subscribed() {
                // Woken by the release, so polling only guards against a lost message.
                interval = self.settings.poll_max;
            }
            let (state, status): (i64, String) = self
                .bounded(
                    self.scripts
                        .observe
                        .key(&keys.lease)
                        .key(&done_key)
                        .arg(holder)
                        .invoke_async(&mut self.conn.clone()),
                )
                .await
                .map_err(|source| redis_error("poll lease", key, source))?;
            match state {
                // Still running there.
                0 => {
                    // Gives up only once a look taken at or after the deadline still finds it
                    // running: a release in the last stretch of the wait is not missed.
                    if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                        self.metrics.wait_timeouts.increment();
                        return Err(Error::WaitTimeout {
                            key: format!("{key:?}"),
                            waited: started.elapsed(),
                        });
                    }
                    // Listens for the release until the next poll or the deadline, whichever
                    // comes first, then looks again.
                    let wake = match deadline {
                        Some(deadline) => far_deadline(interval).min(deadline),
                        None => far_deadline(interval),
                    };
                    match woken.as_mut().as_pin_mut() {
                        Some(woken) => {
                            let _ = tokio::time::timeout_at(wake, woken).await;
                        }
                        None => tokio::time::sleep_until(wake).await,
                    }
                    interval = interval.saturating_mul(2).min(self.settings.poll_max);
                }
                // Finished there.
                1 => {
                    if let Some(message) = status.strip_prefix("err:") {
                        return Ok(Followed::Finished(Err(Error::Remote {
                            key: format!("{key:?}"),
                            message: message.to_owned(),
                        })));
                    }
                    if status != "ok" {
                        return Ok(Followed::TakeOver);
                    }
                    let timeout = self.settings.redis_timeout;
                    let loaded = match tokio::time::timeout(timeout, self.store.load(key)).await {
                        Ok(Ok(loaded)) => loaded,
                        Ok(Err(error)) => return Err(store_error(key, error.to_string())),
                        Err(_) => {
                            return Err(store_error(key, format!("no reply within {timeout:?}")));
                        }
                    };
                    return Ok(match loaded {
                        Some(value) => {
                            self.metrics.remote_results.increment();
                            Followed::Finished(Ok(value))
                        }
                        None => Followed::TakeOver,
                    });
                }
                // The lease expired without a result: the leader is gone.
                _ => return Ok(Followed::TakeOver),
            }
        }
    }

    /// How long a `done` marker lives: long enough for the slowest poller to see it.
    fn done_ttl(&self) -> Duration {
        self.settings
            .poll_max
            .saturating_mul(20)
            .max(self.settings.lease_ttl)
    }
}

/// Builds a [`RedisFlight`].
#[must_use = "call `build()` to get the flight"]
pub struct RedisFlightBuilder<C, S, T, E> {
    conn: C,
    store: S,
    subscriber: Option<redis::Client>,
    settings: Settings,
    metrics: Metrics,
    value: PhantomData<fn() -> (T, E)>,
}

impl<C, S, T, E> fmt::Debug for RedisFlightBuilder<C, S, T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisFlightBuilder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<C, S, T, E> RedisFlightBuilder<C, S, T, E> {
    /// The prefix of the Redis keys it uses. Default: `brisk:dedup:`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.settings.prefix = prefix.into();
        self
    }

    /// How long a lease lives without being extended: after a leader dies, the time until
    /// another instance takes over. The leader extends it every third of this. Default: 10 s;
    /// [`build`](Self::build) refuses less than 3 ms.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.settings.lease_ttl = ttl;
        self
    }

    /// Followers poll the lease first after `min`, then at doubling intervals up to `max`.
    /// Default: 2 ms to 50 ms. [`build`](Self::build) refuses a `min` under 100 µs and a
    /// `max` below `min`. A `max` too long for a deadline (`Duration::MAX`) waits about 30
    /// years, i.e. followers rely on [`subscribe`](Self::subscribe) to be woken.
    pub fn poll_interval(mut self, min: Duration, max: Duration) -> Self {
        self.settings.poll_min = min;
        self.settings.poll_max = max;
        self
    }

    /// Wakes followers by pub/sub the moment the leader in another instance releases, instead
    /// of at their next poll: the flight opens one subscriber connection from `client` (on
    /// first use) and keeps it, reconnecting with backoff if it drops. While it is live,
    /// followers poll only every `poll_interval` max, as a guard against a lost message;
    /// while it is not, they poll as without it. Default: off (polling only, no extra
    /// connection).
    pub fn subscribe(mut self, client: redis::Client) -> Self {
        self.subscriber = Some(client);
        self
    }

    /// How long a caller waits for an execution elsewhere (in this process or another) before
    /// it leaves with [`Error::WaitTimeout`]. Default: no limit. A timeout too long to compute
    /// a deadline from (`Duration::MAX`) is no limit too. A follower of another instance
    /// waits (listening for the release with [`subscribe`](Self::subscribe)) until the
    /// earlier of its next poll and the deadline, and at the deadline looks at the lease once
    /// more: it times out only if the work is still running then.
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.settings.wait_timeout = Some(timeout);
        self
    }

    /// How long each of the flight's Redis calls (lease, poll, release, and the store's save
    /// and load) may take before it counts as failed, as Redis being unreachable would.
    /// A reconnecting connection (redis' `ConnectionManager` retries for about 6 s by
    /// default) otherwise holds callers for as long as it retries. Default: 2 s;
    /// [`build`](Self::build) refuses zero.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.settings.redis_timeout = timeout;
        self
    }

    /// When Redis cannot be reached (refused, dropped, no reply within
    /// [`redis_timeout`](Self::redis_timeout), loading, failing over), run the work in this
    /// process instead of failing with [`Error::Redis`]: callers in one process still share
    /// one execution, but each instance runs its own until Redis is back. Counted in
    /// `brisk_dedup_local_fallbacks_total`. Default: off, so an outage is visible to callers
    /// and no instance runs work the others may be running.
    pub fn local_fallback(mut self, enabled: bool) -> Self {
        self.settings.local_fallback = enabled;
        self
    }

    /// Reports the counters described in [`Builder::metrics`](crate::SingleFlightBuilder::metrics).
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// The flight, or [`Error::Config`] for a setting out of range.
    pub fn build(self) -> Result<RedisFlight<C, S, T, E>, Error> {
        let settings = &self.settings;
        if settings.lease_ttl < Duration::from_millis(3) {
            return Err(Error::config(
                "lease_ttl",
                settings.lease_ttl,
                "at least 3 ms (the leader extends it every third)",
            ));
        }
        if settings.redis_timeout.is_zero() {
            return Err(Error::config(
                "redis_timeout",
                settings.redis_timeout,
                "more than zero",
            ));
        }
        if settings.poll_min < Duration::from_micros(100) {
            return Err(Error::config(
                "poll_interval",
                settings.poll_min,
                "a min of at least 100 µs",
            ));
        }
        if settings.poll_max < settings.poll_min {
            return Err(Error::config(
                "poll_interval",
                settings.poll_max,
                "a max no lower than the min",
            ));
        }
        // Locally the group counts joins, handovers and wait timeouts; executions and panics
        // are counted where the work really runs.
        let mut local = SingleFlight::builder();
        if let Some(timeout) = self.settings.wait_timeout {
            local = local.wait_timeout(timeout);
        }
        let mut local = local.build()?;
        local.set_metrics(Metrics {
            executions: brisk_metrics::Counter::noop(),
            panics: brisk_metrics::Counter::noop(),
            ..self.metrics.clone()
        });
        let wakeups = self.subscriber.map(|client| {
            Arc::new(wake::Wakeups::new(
                client,
                released_channel(&self.settings.prefix),
                self.settings.redis_timeout,
            ))
        });
        Ok(RedisFlight {
            conn: self.conn,
            store: self.store,
            wakeups,
            local,
            settings: self.settings,
            metrics: self.metrics,
            scripts: Scripts {
                acquire: Script::new(ACQUIRE),
                extend: Script::new(EXTEND),
                release: Script::new(RELEASE),
                observe: Script::new(OBSERVE),
                abandon: Script::new(ABANDON),
            },
        })
    }
}

/// The local group's error around the shared procedure's error: one level, not two.
fn flatten<E>(error: Error<Error<E>>) -> Error<E> {
    match error {
        Error::Work { error, .. } => error,
        Error::Config {
            setting,
            value,
            reason,
        } => Error::Config {
            setting,
            value,
            reason,
        },
        Error::Panicked { key, message } => Error::Panicked { key, message },
        Error::WaitTimeout { key, waited } => Error::WaitTimeout { key, waited },
        Error::Remote { key, message } => Error::Remote { key, message },
        Error::Redis { op, key, source } => Error::Redis { op, key, source },
        Error::Store { op, key, message } => Error::Store { op, key, message },
    }
}

/// Errors that mean Redis cannot serve now (down, unreachable, too slow, loading, failing
/// over), as opposed to a request it refused.
fn is_outage(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
            )
        )
}

/// A failed `load` from the result store.
fn store_error<E>(key: &str, message: String) -> Error<E> {
    Error::Store {
        op: "load",
        key: format!("{key:?}"),
        message,
    }
}

fn redis_error<E>(op: &'static str, key: &str, source: redis::RedisError) -> Error<E> {
    Error::Redis {
        op,
        key: format!("{key:?}"),
        source,
    }
}

/// A duration as Redis takes it in `PX`/`PEXPIRE`: whole milliseconds, at least 1, and at
/// most 2^62 (146 million years; Redis refuses an expiry past `i64::MAX` ms from now).
fn millis(duration: Duration) -> u64 {
    const MOST: u64 = 1 << 62;
    u64::try_from(duration.as_millis())
        .unwrap_or(MOST)
        .clamp(1, MOST)
}

/// `after` from now, or for a duration too long for an `Instant` (`Duration::MAX`), about 30
/// years from now (tokio's own "never" for timers).
fn far_deadline(after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);
    let now = Instant::now();
    now.checked_add(after).unwrap_or_else(|| now + FAR)
}

/// Releases the lease of a leader that is dropped before it released it itself, from a task
/// spawned on the current runtime: compare-and-delete, so a lease another instance holds now
/// is left alone.
struct LeaseGuard<'a, C, S, T, E>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    flight: &'a RedisFlight<C, S, T, E>,
    lease: &'a str,
    token: &'a str,
    /// Whether the lease may be ours and not yet released.
    armed: bool,
}

impl<C, S, T, E> Drop for LeaseGuard<'_, C, S, T, E>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Outside a runtime (or while it shuts down) nothing can run: the lease expires.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let flight = self.flight;
        let mut conn = flight.conn.clone();
        let script = flight.scripts.abandon.clone();
        let (lease, token) = (self.lease.to_owned(), self.token.to_owned());
        let channel = released_channel(&flight.settings.prefix);
        let timeout = flight.settings.redis_timeout;
        let failures = flight.metrics.release_failures.clone();
        runtime.spawn(async move {
            let released = tokio::time::timeout(
                timeout,
                script
                    .key(&lease)
                    .arg(&token)
                    .arg(&channel)
                    .invoke_async::<i64>(&mut conn),
            )
            .await;
            if !matches!(released, Ok(Ok(_))) {
                failures.increment();
            }
        });
    }
}

/// A token no other lease holder has: process id, time, a counter, and per-process random
/// bits from the standard library's randomly seeded hasher.
/// The channel that releases are published on: one per prefix, so flights with their own
/// prefix do not wake each other's followers.
fn released_channel(prefix: &str) -> String {
    format!("{prefix}released")
}

fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let random = RandomState::new().hash_one((count, nanos));
    format!("{:x}-{nanos:x}-{count:x}-{random:016x}", std::process::id())
}
