use std::{fmt, future::Future, pin::Pin};

use crate::error::BoxError;

/// How to open, check and judge one kind of connection: the one trait a new connection kind
/// implements. brisk-pool ships `PgConnector`,
/// `SqliteConnector` and `RedisConnector`.
///
/// # Contract
/// - [`connect`](Connect::connect) may be slow and may fail; the pool bounds it with its connect
///   timeout, retries it with backoff, and reports the last failure in acquire timeouts.
/// - [`validate`](Connect::validate) does one round trip. It runs only as the pool's
///   [`Validation`](crate::Validation) policy says, bounded by the connect timeout; if the
///   checkout is cancelled while it runs, the connection is closed, not reused.
/// - [`is_broken`](Connect::is_broken) must not do I/O: it runs on every checkout and return.
pub trait Connect: Send + Sync + 'static {
    /// The connection type.
    type Connection: Send + 'static;
    /// What connecting or validating fails with: any error type, or a [`BoxError`].
    type Error: Into<BoxError> + Send + 'static;

    /// Opens one connection.
    fn connect(&self) -> impl Future<Output = Result<Self::Connection, Self::Error>> + Send;

    /// Checks with one round trip that the connection still works.
    fn validate(
        &self,
        connection: &mut Self::Connection,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether the connection must not be reused, judged without I/O: its socket closed, a
    /// transaction left open or failed, a protocol error seen.
    fn is_broken(&self, connection: &mut Self::Connection) -> bool;

    /// Runs once on each new connection, after [`connect`](Connect::connect) and the pool's
    /// connect hook, before its first checkout: the state the connection is in now is the
    /// clean state every checkout must find. A connector that follows per-connection state
    /// (`RedisConnector`: the selected database) records it here. Must not do I/O.
    /// Default: nothing.
    fn ready(&self, connection: &mut Self::Connection) {
        let _ = connection;
    }

    /// What this connects to, for errors and logs: a URL without its password, a file name.
    fn target(&self) -> String;
}

/// The future a connect hook returns.
pub type HookFuture<'c> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'c>>;

/// Runs on every new connection before the pool uses it, e.g. to
/// `SET statement_timeout = '5s'` or select a Redis database. An error fails that connect
/// attempt like a connect error.
pub(crate) type Hook<C> = Box<dyn for<'c> Fn(&'c mut C) -> HookFuture<'c> + Send + Sync>;

/// Shows a hook in `Debug` output without its closure.
pub(crate) struct HookDebug<'a, C>(pub(crate) &'a Option<Hook<C>>);

impl<C> fmt::Debug for HookDebug<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}
