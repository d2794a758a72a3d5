//! Where the catalog lives, SQLite or PostgreSQL, and how each variant reaches it: the naive
//! one with a new connection per request, the brisk one through a brisk-pool pool. Every
//! connection counts its statements.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use brisk_metrics::Registry;
use brisk_pool::{
    PooledConnection,
    diesel::{PgConnector, PgPool, QueryTracking, SqliteConnector, SqlitePool},
};
use diesel_async::{AsyncConnection, SimpleAsyncConnection};

use crate::{
    db::{CONNECTIONS, Counted, PRAGMAS},
    model::{Db, PgConnection, SqliteConnection},
    server::Failure,
};

/// The database a variant serves from: a SQLite file, or a PostgreSQL URL.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Sqlite(Arc<str>),
    Pg(Arc<str>),
}

impl Target {
    /// Parses what the parent passes a variant: `sqlite:<path>` or a `postgres://` URL.
    pub(crate) fn parse(text: &str) -> Result<Target, String> {
        if let Some(path) = text.strip_prefix("sqlite:") {
            Ok(Target::Sqlite(path.into()))
        } else if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(Target::Pg(text.into()))
        } else {
            // Not echoed: a URL may carry a password.
            Err("expected sqlite:<path> or a postgres:// URL".to_owned())
        }
    }

    /// How [`parse`](Self::parse) reads it back.
    pub(crate) fn spec(&self) -> String {
        match self {
            Target::Sqlite(path) => format!("sqlite:{path}"),
            Target::Pg(url) => url.to_string(),
        }
    }

    /// A new connection, as a handler that opens its own would get it.
    pub(crate) async fn connect(&self) -> Result<Owned, Failure> {
        let owned = match self {
            Target::Sqlite(path) => {
                let mut connection = SqliteConnection::establish(path).await?;
                connection.set_instrumentation(Counted);
                connection.batch_execute(PRAGMAS).await?;
                Owned::Sqlite(connection)
            }
            Target::Pg(url) => {
                let mut connection = PgConnection::establish(url).await?;
                connection.set_instrumentation(Counted);
                Owned::Pg(connection)
            }
        };
        CONNECTIONS.fetch_add(1, Ordering::Relaxed);
        Ok(owned)
    }

    /// A pool of `size` connections, reporting to `registry`.
    pub(crate) async fn pool(&self, size: u32, registry: &Registry) -> Result<Pool, String> {
        let error = |error: brisk_pool::Error| error.to_string();
        // Each statement timed by its shape, around the demo's own query count.
        let tracking = QueryTracking::builder()
            .metrics(registry, "catalog")
            .slow_threshold(Duration::from_millis(250))
            .build()
            .map_err(error)?;
        Ok(match self {
            Target::Sqlite(path) => Pool::Sqlite(
                SqlitePool::builder(SqliteConnector::new(path.to_string()))
                    .max_size(size)
                    .on_connect(move |connection| {
                        connection.set_instrumentation(tracking.instrumentation_around(Counted));
                        Box::pin(async move {
                            CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                            connection
                                .batch_execute(
                                    "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 30000",
                                )
                                .await?;
                            Ok(())
                        })
                    })
                    .metrics(registry, "catalog")
                    .build()
                    .await
                    .map_err(error)?,
            ),
            Target::Pg(url) => Pool::Pg(
                PgPool::builder(PgConnector::new(url))
                    .max_size(size)
                    // A database known to be down answers at once (503) instead of holding
                    // every request for the acquire timeout; a probe every 50 ms finds it back.
                    .circuit_breaker(3, Duration::from_millis(50))
                    .on_connect(move |connection| {
                        connection.set_instrumentation(tracking.instrumentation_around(Counted));
                        Box::pin(async move {
                            CONNECTIONS.fetch_add(1, Ordering::Relaxed);
                            Ok(())
                        })
                    })
                    .metrics(registry, "catalog")
                    .build()
                    .await
                    .map_err(error)?,
            ),
        })
    }
}

/// A connection of the naive variant's own.
#[allow(
    clippy::large_enum_variant,
    reason = "one per request, held on the stack; boxing would add an allocation to each"
)]
pub(crate) enum Owned {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

impl Owned {
    pub(crate) fn db(&mut self) -> Db<'_> {
        match self {
            Owned::Sqlite(connection) => Db::Sqlite(connection),
            Owned::Pg(connection) => Db::Pg(connection),
        }
    }
}

/// The brisk variant's pool.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Pg(PgPool),
}

impl Pool {
    pub(crate) async fn get(&self) -> Result<Pooled<'_>, brisk_pool::Error> {
        Ok(match self {
            Pool::Sqlite(pool) => Pooled::Sqlite(pool.get().await?),
            Pool::Pg(pool) => Pooled::Pg(pool.get().await?),
        })
    }
}

/// A connection checked out of the brisk variant's pool.
#[allow(
    clippy::large_enum_variant,
    reason = "one per checkout, held on the stack; boxing would add an allocation to each"
)]
pub(crate) enum Pooled<'a> {
    Sqlite(PooledConnection<'a, SqliteConnector>),
    Pg(PooledConnection<'a, PgConnector>),
}

impl Pooled<'_> {
    pub(crate) fn db(&mut self) -> Db<'_> {
        match self {
            Pooled::Sqlite(connection) => Db::Sqlite(connection),
            Pooled::Pg(connection) => Db::Pg(connection),
        }
    }
}
