//! diesel-async connections: PostgreSQL ([`PgConnector`]) and SQLite ([`SqliteConnector`]).

use std::fmt;

use diesel_async::{SimpleAsyncConnection, pooled_connection::PoolableConnection};

pub use crate::query::{QueryTracking, QueryTrackingBuilder};
use crate::{connect::Connect, error::BoxError, pool::Pool};

/// Connects diesel-async's `AsyncPgConnection`s, without TLS or, with feature
/// `postgres-rustls`, over rustls ([`rustls`](Self::rustls)).
///
/// It connects through tokio-postgres itself and hands the connection to diesel-async, so
/// that a failed connect keeps its cause (`Connection refused`, `password authentication
/// failed`), which `AsyncPgConnection::establish` reduces to "error connecting to server".
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PgConnector {
    /// The connection string as tokio-postgres parsed it, and what is shown of it.
    pg: crate::target::PgTarget,
    tracking: Option<QueryTracking>,
    explainer: Option<std::sync::Arc<crate::explain::Explainer>>,
    tls: Tls,
}

/// How a [`PgConnector`] (and its slow-query explainer) reaches PostgreSQL: plain, or over
/// rustls. The two ways to connect are here, side by side.
#[cfg(feature = "postgres")]
#[derive(Clone, Default)]
pub(crate) enum Tls {
    #[default]
    None,
    #[cfg(feature = "postgres-rustls")]
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

#[cfg(feature = "postgres")]
impl Tls {
    /// A diesel connection to `url`, driven by diesel-async (which keeps the connection's
    /// errors, so a broken socket is seen).
    async fn diesel(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<diesel_async::AsyncPgConnection, BoxError> {
        use diesel_async::AsyncPgConnection;
        Ok(match self {
            Tls::None => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await?
            }
            #[cfg(feature = "postgres-rustls")]
            Tls::Rustls(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await?
            }
        })
    }

    /// A plain tokio-postgres client with `config`, its connection driven by a task.
    pub(crate) async fn client(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        Ok(match self {
            Tls::None => {
                let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(connection);
                client
            }
            #[cfg(feature = "postgres-rustls")]
            Tls::Rustls(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                tokio::spawn(connection);
                client
            }
        })
    }
}

/// The connect error of a [`PgConnector`] whose string tokio-postgres could not parse; the
/// parser's own message is not kept, as it may quote part of the password.
#[cfg(feature = "postgres")]
const UNPARSEABLE_ERROR: &str = "the connection string could not be parsed as a postgres:// URL \
     or key=value string (it is not shown, as it may hold a password)";

#[cfg(feature = "postgres")]
impl PgConnector {
    /// Connects to a `postgres://` URL or a `key=value` connection string
    /// (`host=db user=app password='s3 cret'`), as tokio-postgres parses them. Strip any
    /// `pool_*` parameters first with [`Config::apply_url`](crate::Config::apply_url).
    ///
    /// Errors, `Debug` and logs show the parsed string rebuilt without its password and
    /// parameters (`postgres://app@db:5432/orders`). A string tokio-postgres cannot parse, a
    /// URL with more than one `@` or whose first `@` comes after a `?` (an unencoded `@` in a
    /// password or query value: percent-encode it as `%40`), or a string whose user or host
    /// holds characters outside a safe set, is shown as `<unparseable connection string>`,
    /// with no part of it; an unparseable one fails every connect with an error that says so.
    pub fn new(url: impl AsRef<str>) -> Self {
        Self {
            pg: crate::target::PgTarget::parse(url.as_ref()),
            tracking: None,
            explainer: None,
            tls: Tls::default(),
        }
    }

    /// Connects over TLS with rustls and `config` (its root certificates decide which servers
    /// are trusted; [`tls_config`] builds one from a PEM CA bundle). Feature `postgres-rustls`.
    ///
    /// A caller who configures TLS gets it: unless the connection string sets `sslmode`
    /// itself, it becomes `require`, so a server (or an attacker in the path) that answers the
    /// TLS request with "no" fails the connect with tokio-postgres's "server does not support
    /// TLS" error instead of going on in plain text. rustls always checks the server's
    /// certificate against `config`'s roots and the host name (libpq's `verify-full`), in
    /// every mode that uses TLS. An explicit `sslmode` in the string keeps its meaning:
    /// `prefer` falls back to plain text when the server has no TLS, `disable` never uses TLS.
    ///
    /// Unix sockets: PostgreSQL refuses TLS on a socket (and libpq ignores `sslmode` there),
    /// so a string whose hosts are all sockets keeps tokio-postgres's `prefer` and connects
    /// in plain text. A list mixing sockets and TCP hosts (`host=/var/run/postgresql,db2`)
    /// gets `require`, so the TCP hosts are never downgraded: its socket hosts then fail
    /// their TLS request and the connect goes on to the next host. To reach a socket host of
    /// such a list, set `sslmode=prefer` in the string (which lets the TCP hosts fall back
    /// to plain text too).
    #[cfg(feature = "postgres-rustls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "postgres-rustls")))]
    #[must_use]
    pub fn rustls(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(config));
        if !self.pg.sslmode_explicit
            && let Some(config) = &mut self.pg.config
            && !only_unix_sockets(config)
        {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        if self.explainer.is_some() {
            self.explainer = self.new_explainer();
        }
        self
    }

