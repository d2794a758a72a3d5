//! Connection pools that stay fast and recover by themselves: diesel-async PostgreSQL and
//! SQLite, and Redis, on bb8.
//!
//! A connection per request costs a TCP and TLS handshake and an authentication each time
//! (hundreds of queries per second instead of tens of thousands); a pool that validates every
//! checkout halves throughput; one that never validates hands out dead connections after a
//! database restart. brisk-pool validates only connections that sat idle (500 ms by default),
//! and never hands out one that is already known to be broken.
//!
//! ```
//! # #[cfg(feature = "sqlite")]
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use brisk_pool::{diesel::{SqliteConnector, SqlitePool}};
//! use diesel_async::SimpleAsyncConnection;
//!
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("app.db").display().to_string();
//! let pool = SqlitePool::builder(SqliteConnector::new(path))
//!     .max_size(4)
//!     .acquire_timeout(Duration::from_secs(2))
//!     .build() // opens `min_idle` connections; a wrong URL fails here
//!     .await?;
//! let mut connection = pool.get().await?;
//! connection.batch_execute("CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1)").await?;
//! drop(connection); // back to the pool
//! assert_eq!(pool.status().in_use, 0);
//! pool.close().await;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "sqlite"))]
//! # fn main() {}
//! ```
//!
//! # The parts
//! - [`Connect`]: how to open, validate and judge one kind of connection; [`PgConnector`],
//!   [`SqliteConnector`] and [`RedisConnector`] implement it.
//! - [`Pool`]: `get()` returns a [`PooledConnection`] that derefs to the connection, and
//!   `get_owned()` an [`OwnedPooledConnection`] that can move into `tokio::spawn`;
//!   `status()`; `close()` that drains. Configured by [`PoolBuilder`], a [`Config`], a URL's
//!   `pool_*` parameters or environment variables.
//! - [`ConnectionPool`]: the trait over [`Pool`] and [`SharedRedis`] (one multiplexed Redis
//!   connection, which is usually all Redis needs: see [`redis`]).
//!
//! # Feature flags
//! - `postgres`: [`PgConnector`] / [`PgPool`] for diesel-async's `AsyncPgConnection`.
//! - `sqlite`: [`SqliteConnector`] / [`SqlitePool`] (diesel's `SqliteConnection` on blocking
//!   threads). Enable `libsqlite3-sys/bundled` in your application to build SQLite in.
//! - `postgres-rustls`: PostgreSQL over TLS with rustls (ring), `PgConnector::rustls` and
//!   `diesel::tls_config` (a client configuration from a PEM CA bundle).
//! - `redis`: [`RedisConnector`] / [`RedisPool`] and [`SharedRedis`].
//!
//! # Guarantees
//! - A checkout waits at most the acquire timeout, and the timeout error carries the most
//!   recent connect error if one failed during its wait (or connects are failing now).
//! - Checkouts that wait are served in the order they began waiting, even while the callers
//!   just served ask again at once.
//! - A dropped `get()` future never loses a connection or a slot.
//! - A connection returned broken (socket closed, transaction open or failed, returned during
//!   a panic) is closed, never reused; one idle past the validation window is validated
//!   before use; one past its jittered lifetime is replaced.
//! - A Redis connection whose command was dropped before its reply, or that holds
//!   per-connection state (`MULTI`, `WATCH`, a `SELECT` of another database), is closed on
//!   return, never handed to the next checkout (see `redis::RedisConnection`).
//! - Failed connects are retried with jittered exponential backoff, and while checkouts wait
//!   on a failing server the pool keeps probing, one connect at a time at most a retry
//!   backoff apart: callers already waiting when the server comes back get a connection
//!   (the longest-waiting first) instead of timing out.
//!
//! # Metrics
//! [`PoolBuilder::metrics`] reports to any [`brisk_metrics::Recorder`], labelled `name=<name>`:
//! `brisk_pool_acquire_seconds` (histogram), `brisk_pool_acquire_timeouts_total`,
//! `brisk_pool_connects_total`, `brisk_pool_connect_failures_total`,
//! `brisk_pool_closes_total{reason=broken|invalid|lifetime|idle}`, `brisk_pool_leaks_total`,
//! and the gauges `brisk_pool_connections{state=in_use|idle}` and `brisk_pool_waiting`; with a
//! circuit breaker ([`PoolBuilder::circuit_breaker`]), `brisk_pool_circuit_state`,
//! `brisk_pool_circuit_opened_total` and `brisk_pool_rejected_total`.
//!
#![cfg_attr(
    feature = "postgres",
    doc = "[`PgConnector`]: crate::diesel::PgConnector\n[`PgPool`]: crate::diesel::PgPool"
)]
#![cfg_attr(
    not(feature = "postgres"),
    doc = "[`PgConnector`]: #feature-flags \"needs the postgres feature\"\n[`PgPool`]: #feature-flags \"needs the postgres feature\""
)]
#![cfg_attr(
    feature = "sqlite",
    doc = "[`SqliteConnector`]: crate::diesel::SqliteConnector\n[`SqlitePool`]: crate::diesel::SqlitePool"
)]
#![cfg_attr(
    not(feature = "sqlite"),
    doc = "[`SqliteConnector`]: #feature-flags \"needs the sqlite feature\"\n[`SqlitePool`]: #feature-flags \"needs the sqlite feature\""
)]
#![cfg_attr(
    feature = "redis",
    doc = "[`RedisConnector`]: crate::redis::RedisConnector\n[`RedisPool`]: crate::redis::RedisPool\n[`SharedRedis`]: crate::redis::SharedRedis\n[`redis`]: crate::redis"
)]
#![cfg_attr(
    not(feature = "redis"),
    doc = "[`RedisConnector`]: #feature-flags \"needs the redis feature\"\n[`RedisPool`]: #feature-flags \"needs the redis feature\"\n[`SharedRedis`]: #feature-flags \"needs the redis feature\"\n[`redis`]: #feature-flags \"needs the redis feature\""
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

mod breaker;
mod config;
mod connect;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "postgres", feature = "sqlite"))))]
pub mod diesel;
mod error;
#[cfg(feature = "postgres")]
mod explain;
mod leak;
mod manager;
mod metrics;
mod pool;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod query;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod statement;
mod target;

pub use crate::{
    config::{CircuitBreaker, Config, Order, Validation},
    connect::{Connect, HookFuture},
    error::{BoxError, ConnectPanicked, ConnectTimedOut, Error, Result},
    leak::SuspectedLeak,
    metrics::METRICS,
    pool::{ConnectionPool, OwnedPooledConnection, Pool, PoolBuilder, PooledConnection, Status},
    statement::statement_label,
};
