//! Redis: a pool of dedicated connections ([`RedisPool`]), and one shared multiplexed
//! connection behind the same API ([`SharedRedis`]).
//!
//! # Which one
//! A multiplexed connection pipelines the commands of every task over one socket, so most
//! services need no pool at all: use [`SharedRedis`] (or a `ConnectionManager` directly).
//! A pool of dedicated connections is needed when one task's command holds its connection:
//! - **blocking commands** (`BLPOP`, `BRPOP`, `XREAD BLOCK`, `WAIT`): on a shared connection
//!   every other command queues behind them;
//! - **`MULTI`/`EXEC` sent as separate commands** (`WATCH` then `MULTI`): the transaction state
//!   is per connection, so other tasks' commands would land inside it;
//! - **`SELECT`** or other per-connection state.
//!
//! Pub/sub puts a connection into subscriber mode for good; take a dedicated
//! `client.get_async_pubsub()` for it rather than a pooled connection.

use std::{
    fmt,
    future::Future,
    ops::{Deref, DerefMut},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_metrics::Recorder;
use redis::{
    Arg, AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection},
};
use tokio::sync::Notify;

use crate::{
    connect::Connect,
    error::{Error, Result},
    metrics::RedisMetrics,
    pool::{ConnectionPool, Pool, Status},
};

/// A pool of dedicated Redis connections, for blocking commands and transactions.
pub type RedisPool = Pool<RedisConnector>;

/// Opens dedicated Redis connections for a [`RedisPool`].
#[derive(Clone)]
pub struct RedisConnector {
    client: Client,
    target: String,
    response_timeout: ResponseTimeout,
}

/// How long a command may wait for its reply.
#[derive(Debug, Clone, Copy)]
enum ResponseTimeout {
    /// Each kind's own default: none on a dedicated connection (blocking commands may block),
    /// redis-rs's 500 ms on a [`SharedRedis`] (one stuck reply would hold up every task).
    Default,
    Set(Duration),
    Disabled,
}

impl ResponseTimeout {
    fn or(self, default: Option<Duration>) -> Option<Duration> {
        match self {
            Self::Default => default,
            Self::Set(timeout) => Some(timeout),
            Self::Disabled => None,
        }
    }
}

/// redis-rs's response timeout for multiplexed connections, the [`SharedRedis`] default.
const SHARED_RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Shows the target only: redis-rs's client shows the parsed host, which for a URL with an
/// unencoded `@` in its password may hold part of the password.
impl fmt::Debug for RedisConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnector")
            .field("target", &self.target)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisConnector {
    /// Connects to a `redis://`, `rediss://`, `redis+unix://` or `unix://` URL. Errors, `Debug`
    /// and logs show `redis://host:port/db` (no user, no password); a URL that does not parse,
    /// or has more than one `@`, is shown as `<unparseable connection string>`. `rediss://` (TLS) needs redis-rs's TLS
    /// support, which this crate does not turn on: add `redis` with the `tokio-rustls-comp`
    /// (or `tokio-native-tls-comp`) feature to your own dependencies.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL is not a Redis URL, or is `rediss://` without TLS
    /// support built in.
    pub fn new(url: &str) -> Result<Self> {
        let client = Client::open(url).map_err(|_| {
            let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
            // Valid but for TLS: the same URL over plain TCP opens.
            let tls_missing = scheme.eq_ignore_ascii_case("rediss")
                && Client::open(format!("redis{}", &url[scheme.len()..])).is_ok();
            Error::config(
                "url",
                crate::target::UNPARSEABLE,
                if tls_missing {
                    "rediss:// needs redis-rs's TLS support: add the redis crate with its \
                     tokio-rustls-comp feature to your dependencies"
                } else {
                    "expected redis://[user:password@]host[:port][/db]"
                },
            )
        })?;
        let mut connector = Self::from_client(client);
        // An unencoded `@` (or `#`, `/`, `?` before the last `@`) in the password moves part
        // of it into what the URL parser reads as the host: show nothing of such a URL.
        if url.matches('@').count() > 1 {
            crate::target::UNPARSEABLE.clone_into(&mut connector.target);
        }
        Ok(connector)
    }

    /// Connects with an existing client.
    pub fn from_client(client: Client) -> Self {
        let target = crate::target::redis(client.get_connection_info());
        Self {
            client,
            target,
            response_timeout: ResponseTimeout::Default,
        }
    }

    /// How long a command waits for its reply before it fails with a timeout error. A pooled
    /// connection that timed out is then closed; a [`SharedRedis`] reconnects by itself.
    /// Default: none for a [`RedisPool`]'s dedicated connections, so that blocking commands
    /// can block; 500 ms for a [`SharedRedis`], where one stuck reply holds up every task.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = ResponseTimeout::Set(timeout);
        self
    }

    /// Lets every command wait for its reply however long it takes, on either kind.
    pub fn no_response_timeout(mut self) -> Self {
        self.response_timeout = ResponseTimeout::Disabled;
        self
    }
}