    /// A slow-query explainer on the same settings and TLS, if the string parsed.
    fn new_explainer(&self) -> Option<std::sync::Arc<crate::explain::Explainer>> {
        let config = self.pg.config.clone()?;
        Some(std::sync::Arc::new(crate::explain::Explainer::new(
            config,
            self.tls.clone(),
        )))
    }

    /// Times every statement each new connection runs ([`QueryTracking`]); with
    /// [`explain_slow_queries`](crate::diesel::QueryTrackingBuilder::explain_slow_queries),
    /// slow statements are explained on a connection of their own to the same URL.
    #[must_use]
    pub fn track_queries(mut self, tracking: QueryTracking) -> Self {
        self.explainer = if tracking.explains() {
            self.new_explainer()
        } else {
            None
        };
        self.tracking = Some(tracking);
        self
    }
}

/// Whether every host of `config` is a Unix socket (there is at least one, and no TCP host or
/// `hostaddr`).
#[cfg(feature = "postgres-rustls")]
fn only_unix_sockets(config: &tokio_postgres::Config) -> bool {
    #[cfg(unix)]
    {
        let hosts = config.get_hosts();
        !hosts.is_empty()
            && config.get_hostaddrs().is_empty()
            && hosts
                .iter()
                .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)))
    }
    #[cfg(not(unix))]
    {
        let _ = config;
        false
    }
}

#[cfg(feature = "postgres")]
impl fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnector")
            .field("target", &self.pg.shown)
            .finish_non_exhaustive()
    }
}

#[cfg(feature = "postgres")]
impl Connect for PgConnector {
    type Connection = diesel_async::AsyncPgConnection;
    type Error = BoxError;

    async fn connect(&self) -> Result<Self::Connection, BoxError> {
        let Some(config) = &self.pg.config else {
            return Err(UNPARSEABLE_ERROR.into());
        };
        let mut connection = self.tls.diesel(config).await?;
        if let Some(tracking) = &self.tracking {
            diesel_async::AsyncConnection::set_instrumentation(
                &mut connection,
                tracking.instrumentation(self.explainer.clone()),
            );
        }
        Ok(connection)
    }

    async fn validate(&self, connection: &mut Self::Connection) -> Result<(), BoxError> {
        Ok(connection.batch_execute("SELECT 1").await?)
    }

    fn is_broken(&self, connection: &mut Self::Connection) -> bool {
        PoolableConnection::is_broken(connection)
    }

    fn target(&self) -> String {
        self.pg.shown.clone()
    }
}

#[cfg(feature = "postgres")]
impl Pool<PgConnector> {
    /// Builds a pool from a URL whose `pool_*` parameters configure the pool
    /// ([`Config::apply_url`](crate::Config::apply_url)); the rest goes to the driver.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`](crate::PoolBuilder::build), and [`Error::Config`](crate::Error::Config)
    /// for an invalid `pool_*` parameter.
    pub async fn from_url(url: &str) -> crate::Result<Self> {
        from_url(url, PgConnector::new).await
    }
}

