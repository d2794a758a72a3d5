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

use redis::{
    Arg, AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, MultiplexedConnection},
};
use tokio::sync::Notify;

use crate::{
    connect::{Connect, redact},
    error::{Error, Result},
    pool::{ConnectionPool, Pool, Status},
};

/// A pool of dedicated Redis connections, for blocking commands and transactions.
pub type RedisPool = Pool<RedisConnector>;

/// Opens dedicated Redis connections for a [`RedisPool`].
#[derive(Debug, Clone)]
pub struct RedisConnector {
    client: Client,
    target: String,
    response_timeout: Option<Duration>,
}

impl RedisConnector {
    /// Connects to a `redis://` or `rediss://` URL.
    ///
    /// # Errors
    /// [`Error::Config`] when the URL is not a Redis URL.
    pub fn new(url: &str) -> Result<Self> {
        let client = Client::open(url).map_err(|_| Error::Config {
            setting: "url".to_owned(),
            value: redact(url),
            reason: "expected redis://[user:password@]host[:port][/db]",
        })?;
        Ok(Self::from_client(client))
    }

    /// Connects with an existing client.
    pub fn from_client(client: Client) -> Self {
        let info = client.get_connection_info();
        let target = format!("redis://{}/{}", info.addr(), info.redis_settings().db());
        Self {
            client,
            target,
            response_timeout: None,
        }
    }

    /// How long a command waits for its reply before it fails (and its connection is then
    /// closed). Default none, so that blocking commands can block; redis-rs's own default
    /// for shared connections is 500 ms.
    pub fn response_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.response_timeout = timeout;
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
            .set_response_timeout(self.response_timeout);
        let inner = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok(RedisConnection {
            inner,
            broken: false,
            in_transaction: false,
        })
    }

    async fn validate(&self, connection: &mut RedisConnection) -> RedisResult<()> {
        redis::cmd("PING").query_async::<()>(connection).await
    }

    fn is_broken(&self, connection: &mut RedisConnection) -> bool {
        connection.broken || connection.in_transaction
    }

    fn target(&self) -> String {
        self.target.clone()
    }
}

/// A dedicated Redis connection from a [`RedisPool`]; use it with `redis::AsyncCommands` or
/// `query_async` like any redis-rs connection.
///
/// It watches its own replies: after an I/O error, a dropped connection or a timeout, or
/// while a `MULTI` has not been closed by `EXEC` or `DISCARD`, the pool closes it on return
/// instead of handing it to the next task.
pub struct RedisConnection {
    inner: MultiplexedConnection,
    broken: bool,
    in_transaction: bool,
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("broken", &self.broken)
            .field("in_transaction", &self.in_transaction)
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

    /// Follows `MULTI` / `EXEC` / `DISCARD` sent as single commands.
    fn track_transaction(&mut self, cmd: &Cmd) {
        if let Some(Arg::Simple(name)) = cmd.args_iter().next() {
            if name.eq_ignore_ascii_case(b"MULTI") {
                self.in_transaction = true;
            } else if name.eq_ignore_ascii_case(b"EXEC") || name.eq_ignore_ascii_case(b"DISCARD") {
                self.in_transaction = false;
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.track_transaction(cmd);
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            self.observe(&result);
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
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.observe(&result);
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
#[derive(Clone)]
pub struct SharedRedis {
    inner: Arc<SharedInner>,
}

struct SharedInner {
    connection: ConnectionManager,
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
    /// Connects once; the connection then reconnects by itself after failures.
    ///
    /// # Errors
    /// [`Error::Connect`] when the first connect fails.
    pub async fn connect(connector: &RedisConnector) -> Result<Self> {
        let target: Arc<str> = connector.target.as_str().into();
        let connection = ConnectionManager::new(connector.client.clone())
            .await
            .map_err(|error| Error::Connect {
                target: Arc::clone(&target),
                source: Arc::new(Box::new(error)),
            })?;
        Ok(Self {
            inner: Arc::new(SharedInner {
                connection,
                target,
                closed: AtomicBool::new(false),
                checked_out: AtomicUsize::new(0),
                returned: Notify::new(),
            }),
        })
    }

    /// A handle to the shared connection, without waiting.
    ///
    /// # Errors
    /// [`Error::Closed`] after [`ConnectionPool::close`].
    pub fn checkout(&self) -> Result<SharedConnection<'_>> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                target: Arc::clone(&inner.target),
            });
        }
        inner.checked_out.fetch_add(1, Ordering::AcqRel);
        Ok(SharedConnection {
            connection: inner.connection.clone(),
            inner,
        })
    }
}

impl ConnectionPool for SharedRedis {
    type Connection = ConnectionManager;
    type Guard<'a> = SharedConnection<'a>;

    fn get(&self) -> impl Future<Output = Result<SharedConnection<'_>>> + Send {
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

/// A checkout of a [`SharedRedis`]: derefs to the shared `ConnectionManager`.
pub struct SharedConnection<'a> {
    connection: ConnectionManager,
    inner: &'a SharedInner,
}

impl fmt::Debug for SharedConnection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedConnection")
            .field("target", &self.inner.target)
            .finish_non_exhaustive()
    }
}

impl Deref for SharedConnection<'_> {
    type Target = ConnectionManager;

    fn deref(&self) -> &ConnectionManager {
        &self.connection
    }
}

impl DerefMut for SharedConnection<'_> {
    fn deref_mut(&mut self) -> &mut ConnectionManager {
        &mut self.connection
    }
}

impl Drop for SharedConnection<'_> {
    fn drop(&mut self) {
        if self.inner.checked_out.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.returned.notify_waiters();
        }
    }
}