impl Connect for RedisConnector {
    type Connection = RedisConnection;
    type Error = RedisError;

    async fn connect(&self) -> RedisResult<RedisConnection> {
        // The pool bounds the connect with its own timeout.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(self.response_timeout.or(None));
        let inner = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let db = inner.get_db();
        Ok(RedisConnection {
            inner,
            broken: false,
            awaiting_reply: false,
            session: Session::new(db),
        })
    }

    async fn validate(&self, connection: &mut RedisConnection) -> RedisResult<()> {
        redis::cmd("PING").query_async::<()>(connection).await
    }

    fn is_broken(&self, connection: &mut RedisConnection) -> bool {
        connection.broken || connection.awaiting_reply || connection.session.is_dirty()
    }

    /// What the connect hook left (a `SELECT`, a `CLIENT SETNAME`) is the connection's clean
    /// state.
    fn ready(&self, connection: &mut RedisConnection) {
        connection.session.mark_clean();
    }

    fn target(&self) -> String {
        self.target.clone()
    }
}

/// A dedicated Redis connection from a [`RedisPool`]; use it with `redis::AsyncCommands` or
/// `query_async` like any redis-rs connection.
///
/// It watches its own commands, and the pool closes it on return instead of handing it to the
/// next task when:
/// - a command or pipeline was sent and its future dropped before the reply came (a timeout
///   or a cancelled request: the server may still be running it, a blocking `BLPOP` may
///   still take the next item pushed, and its reply would reach the next user);
/// - an I/O error, a dropped connection or a response timeout was seen;
/// - it holds per-connection state the next user would inherit: a `MULTI` not closed by
///   `EXEC` or `DISCARD`, a `WATCH` not ended by `EXEC`, `DISCARD` or `UNWATCH`, a `SELECT`
///   of a database other than its own (the URL's, or the one the connect hook selected), or
///   a command that changes the session for good (`SUBSCRIBE` and its kin, `MONITOR`,
///   `CLIENT REPLY`/`TRACKING`/`SETNAME`/`SETINFO`/`NO-EVICT`/`NO-TOUCH`, `HELLO`, `AUTH`,
///   `RESET`, `READONLY`, `READWRITE`).
///
/// State is followed from what was sent and answered: a command future made and dropped
/// before it was polled sent nothing and changes nothing.
pub struct RedisConnection {
    inner: MultiplexedConnection,
    broken: bool,
    /// Set while a command is out: still set on return means its future was dropped after
    /// the command may have been sent and before its reply was read.
    awaiting_reply: bool,
    session: Session,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("broken", &self.broken)
            .field("awaiting_reply", &self.awaiting_reply)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl RedisConnection {
    fn observe<T>(&mut self, result: &RedisResult<T>) {
        if let Err(error) = result
            && (error.is_io_error()
                || error.is_connection_dropped()
                || error.is_unrecoverable_error()
                || error.is_timeout())
        {
            self.broken = true;
        }
    }
}

/// The per-connection state a checkout can leave behind, followed from the commands that
/// were answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Session {
    /// The database a clean connection is on.
    clean_db: i64,
    /// The database selected now, as far as `SELECT` tells.
    db: i64,
    in_transaction: bool,
    watching: bool,
    /// A command that changes the session in a way not followed here was answered.
    changed: bool,
}