/// A rustls client configuration that trusts the certificates in `ca_pem` (one or more PEM
/// `CERTIFICATE` blocks, such as a cloud provider's CA bundle), for [`PgConnector::rustls`].
/// It uses the ring provider and rustls' safe default protocol versions.
///
/// # Errors
/// [`Error::Config`](crate::Error::Config) (setting `ca_pem`) when the PEM holds no
/// certificate or one rustls refuses.
#[cfg(feature = "postgres-rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres-rustls")))]
pub fn tls_config(ca_pem: &[u8]) -> crate::Result<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let invalid =
        |reason| crate::Error::config("ca_pem", format!("{} bytes", ca_pem.len()), reason);
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        let certificate = certificate.map_err(|_| invalid("PEM CERTIFICATE blocks"))?;
        roots
            .add(certificate)
            .map_err(|_| invalid("certificates rustls accepts as roots"))?;
    }
    if roots.is_empty() {
        return Err(invalid("at least one PEM CERTIFICATE block"));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| invalid("a provider that supports TLS 1.2 or 1.3"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A pool of diesel-async PostgreSQL connections.
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub type PgPool = Pool<PgConnector>;

/// The SQLite connection diesel-async pools: diesel's `SqliteConnection` run on tokio's
/// blocking threads.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub type AsyncSqliteConnection =
    diesel_async::sync_connection_wrapper::SyncConnectionWrapper<diesel::SqliteConnection>;

/// Connects [`AsyncSqliteConnection`]s to a file path (or `:memory:`), set up for a pool of
/// concurrent users, as sqlx does by default:
/// - `PRAGMA busy_timeout = 5000`: a writer waits up to 5 s for another's lock instead of
///   failing at once with "database is locked";
/// - `PRAGMA journal_mode = WAL` (files only): readers do not block the writer. The mode is
///   stored in the file, so it is switched once per connector, by one connection at a time:
///   two connections switching at once get "database is locked" without waiting;
/// - `PRAGMA foreign_keys = ON`.
///
/// Add to or override these with a connect hook ([`PoolBuilder::on_connect`](crate::PoolBuilder::on_connect)).
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteConnector {
    path: String,
    tracking: Option<QueryTracking>,
    /// Whether this connector has put the file in WAL mode; held while one connection does.
    wal: tokio::sync::Mutex<bool>,
}

#[cfg(feature = "sqlite")]
impl SqliteConnector {
    /// Opens the database at `path` (created if missing), or an in-memory one for `:memory:`
    /// (one per connection).
    pub fn new(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            tracking: None,
            wal: tokio::sync::Mutex::new(false),
        }
    }

    /// Times every statement each new connection runs ([`QueryTracking`]).
    #[must_use]
    pub fn track_queries(mut self, tracking: QueryTracking) -> Self {
        self.tracking = Some(tracking);
        self
    }
}

#[cfg(feature = "sqlite")]
impl fmt::Debug for SqliteConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConnector")
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(feature = "sqlite")]
impl Connect for SqliteConnector {
    type Connection = AsyncSqliteConnection;
    type Error = BoxError;

    async fn connect(&self) -> Result<AsyncSqliteConnection, BoxError> {
        use diesel_async::AsyncConnection;
        let mut connection = AsyncSqliteConnection::establish(&self.path).await?;
        connection
            .batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
            .await?;
        if self.path != ":memory:" && !self.path.contains("mode=memory") {
            let mut wal = self.wal.lock().await;
            if !*wal {
                connection
                    .batch_execute("PRAGMA journal_mode = WAL;")
                    .await?;
                *wal = true;
            }
        }
        if let Some(tracking) = &self.tracking {
            connection.set_instrumentation(tracking.instrumentation(None));
        }
        Ok(connection)
    }

    async fn validate(&self, connection: &mut AsyncSqliteConnection) -> Result<(), BoxError> {
        Ok(connection.batch_execute("SELECT 1").await?)
    }

    fn is_broken(&self, connection: &mut AsyncSqliteConnection) -> bool {
        PoolableConnection::is_broken(connection)
    }

    fn target(&self) -> String {
        self.path.clone()
    }
}

#[cfg(feature = "sqlite")]
impl Pool<SqliteConnector> {
    /// Builds a pool from a path whose `pool_*` parameters configure the pool
    /// (`app.db?pool_max_size=4`, see [`Config::apply_url`](crate::Config::apply_url)).
    ///
    /// # Errors
    /// As [`PoolBuilder::build`](crate::PoolBuilder::build), and [`Error::Config`](crate::Error::Config)
    /// for an invalid `pool_*` parameter.
    pub async fn from_url(url: &str) -> crate::Result<Self> {
        from_url(url, SqliteConnector::new).await
    }
}

/// A pool of diesel-async SQLite connections.
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub type SqlitePool = Pool<SqliteConnector>;

/// A pool configured by the URL's `pool_*` parameters, connecting with the rest of it.
async fn from_url<C: Connect>(
    url: &str,
    connector: impl FnOnce(String) -> C,
) -> crate::Result<Pool<C>> {
    let mut config = crate::Config::default();
    let url = config.apply_url(url)?;
    Pool::builder(connector(url)).config(config).build().await
}
