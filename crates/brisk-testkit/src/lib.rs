//! Throw-away `redis-server` and PostgreSQL instances for tests that talk to real servers.
//!
//! Each server runs on a free 127.0.0.1 port in its own temp dir, never touching the machine's
//! system services, and is killed with its directory removed when dropped. `kill()` and
//! `restart()` simulate a crash and a recovery on the same port, for fault tests.
//! [`RedisCluster`] joins three of them into a Redis Cluster.
//!
//! ```no_run
//! use brisk_testkit::{PostgresServer, RedisServer};
//!
//! # fn main() -> Result<(), brisk_testkit::Error> {
//! let mut redis = RedisServer::start()?;
//! let mut pg = PostgresServer::start()?;
//! let db_url = pg.create_database("orders")?;
//!
//! redis.kill(); // clients now see refused connections
//! redis.restart()?; // same port, empty data set
//! # let _ = db_url;
//! # Ok(())
//! # }
//! ```
//!
//! # Requirements
//! `redis-server` on `PATH` (or in `/usr/sbin`), and PostgreSQL's `initdb` and `postgres` on
//! `PATH` or in `/usr/lib/postgresql/<version>/bin`. A missing binary is an
//! [`Error::BinaryNotFound`] naming the package to install; `cargo xtask test` installs both on
//! Debian/Ubuntu when run as root. As root, PostgreSQL runs as the `postgres` system user.
//!
//! # Guarantees
//! - Start-up waits until the server answers (Redis `PING`, a PostgreSQL session), bounded by a
//!   start timeout; a failed start returns the tail of the server log in the error and prints it.
//! - Killing SIGKILLs the server and every process it started and waits until none is alive.
//! - The API is blocking: call it outside async code or accept a short block of the runtime.

mod cluster;
mod error;
mod logs;
mod pgwire;
mod postgres;
pub(crate) mod process;
mod promtool;
mod proxy;
mod redis;

pub use crate::{
    cluster::RedisCluster,
    error::{Error, Result},
    logs::LogCapture,
    postgres::{PostgresBuilder, PostgresServer, postgres_bin_dir},
    process::find_binary,
    promtool::promtool_check_metrics,
    proxy::Proxy,
    redis::{RedisBuilder, RedisServer, redis_server_binary},
};

/// `pid` and every live process it started (PostgreSQL's backends, say), for tests that check
/// nothing is left running: collect it while the server runs, check [`is_alive`] after.
pub fn process_tree(pid: u32) -> Vec<u32> {
    process::process_tree(pid)
}

/// Whether process `pid` is running (an exited, unreaped zombie is not).
pub fn is_alive(pid: u32) -> bool {
    process::is_alive(pid)
}

/// `error` and its sources, `outer: inner: innermost`, as anyhow's `{:#}` prints them: what a
/// user reads in a log, for tests that check the cause is reported (once).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod chain_tests {
    #[test]
    fn an_error_chain_names_each_cause_once() {
        let error = crate::Error::Io {
            action: "creating temp dir".to_owned(),
            source: std::io::Error::other("disk full"),
        };
        assert_eq!(error.to_string(), "creating temp dir failed");
        assert_eq!(
            super::error_chain(&error),
            "creating temp dir failed: disk full"
        );
    }
}