impl Session {
    fn new(db: i64) -> Self {
        Self {
            clean_db: db,
            db,
            in_transaction: false,
            watching: false,
            changed: false,
        }
    }

    /// Whether the next checkout would inherit state.
    fn is_dirty(&self) -> bool {
        self.in_transaction || self.watching || self.changed || self.db != self.clean_db
    }

    /// The state now is the clean one (after the connect hook).
    fn mark_clean(&mut self) {
        self.clean_db = self.db;
        self.changed = false;
    }

    /// Follows one command that was sent and answered (an error reply too: where a failed
    /// command may or may not have changed the state, the state is taken as changed).
    fn follow(&mut self, cmd: &Cmd) {
        let mut args = cmd.args_iter().filter_map(|arg| match arg {
            Arg::Simple(bytes) => Some(bytes),
            _ => None,
        });
        let Some(name) = args.next() else {
            return;
        };
        let is = |expected: &str| name.eq_ignore_ascii_case(expected.as_bytes());
        if is("MULTI") {
            self.in_transaction = true;
        } else if is("EXEC") || is("DISCARD") {
            self.in_transaction = false;
            self.watching = false;
        } else if is("WATCH") {
            self.watching = true;
        } else if is("UNWATCH") {
            // Inside MULTI it is queued, not run; EXEC or DISCARD ends the watch anyway.
            if !self.in_transaction {
                self.watching = false;
            }
        } else if is("SELECT") {
            match args
                .next()
                .and_then(|db| std::str::from_utf8(db).ok())
                .and_then(|db| db.trim().parse::<i64>().ok())
            {
                Some(db) => self.db = db,
                None => self.changed = true,
            }
        } else if is("CLIENT") {
            let sub = args.next().unwrap_or_default();
            if [
                "REPLY", "TRACKING", "SETNAME", "SETINFO", "NO-EVICT", "NO-TOUCH",
            ]
            .iter()
            .any(|changing| sub.eq_ignore_ascii_case(changing.as_bytes()))
            {
                self.changed = true;
            }
        } else if [
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "MONITOR",
            "HELLO",
            "AUTH",
            "RESET",
            "READONLY",
            "READWRITE",
        ]
        .iter()
        .any(|changing| is(changing))
        {
            self.changed = true;
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            // Sent from the first poll on: if this future is dropped before the reply, the
            // flag stays set and the pool closes the connection.
            self.awaiting_reply = true;
            let result = self.inner.req_packed_command(cmd).await;
            self.awaiting_reply = false;
            self.observe(&result);
            if result.is_ok() {
                self.session.follow(cmd);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            self.awaiting_reply = true;
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.awaiting_reply = false;
            self.observe(&result);
            if result.is_ok() {
                // An atomic pipeline's MULTI and EXEC are added when it is packed, not listed.
                for cmd in pipeline.cmd_iter() {
                    self.session.follow(cmd);
                }
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// One multiplexed, self-reconnecting Redis connection (redis-rs's `ConnectionManager`)
/// behind the [`ConnectionPool`] API: `get()` never waits, and every checkout shares the
/// socket. The right choice unless commands block or hold transaction state; see the
/// [module docs](self).
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use brisk_pool::redis::{RedisConnector, SharedRedis};
/// use redis::AsyncCommands;
///
/// let registry = brisk_metrics::Registry::new();
/// let redis = SharedRedis::builder(RedisConnector::new("redis://127.0.0.1/")?)
///     .metrics(&registry, "cache")
///     .build()
///     .await?;
/// let mut connection = redis.checkout()?;
/// let _: () = connection.set("greeting", "hello").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SharedRedis {
    inner: Arc<SharedInner>,
}

struct SharedInner {
    connection: SharedRedisConnection,
    target: Arc<str>,
    closed: AtomicBool,
    checked_out: AtomicUsize,
    returned: Notify,
}

impl fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRedis")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl SharedRedis {
    /// Starts configuring a shared connection made by `connector`, whose response timeout
    /// it honours (default 500 ms here).
    pub fn builder(connector: RedisConnector) -> SharedRedisBuilder {
        SharedRedisBuilder {
            connector,
            connect_timeout: Duration::from_secs(5),
            metrics: None,
        }
    }

    /// Connects with the defaults and no metrics:
    /// `SharedRedis::builder(connector.clone()).build()`.
    ///
    /// # Errors
    /// As [`SharedRedisBuilder::build`].
    pub async fn connect(connector: &RedisConnector) -> Result<Self> {
        Self::builder(connector.clone()).build().await
    }

    /// A handle to the shared connection, without waiting.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`ConnectionPool::close`].
    pub fn checkout(&self) -> Result<SharedConnection> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                target: Arc::clone(&inner.target),
            });
        }
        inner.checked_out.fetch_add(1, Ordering::AcqRel);
        Ok(SharedConnection {
            connection: inner.connection.clone(),
            inner: Arc::clone(inner),
        })
    }
}

