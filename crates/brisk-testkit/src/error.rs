use std::{io, path::PathBuf, process::ExitStatus, time::Duration};

/// Everything that can go wrong while starting, stopping or talking to a throw-away server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A server binary is not installed where the testkit looks for it.
    #[error(
        "`{binary}` not found (looked in {searched}); install it, e.g. `apt-get install {package}` on Debian/Ubuntu"
    )]
    BinaryNotFound {
        /// The program that was looked for, such as `redis-server` or `initdb`.
        binary: &'static str,
        /// The Debian/Ubuntu package that provides it.
        package: &'static str,
        /// Where the testkit looked, for the message.
        searched: String,
    },
    /// An operating-system call failed.
    #[error("{action} failed")]
    Io {
        /// What the testkit was doing, such as "creating temp dir".
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A set-up program (such as `initdb`) exited unsuccessfully.
    #[error("`{program}` failed ({status}):\n{output}")]
    Setup {
        /// The program that failed.
        program: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed.
        output: String,
    },
    /// The server process exited while it was starting.
    #[error("{server} on 127.0.0.1:{port} exited during start-up ({status}); its log:\n{log}")]
    Exited {
        /// `redis-server` or `postgres`.
        server: &'static str,
        /// The port it was asked to listen on.
        port: u16,
        /// Its exit status.
        status: ExitStatus,
        /// The tail of its log.
        log: String,
    },
    /// The server did not accept connections within the start timeout.
    #[error(
        "{server} on 127.0.0.1:{port} did not accept connections within {timeout:?} (last attempt: {last_error}); its log:\n{log}"
    )]
    NotReady {
        /// `redis-server` or `postgres`.
        server: &'static str,
        /// The port it was asked to listen on.
        port: u16,
        /// The start timeout that ran out.
        timeout: Duration,
        /// Why the last readiness probe failed.
        last_error: String,
        /// The tail of its log.
        log: String,
    },
    /// A Redis Cluster command was refused, or the cluster did not come up.
    #[error("redis cluster: {message}")]
    Cluster {
        /// What went wrong.
        message: String,
    },
    /// PostgreSQL will not run as root and there is no `postgres` user to run it as.
    #[error(
        "running as root, and PostgreSQL refuses to run as root: create a `postgres` system user (the `postgresql` package does)"
    )]
    NoPostgresUser,
    /// Generating the TLS certificates of a server failed.
    #[error("generating a TLS certificate: {0}")]
    Certificate(String),
    /// A database name that is not a plain lower-case identifier.
    #[error(
        "invalid database name {0:?}: use 1 to 63 characters from a-z, 0-9 and _, not starting with a digit"
    )]
    InvalidDatabaseName(String),
    /// PostgreSQL answered a statement with an error.
    #[error("PostgreSQL on port {port} rejected `{sql}`: {message}")]
    Query {
        /// The server's port.
        port: u16,
        /// The statement that failed.
        sql: String,
        /// The server's message with its SQLSTATE code.
        message: String,
    },
    /// The operation needs a running server, and it was killed.
    #[error("{server} on 127.0.0.1:{port} is not running; call restart() first")]
    NotRunning {
        /// `redis-server` or `postgres`.
        server: &'static str,
        /// Its port.
        port: u16,
    },
}

/// `Result` with the testkit's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(action: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let action = action.into();
    move |source| Error::Io { action, source }
}
