//! What both variants' servers share: errors as responses, query parameters, the counters
//! the load generator reads back, and serving on a loopback port.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::{
    Json, Router,
    http::{
        HeaderValue, StatusCode,
        header::{CACHE_CONTROL, LINK, RETRY_AFTER},
    },
    response::{IntoResponse, Response},
};
use brisk_metrics::Registry;
use serde::{Deserialize, Serialize};

use crate::db::{CONNECTIONS, QUERIES};

/// Why a request failed, answered with one shape: a status and a short plain-text reason.
/// What the database could not take right now (no connection, a write it refused) is a 503
/// with `Retry-After` (the client may try again: nothing was written); a bug or an unexpected
/// database answer to a read is a 500; a bad request a 4xx.
#[derive(Debug)]
pub(crate) enum Failure {
    Database(diesel::result::Error),
    /// The database could not take a write: the reason the client reads (the cause is
    /// logged).
    Unavailable(&'static str),
    Connect(diesel::ConnectionError),
    Pool(String),
    Cache(String),
    /// A statement returned no row where one was expected.
    Missing,
    /// A listing cursor refused (400) or a page that could not be built (500).
    Stream(brisk_stream::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Database(error) => error.fmt(f),
            Failure::Connect(error) => error.fmt(f),
            Failure::Pool(error) | Failure::Cache(error) => f.write_str(error),
            Failure::Unavailable(reason) => f.write_str(reason),
            Failure::Missing => f.write_str("the database returned no row"),
            Failure::Stream(error) => error.fmt(f),
        }
    }
}

impl From<brisk_stream::Error> for Failure {
    fn from(error: brisk_stream::Error) -> Self {
        Failure::Stream(error)
    }
}

impl From<diesel::result::Error> for Failure {
    fn from(error: diesel::result::Error) -> Self {
        Failure::Database(error)
    }
}

impl From<diesel::ConnectionError> for Failure {
    fn from(error: diesel::ConnectionError) -> Self {
        Failure::Connect(error)
    }
}

impl From<brisk_pool::Error> for Failure {
    fn from(error: brisk_pool::Error) -> Self {
        Failure::Pool(error.to_string())
    }
}

impl Failure {
    /// Whether this is a query whose connection was lost (the database went down under it):
    /// nothing to fix in the request, and a retry may succeed.
    pub(crate) fn connection_lost(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        matches!(
            self,
            Failure::Database(Error::DatabaseError(
                DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection,
                _
            ))
        )
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Failure::Stream(error) => return error.into_response(),
            lost if lost.connection_lost() => {
                return unavailable(DATABASE_LOST, &lost);
            }
            Failure::Database(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            Failure::Connect(_) | Failure::Pool(_) => {
                return unavailable(DATABASE_UNAVAILABLE, &self);
            }
            Failure::Unavailable(reason) => return unavailable(reason, &self),
            Failure::Cache(error) => (StatusCode::INTERNAL_SERVER_ERROR, error),
            Failure::Missing => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the database returned no row".to_owned(),
            ),
        };
        (status, message).into_response()
    }
}

/// The body of a 503 for an order the database could not take (nothing was written).
pub(crate) const NOT_PLACED: &str =
    "the order was not placed: the database could not take it; retry later";

/// Seconds a client is asked to wait before retrying a 503.
pub(crate) const RETRY_AFTER_SECONDS: &str = "1";

/// The body of a 503 when no connection could be had.
pub(crate) const DATABASE_UNAVAILABLE: &str = "the database is unavailable; retry later";
/// The body of a 503 when the connection was lost under the query.
pub(crate) const DATABASE_LOST: &str = "the database connection was lost; retry later";

/// A 503 with `Retry-After` and a short reason (`body`: the database's address and the
/// driver's words are for the log, not the client); `cause` is logged, the first few and
/// then at each power of two, so an outage logs a few lines rather than one per request.
fn unavailable(body: &'static str, cause: &Failure) -> Response {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let n = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
    if n <= 3 || n.is_power_of_two() {
        eprintln!("brisk-demo: answered 503 ({n} so far): {cause}");
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS))],
        body,
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct PageQuery {
    #[serde(default)]
    pub(crate) page: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CursorQuery {
    pub(crate) cursor: Option<String>,
}

/// The first page of the product listing; each page links to the next.
pub(crate) const FIRST_PAGE: &str = "/products";

/// A listing page as sent: the JSON, and its `next` link also as a `Link` header (RFC 8288),
/// which a client can follow without reading the body.
pub(crate) fn listing(
    page: crate::model::ProductPage,
    cache_control: Option<&'static str>,
) -> Response {
    let link = page
        .next
        .as_ref()
        .and_then(|next| HeaderValue::try_from(format!("<{next}>; rel=\"next\"")).ok());
    let mut response = Json(page).into_response();
    let headers = response.headers_mut();
    if let Some(link) = link {
        headers.insert(LINK, link);
    }
    if let Some(cache_control) = cache_control {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    }
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExportQuery {
    #[serde(default = "first_user")]
    pub(crate) from: i64,
}

fn first_user() -> i64 {
    1
}

/// What a variant's process counted, read by the load generator from `/stats`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct Stats {
    pub(crate) queries: u64,
    pub(crate) connections: u64,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    /// Redis operations of the caches that failed.
    #[serde(default)]
    pub(crate) l2_errors: u64,
    /// When (ms since the Unix epoch) the first Redis operation after the last failure
    /// succeeded; 0 if none failed.
    #[serde(default)]
    pub(crate) l2_recovered_at_ms: u64,
}

/// This process's counters; cache hits and misses from the brisk caches in `registry`.
pub(crate) fn stats(registry: Option<&Registry>) -> Stats {
    let (mut cache_hits, mut cache_misses) = (0, 0);
    if let Some(registry) = registry {
        for series in registry.snapshot().counters {
            match series.name.as_str() {
                "brisk_cache_tiered_hits_total" => cache_hits += series.value,
                "brisk_cache_tiered_misses_total" => cache_misses += series.value,
                _ => {}
            }
        }
    }
    Stats {
        queries: QUERIES.load(Ordering::Relaxed),
        connections: CONNECTIONS.load(Ordering::Relaxed),
        cache_hits,
        cache_misses,
        l2_errors: crate::level::L2_ERRORS.load(Ordering::Relaxed),
        l2_recovered_at_ms: crate::level::L2_RECOVERED_AT.load(Ordering::Relaxed),
    }
}

/// Serves `app` on a free loopback port (or `port`), telling the parent the port on stdout.
pub(crate) async fn serve(app: Router, port: u16) -> Result<(), String> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|error| format!("binding 127.0.0.1:{port}: {error}"))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    println!("listening {}", address.port());
    // Without TCP_NODELAY a streamed body (several writes) waits out the client's delayed
    // ACK, 40 ms on Linux, before its last chunk; whole bodies rarely show it.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app)
        .await
        .map_err(|error| error.to_string())
}