impl ConnectionPool for SharedRedis {
    type Connection = SharedRedisConnection;
    type Guard<'a> = SharedConnection;
    type OwnedGuard = SharedConnection;

    fn get(&self) -> impl Future<Output = Result<SharedConnection>> + Send {
        std::future::ready(self.checkout())
    }

    /// The same as [`get`](ConnectionPool::get): every checkout owns a handle.
    fn get_owned(&self) -> impl Future<Output = Result<SharedConnection>> + Send {
        std::future::ready(self.checkout())
    }

    /// One connection; `in_use` counts the checkouts sharing it.
    fn status(&self) -> Status {
        let checked_out = self.inner.checked_out.load(Ordering::Acquire);
        Status {
            max_size: 1,
            size: 1,
            idle: u32::from(checked_out == 0),
            in_use: u32::try_from(checked_out).unwrap_or(u32::MAX),
            waiting: 0,
        }
    }

    async fn close(&self) {
        let inner = &*self.inner;
        inner.closed.store(true, Ordering::Release);
        loop {
            let returned = inner.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if inner.checked_out.load(Ordering::Acquire) == 0 {
                return;
            }
            returned.await;
        }
    }
}

/// A checkout of a [`SharedRedis`]: derefs to the [`SharedRedisConnection`]. It owns its
/// handle, so it can move into a spawned task.
pub struct SharedConnection {
    connection: SharedRedisConnection,
    inner: Arc<SharedInner>,
}

impl fmt::Debug for SharedConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConnection")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl Deref for SharedConnection {
    type Target = SharedRedisConnection;

    fn deref(&self) -> &SharedRedisConnection {
        &self.connection
    }
}

impl DerefMut for SharedConnection {
    fn deref_mut(&mut self) -> &mut SharedRedisConnection {
        &mut self.connection
    }
}

impl Drop for SharedConnection {
    fn drop(&mut self) {
        if self.inner.checked_out.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.returned.notify_waiters();
        }
    }
}

/// Configures and connects a [`SharedRedis`]; from [`SharedRedis::builder`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct SharedRedisBuilder {
    connector: RedisConnector,
    connect_timeout: Duration,
    metrics: Option<Arc<RedisMetrics>>,
}

impl fmt::Debug for SharedRedisBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRedisBuilder")
            .field("target", &self.connector.target)
            .field("response_timeout", &self.connector.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl SharedRedisBuilder {
    /// Longest one connect attempt may take, the first one and each reconnect. Default 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Reports each command's (or pipeline's) time to its reply, and failed commands by kind
    /// (`timeout`; `io`: the connection failed; `server`: an error reply; `other`), to
    /// `recorder`, labelled `name="<name>"`.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Some(Arc::new(RedisMetrics::new(recorder, name)));
        self
    }

    /// Connects once; the connection then reconnects by itself after failures.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero connect or response timeout; [`Error::Connect`] when the
    /// first connect fails.
    pub async fn build(self) -> Result<SharedRedis> {
        let connector = self.connector;
        if self.connect_timeout.is_zero() {
            return Err(zero_timeout("connect_timeout"));
        }
        let response_timeout = connector.response_timeout.or(Some(SHARED_RESPONSE_TIMEOUT));
        if response_timeout.is_some_and(|timeout| timeout.is_zero()) {
            return Err(zero_timeout("response_timeout"));
        }
        let target: Arc<str> = connector.target.as_str().into();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(response_timeout)
            .set_connection_timeout(Some(self.connect_timeout));
        let manager = ConnectionManager::new_with_config(connector.client, config)
            .await
            .map_err(|error| Error::Connect {
                target: Arc::clone(&target),
                source: Arc::new(Box::new(error)),
            })?;
        Ok(SharedRedis {
            inner: Arc::new(SharedInner {
                connection: SharedRedisConnection {
                    manager,
                    metrics: self.metrics,
                },
                target,
                closed: AtomicBool::new(false),
                checked_out: AtomicUsize::new(0),
                returned: Notify::new(),
            }),
        })
    }
}

fn zero_timeout(setting: &str) -> Error {
    Error::config(
        setting,
        "0s",
        "a zero timeout fails every command; use a positive duration",
    )
}

/// The connection a [`SharedRedis`] checkout derefs to: redis-rs's self-reconnecting
/// `ConnectionManager`, timed when the [`SharedRedis`] has metrics. Use it with
/// `redis::AsyncCommands` or `query_async`; cloning it is cheap and shares the socket.
#[derive(Clone)]
pub struct SharedRedisConnection {
    manager: ConnectionManager,
    metrics: Option<Arc<RedisMetrics>>,
}

impl fmt::Debug for SharedRedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRedisConnection")
            .field("metrics", &self.metrics.is_some())
            .finish_non_exhaustive()
    }
}

impl SharedRedisConnection {
    /// The underlying `ConnectionManager`, for what this wrapper does not pass on (commands
    /// sent through it are not counted).
    pub fn manager(&self) -> &ConnectionManager {
        &self.manager
    }

    /// Times `request` and counts its failure, when metrics are on. An error reply arrives
    /// as a value (redis-rs turns it into an error later, when it converts the reply), so
    /// `refused` tells which replies are one.
    async fn observe<T>(
        metrics: Option<&RedisMetrics>,
        request: impl Future<Output = RedisResult<T>>,
        refused: fn(&T) -> bool,
    ) -> RedisResult<T> {
        let Some(metrics) = metrics else {
            return request.await;
        };
        let started = std::time::Instant::now();
        let result = request.await;
        metrics.command.record_duration(started.elapsed());
        match &result {
            Ok(reply) if refused(reply) => metrics.refused(),
            Ok(_) => {}
            Err(error) => metrics.failed(error),
        }
        result
    }
}

impl ConnectionLike for SharedRedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(Self::observe(
            self.metrics.as_deref(),
            self.manager.req_packed_command(cmd),
            |reply| matches!(reply, Value::ServerError(_)),
        ))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(Self::observe(
            self.metrics.as_deref(),
            self.manager.req_packed_commands(pipeline, offset, count),
            |replies| {
                replies
                    .iter()
                    .any(|reply| matches!(reply, Value::ServerError(_)))
            },
        ))
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}
