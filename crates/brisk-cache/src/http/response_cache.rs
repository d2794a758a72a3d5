//! [`ResponseCacheLayer`]: a shared server-side response cache stored in a [`Tiered`] cache.

use std::{
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::Duration,
};

use brisk_metrics::{Counter, Recorder};
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode,
    header::{
        AGE, AUTHORIZATION, CACHE_CONTROL, COOKIE, DATE, ETAG, EXPIRES, IF_RANGE, PRAGMA, RANGE,
        SET_COOKIE, VARY,
    },
};
use http_body::Body;
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, CacheBody, directives, key, layer::hash_tag, precondition::PRECONDITIONS};
use crate::{
    Cache, Error, NoRemote, Remote, Stamped, Tiered,
    metrics::Series,
    tiered::{NotStored, NotStoredApart},
};

/// The response header that tells how a response was answered: `hit`, `miss` or `stale`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Statuses a cache may store with explicit freshness (RFC 9110 §15.1, "heuristically
/// cacheable" ones; server errors are failures here).
const STORABLE: [u16; 10] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414];

/// Statuses the cache's `fresh_for` applies to (a response that gives no lifetime of its
/// own); errors (404, 405, 410, 414) are stored only with one: any client can make a 404
/// at a new URL, and what it keeps in the levels would be theirs to size.
const DEFAULT_LIFETIME: [u16; 6] = [200, 203, 204, 300, 301, 308];

/// Request headers that make a handler answer another method or URL than the request line
/// says: such requests pass (their key would not name what they get).
const OVERRIDES: [HeaderName; 4] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-method-override"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// Whether a request has a body (the key does not hold it, and the handler may read it).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get_all(http::header::CONTENT_LENGTH)
            .iter()
            .any(|length| length.as_bytes() != b"0")
}

/// A response's `Age` in seconds: an unreadable or overflowing one counts as 2³¹, stale for
/// any lifetime (RFC 9111 §1.2.2, §5.1).
fn age_seconds(value: &HeaderValue) -> u64 {
    const MAX: u64 = 1 << 31;
    let text = value.as_bytes();
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return MAX;
    }
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .map_or(MAX, |age| age.min(MAX))
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), those `Connection` names included,
/// from a response to be stored.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| text.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.into_iter().chain([
        http::header::CONNECTION,
        http::header::TRANSFER_ENCODING,
        http::header::TE,
        http::header::TRAILER,
        http::header::UPGRADE,
        http::header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ]) {
        headers.remove(name);
    }
}

/// Request headers that carry credentials whatever the builder adds: `Authorization` (RFC
/// 9111 §3.5) and `Cookie` (a session).
pub(crate) const CREDENTIALS: [HeaderName; 2] = [AUTHORIZATION, COOKIE];

/// A response as the response cache keeps it: status, headers and body, or the list of
/// request headers the responses at a URL vary on. Opaque; with feature `redis` it is
/// serialized into the Redis level.
#[derive(Clone)]
pub struct CachedResponse(Arc<Stored>);

enum Stored {
    Response(Entry),
    /// The responses at this URL vary on these request headers (lowercase, sorted): each
    /// variant is stored under a key of its own, in this generation of the URL's variants
    /// (a new one each time the list is stored: variants of an earlier list are never read).
    Vary(Vec<HeaderName>, u64),
}

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// When it was stored (Unix ms, the cache's clock), and the `Age` it came with (s).
    stored_at: u64,
    age: u64,
    /// How long it is fresh.
    lifetime: Duration,
    /// The request headers it varies on (lowercase, sorted).
    vary: Vec<HeaderName>,
}

impl CachedResponse {
    /// Whether the response may be answered stale (within the cache's
    /// stale-while-revalidate or fail-safe windows): not if it says `must-revalidate`,
    /// `proxy-revalidate` or `s-maxage` (which implies `proxy-revalidate` in a shared
    /// cache), RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10. Read from its stored `Cache-Control`
    /// only when a stale answer is weighed.
    fn may_serve_stale(&self) -> bool {
        let Stored::Response(entry) = &*self.0 else {
            return true;
        };
        !entry.headers.get_all(CACHE_CONTROL).iter().any(|value| {
            // An unreadable header: no stale answers, to be safe.
            value.to_str().map_or(true, |text| {
                directives(text).any(|directive| {
                    matches!(
                        &*directive.name,
                        "must-revalidate" | "proxy-revalidate" | "s-maxage"
                    )
                })
            })
        })
    }

    /// Bytes this entry holds (body, headers and bookkeeping): a weigher for the memory
    /// level, with the key's length added.
    pub fn weight(&self) -> usize {
        const OVERHEAD: usize = 96;
        match &*self.0 {
            Stored::Response(entry) => {
                let headers: usize = entry
                    .headers
                    .iter()
                    .map(|(name, value)| name.as_str().len() + value.len() + 16)
                    .sum();
                OVERHEAD + entry.body.len() + headers
            }
            Stored::Vary(names, _) => {
                OVERHEAD
                    + names
                        .iter()
                        .map(|name| name.as_str().len() + 8)
                        .sum::<usize>()
            }
        }
    }

    fn lifetime(&self) -> Option<Duration> {
        match &*self.0 {
            Stored::Response(entry) => Some(entry.lifetime),
            Stored::Vary(..) => None,
        }
    }

    /// Whether this is a response that may not answer a request carrying `credentials`.
    fn refuses(&self, credentials: &[HeaderName]) -> bool {
        match &*self.0 {
            Stored::Response(entry) => !answers_to(entry, credentials),
            Stored::Vary(..) => false,
        }
    }
}

impl fmt::Debug for CachedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Stored::Response(entry) => f
                .debug_struct("CachedResponse")
                .field("status", &entry.status)
                .field("body_len", &entry.body.len())
                .field("vary", &entry.vary)
                .finish_non_exhaustive(),
            Stored::Vary(names, generation) => f
                .debug_tuple("CachedResponse::Vary")
                .field(names)
                .field(generation)
                .finish(),
        }
    }
}

#[cfg(feature = "redis")]
mod wire {
    //! The serialized form: names and values as bytes, checked again when read back.

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

    use super::*;

    #[derive(Serialize, Deserialize)]
    enum Wire {
        Response {
            status: u16,
            headers: Vec<(String, Bytes)>,
            body: Bytes,
            stored_at: u64,
            age: u64,
            lifetime_ms: u64,
            vary: Vec<String>,
        },
        Vary(Vec<String>, u64),
    }

    fn names(names: &[HeaderName]) -> Vec<String> {
        names.iter().map(|name| name.as_str().to_owned()).collect()
    }

    fn parse_names<E: serde::de::Error>(names: Vec<String>) -> Result<Vec<HeaderName>, E> {
        names
            .into_iter()
            .map(|name| HeaderName::from_bytes(name.as_bytes()).map_err(E::custom))
            .collect()
    }

    impl Serialize for CachedResponse {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let wire = match &*self.0 {
                Stored::Response(entry) => Wire::Response {
                    status: entry.status.as_u16(),
                    headers: entry
                        .headers
                        .iter()
                        .map(|(name, value)| {
                            (
                                name.as_str().to_owned(),
                                Bytes::copy_from_slice(value.as_bytes()),
                            )
                        })
                        .collect(),
                    body: entry.body.clone(),
                    stored_at: entry.stored_at,
                    age: entry.age,
                    lifetime_ms: u64::try_from(entry.lifetime.as_millis()).unwrap_or(u64::MAX),
                    vary: names(&entry.vary),
                },
                Stored::Vary(vary, generation) => Wire::Vary(names(vary), *generation),
            };
            wire.serialize(serializer)
        }
    }

    impl<'de> Deserialize<'de> for CachedResponse {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            Ok(CachedResponse(Arc::new(
                match Wire::deserialize(deserializer)? {
                    Wire::Response {
                        status,
                        headers,
                        body,
                        stored_at,
                        age,
                        lifetime_ms,
                        vary,
                    } => {
                        let mut map = HeaderMap::with_capacity(headers.len());
                        for (name, value) in headers {
                            map.append(
                                HeaderName::from_bytes(name.as_bytes())
                                    .map_err(D::Error::custom)?,
                                HeaderValue::from_maybe_shared(value).map_err(D::Error::custom)?,
                            );
                        }
                        Stored::Response(Entry {
                            status: StatusCode::from_u16(status).map_err(D::Error::custom)?,
                            headers: map,
                            body,
                            stored_at,
                            age,
                            lifetime: Duration::from_millis(lifetime_ms),
                            vary: parse_names(vary)?,
                        })
                    }
                    Wire::Vary(vary, generation) => Stored::Vary(parse_names(vary)?, generation),
                },
            )))
        }
    }
}

/// What a response cache reports, each series labelled `name="<name>"`.
#[derive(Debug, Clone)]
struct Metrics {
    /// `brisk_cache_http_responses_total{result=…}`: hit, miss, stale, pass.
    hit: Counter,
    miss: Counter,
    stale: Counter,
    pass: Counter,
    /// `brisk_cache_http_handler_calls_saved_total`
    handler_calls_saved: Counter,
}

impl Metrics {
    fn noop() -> Self {
        Self {
            hit: Counter::noop(),
            miss: Counter::noop(),
            stale: Counter::noop(),
            pass: Counter::noop(),
            handler_calls_saved: Counter::noop(),
        }
    }

    fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        let result = |result| {
            series.counter_with("brisk_cache_http_responses_total", Some(("result", result)))
        };
        Self {
            hit: result("hit"),
            miss: result("miss"),
            stale: result("stale"),
            pass: result("pass"),
            handler_calls_saved: series.counter("brisk_cache_http_handler_calls_saved_total"),
        }
    }
}

/// How a response was answered, as `x-cache` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    /// From the cache, fresh (or from another request's handler call, awaited).
    Hit,
    /// From the cache, stale: revalidating behind it, or the handler failed (fail-safe).
    Stale,
    /// By the handler, and stored.
    Miss,
    /// By the handler; not stored (or not storable).
    Pass,
}

impl Answered {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Answered::Hit => "hit",
            Answered::Stale => "stale",
            Answered::Miss | Answered::Pass => "miss",
        })
    }
}

/// A tower layer that keeps whole responses in a [`Tiered`] cache, so that a cached response
/// is answered without running the handler, in every instance that shares the cache's Redis
/// level.
///
/// - **Keys**: the method (a `HEAD` reads `GET`'s entry), the host, path and query, and the
///   values of the request headers the response names in `Vary`, encoded so that no two
///   requests share a key unless they ask for the same resource and variant. The host is
///   the `Host` header (or an absolute-form target's authority; both there and different:
///   no key), as sent, and must be an authority: a DNS name, IPv4 address or bracketed
///   IPv6 literal with an optional port. It is not normalised: `site`, `SITE` and
///   `site:80` are three keys, so that a handler that writes the host it was sent into its
///   page never hands one client's spelling to another.
///   Anything else (`site/static`, `user@site`, two `Host` headers, …), or a key longer
///   than 8 KiB (8192 bytes, varied header values included), is no key: the request passes
///   to the handler, counted as a pass, and nothing is stored. A response that varies is
///   stored once per variant; `Vary: *` is never stored.
/// - **What is stored**: a response of a storable status (200, 203, 204, 300, 301, 308, 404,
///   405, 410, 414) with a body of known length up to
///   [`max_body`](ResponseCacheLayerBuilder::max_body), fresh for its `s-maxage`, else its
///   `max-age`, else `Expires` − `Date`, else the [`Tiered`] cache's
///   [`fresh_for`](crate::TieredBuilder::fresh_for) (without it, not stored). A response with
///   `no-store`, `private`, `no-cache` or `Set-Cookie` is not stored. Lifetimes that cannot
///   be read mean stale (RFC 9111 §4.2.1, §5.3), so such a response is not stored (not even
///   through `fresh_for`): an `Expires` that is not a date (`0`, `-1`) or comes twice, a
///   `max-age` or `s-maxage` that is not delta-seconds (`-1`, `"abc"`, no argument), and a
///   `max-age` or `s-maxage` given more than once (the RFC's "consider the response stale"
///   choice). A `max-age` makes `Expires` irrelevant, readable or not (§5.3).
/// - **Credentials**: a request with `Authorization`, `Cookie` or a header named with
///   [`credential_header`](ResponseCacheLayerBuilder::credential_header) is personal. Its
///   response is stored only if it says any user may have it (`public`, or `s-maxage`;
///   stricter than RFC 9111 §3.5, which also lets `must-revalidate` share it), or if it
///   varies on every credential header the request carries (then each credential value has
///   its own variant: with `Vary: Cookie`, one per session), and only with a lifetime of its
///   own (never `fresh_for`). It is answered from the cache only by a response that says any
///   user may have it (`public`, `s-maxage`) or that varies on those headers: a response
///   stored for anonymous requests through `fresh_for` goes to them only, and a personal
///   request for it passes to the handler.
/// - **Passed through**: methods other than GET and HEAD, and requests with `Range`.
/// - **Requests' directives** are not the client's to decide by default, as in shared
///   proxies: `Cache-Control: no-cache` or `max-age=0` and `Pragma: no-cache` are ignored
///   unless [`honour_request_directives`](ResponseCacheLayerBuilder::honour_request_directives)
///   (then they go to the handler and store its response). `Cache-Control: no-store` is
///   always honoured: the request is answered from the cache if it can be, and what the
///   handler answers it is not stored (it costs others nothing).
/// - **Answers** carry `x-cache: hit|miss|stale` and, from the cache, `Age`. A 200 stored
///   without an `ETag` is given its body's XXH3 tag, so a [`ConditionalLayer`](super::ConditionalLayer)
///   outside this layer answers `If-None-Match` from the cached copy without hashing it.
/// - **Misses** of one key are single-flighted: one handler call, whatever the number of
///   requests waiting (across instances too, with
///   [`load_across_instances`](crate::TieredBuilder::load_across_instances)). A request
///   whose handler call gave a response that is not stored is answered with it; requests
///   that waited for it call the handler themselves.
/// - **Stale answers** follow the [`Tiered`] cache's freshness settings: within its
///   `stale_while_revalidate` a stale response is answered and the handler refreshes it
///   behind; within its `fail_safe`, a stale response answers when the handler fails (a 5xx
///   or a service error).
///
/// Under brisk-compress's response layer, put this layer inside it: the identity copy is
/// stored once and compressed per request. With a `ConditionalLayer`, put that one between
/// them (compression outermost), so each representation gets its own tag.
///
/// ```
/// use std::time::Duration;
/// use brisk_cache::{MemoryCache, Tiered};
/// use brisk_cache::http::{CachedResponse, ResponseCacheLayer};
///
/// let memory = MemoryCache::builder()
///     .max_weight(64 << 20)
///     .weigher(|key: &String, value: &brisk_cache::Stamped<CachedResponse>| {
///         (key.len() + value.value().weight()) as u32
///     })
///     .build()?;
/// let cache: Tiered<String, CachedResponse> = Tiered::builder()
///     .memory(memory)
///     // For responses that do not say how long they are fresh; each one that does keeps
///     // its own lifetime. The stale windows count from the end of it.
///     .fresh_for(Duration::from_secs(60))
///     .stale_while_revalidate(Duration::from_secs(10))
///     .build()?;
/// let layer = ResponseCacheLayer::builder(cache).build()?;
/// # let _ = layer;
/// # Ok::<(), brisk_cache::Error>(())
/// ```
pub struct ResponseCacheLayer<R = NoRemote> {
    config: Arc<Config<R>>,
}

impl<R> Clone for ResponseCacheLayer<R> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<R> fmt::Debug for ResponseCacheLayer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayer")
            .field("max_body", &self.config.max_body)
            .field("default_ttl", &self.config.cache.fresh_for())
            .field("request_directives", &self.config.request_directives)
            .field("credentials", &self.config.credentials)
            .finish_non_exhaustive()
    }
}

struct Config<R> {
    cache: Tiered<String, CachedResponse, R>,
    max_body: u64,
    request_directives: bool,
    /// The request headers that carry credentials: [`CREDENTIALS`] and those the builder
    /// added.
    credentials: Vec<HeaderName>,
    metrics: Metrics,
}

impl<R> ResponseCacheLayer<R> {
    /// Starts configuring a layer that stores responses in `cache`.
    pub fn builder(cache: Tiered<String, CachedResponse, R>) -> ResponseCacheLayerBuilder<R> {
        ResponseCacheLayerBuilder {
            cache,
            max_body: 1 << 20,
            request_directives: false,
            credentials: CREDENTIALS.to_vec(),
            metrics: Metrics::noop(),
        }
    }
}

/// Configures a [`ResponseCacheLayer`]; from [`ResponseCacheLayer::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct ResponseCacheLayerBuilder<R> {
    cache: Tiered<String, CachedResponse, R>,
    max_body: u64,
    request_directives: bool,
    credentials: Vec<HeaderName>,
    metrics: Metrics,
}

impl<R> fmt::Debug for ResponseCacheLayerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayerBuilder")
            .field("max_body", &self.max_body)
            .field("request_directives", &self.request_directives)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl<R> ResponseCacheLayerBuilder<R> {
    /// The longest body (by its exact length) stored; longer and streaming bodies pass
    /// through, unstored. Default: 1 MiB.
    pub fn max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// Honours the requests' `Cache-Control: no-cache` / `max-age=0` and `Pragma: no-cache`:
    /// such a request goes to the handler, and its response replaces the stored one. Any
    /// client can then send every request of its own to the handler, so this suits a cache
    /// in front of trusted clients only. Default: ignored, as shared proxies do (a request's
    /// `no-store` is honoured either way: what the handler answers it is not stored).
    pub fn honour_request_directives(mut self) -> Self {
        self.request_directives = true;
        self
    }

    /// Treats request header `name` as a credential, as `Authorization` and `Cookie` are
    /// (an API key header, say): a request that carries it is personal, and its response is
    /// stored, and a stored response answers it, only where the response says any user may
    /// have it (`public`, `s-maxage`) or varies on `name` (see [`ResponseCacheLayer`]).
    /// Default: `Authorization` and `Cookie` only; this adds to them.
    pub fn credential_header(mut self, name: HeaderName) -> Self {
        if !self.credentials.contains(&name) {
            self.credentials.push(name);
        }
        self
    }

    /// Reports to `recorder`, each series labelled `name="<name>"`:
    /// `brisk_cache_http_responses_total{result="hit"|"miss"|"stale"|"pass"}` (pass: not
    /// storable, answered by the handler) and `brisk_cache_http_handler_calls_saved_total`.
    /// The [`Tiered`] cache reports its own metrics. Default: none.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero `max_body`.
    pub fn build(self) -> Result<ResponseCacheLayer<R>, Error> {
        if self.max_body == 0 {
            return Err(Error::Config {
                setting: "max_body",
                value: "0".into(),
                reason: "must be at least 1 byte",
            });
        }
        Ok(ResponseCacheLayer {
            config: Arc::new(Config {
                cache: self.cache,
                max_body: self.max_body,
                request_directives: self.request_directives,
                credentials: self.credentials,
                metrics: self.metrics,
            }),
        })
    }
}

impl<S, R> Layer<S> for ResponseCacheLayer<R> {
    type Service = ResponseCache<S, R>;

    fn layer(&self, inner: S) -> ResponseCache<S, R> {
        ResponseCache {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// The service of a [`ResponseCacheLayer`].
pub struct ResponseCache<S, R = NoRemote> {
    inner: S,
    config: Arc<Config<R>>,
}

impl<S: Clone, R> Clone for ResponseCache<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, R> fmt::Debug for ResponseCache<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What a request's `Cache-Control` asks of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asks {
    /// Answer from the cache if it can, else load and store.
    Normal,
    /// Answer from the cache if it can; store nothing.
    NoStore,
    /// Go to the handler, and store its response.
    Refresh,
}

/// What `headers` ask: `no-store` always counts; `no-cache`, `max-age=0` and `Pragma` only
/// when the layer `honours` them.
fn asks(headers: &HeaderMap, honours: bool) -> Asks {
    let mut asks = Asks::Normal;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in directives(text) {
            match &*directive.name {
                "no-store" => return Asks::NoStore,
                "no-cache" if honours => asks = Asks::Refresh,
                "max-age" if honours && directive.seconds() == Some(0) => asks = Asks::Refresh,
                _ => {}
            }
        }
    }
    let pragma_no_cache = || {
        headers.get_all(PRAGMA).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|text| text.to_ascii_lowercase().contains("no-cache"))
        })
    };
    if honours && asks == Asks::Normal && !headers.contains_key(CACHE_CONTROL) && pragma_no_cache()
    {
        asks = Asks::Refresh;
    }
    asks
}

/// The request headers a response varies on, lowercase and sorted; `None` for `Vary: *`.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for value in headers.get_all(VARY) {
        let text = value.to_str().ok()?;
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            if name == "*" {
                return None;
            }
            names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

/// Whether a response says any user may have it: `public`, or `s-maxage` (RFC 9111 §3.5;
/// `must-revalidate`, which the RFC counts too, does not here: it often goes on personal
/// pages).
fn shared_explicitly(headers: &HeaderMap) -> bool {
    headers.get_all(CACHE_CONTROL).iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            directives(text)
                .any(|directive| directive.name == "public" || directive.name == "s-maxage")
        })
    })
}

/// Whether a stored response may answer a request that carries the credential headers
/// `credentials`: any, if it carries none; else only if the response says any user may have
/// it or varies on all of them (its key then holds their values).
fn answers_to(entry: &Entry, credentials: &[HeaderName]) -> bool {
    credentials.is_empty()
        || shared_explicitly(&entry.headers)
        || credentials.iter().all(|name| entry.vary.contains(name))
}

/// How long a response may be stored fresh, and the request headers it varies on, if it may
/// be stored at all (status, directives, cookies, body length, the request's credentials):
/// see [`ResponseCacheLayer`]. `credentials` are the credential headers the request carried;
/// `default_ttl` is the lifetime of a response that gives none (never for such a request).
pub(crate) fn storable(
    max_body: u64,
    default_ttl: Option<Duration>,
    credentials: &[HeaderName],
    status: StatusCode,
    headers: &HeaderMap,
    body_length: Option<u64>,
) -> Option<(Duration, Vec<HeaderName>)> {
    if !STORABLE.contains(&status.as_u16())
        || headers.contains_key(SET_COOKIE)
        || body_length.is_none_or(|length| length > max_body)
    {
        return None;
    }
    let vary = vary_names(headers)?;
    // An encoded body that does not say it varies by encoding would reach clients that
    // cannot read it.
    if headers.contains_key(http::header::CONTENT_ENCODING)
        && !vary.contains(&http::header::ACCEPT_ENCODING)
    {
        return None;
    }
    let (mut max_age, mut s_maxage, mut public) = (None, None, false);
    for value in headers.get_all(CACHE_CONTROL) {
        let text = value.to_str().ok()?;
        // An unterminated quoted string hides the directives after it: unreadable.
        if text.bytes().filter(|&byte| byte == b'"').count() % 2 == 1 {
            return None;
        }
        for directive in directives(text) {
            let slot = match &*directive.name {
                "no-store" | "private" | "no-cache" => return None,
                "public" => {
                    public = true;
                    continue;
                }
                "max-age" => &mut max_age,
                "s-maxage" => &mut s_maxage,
                _ => continue,
            };
            // Not delta-seconds, or given twice: stale (RFC 9111 §4.2.1, §1.2.2).
            if slot.is_some() {
                return None;
            }
            *slot = Some(directive.seconds()?);
        }
    }
    let given = s_maxage.or(max_age).or_else(|| {
        // Only without max-age does `Expires` count (§5.3); unreadable, it means stale.
        headers.contains_key(EXPIRES).then(|| expires_in(headers))
    });
    // A request with credentials: only what any user may have, or a variant per credential.
    let shared = public || s_maxage.is_some();
    if !(credentials.is_empty() || shared || credentials.iter().all(|name| vary.contains(name))) {
        return None;
    }
    let lifetime = match given {
        Some(seconds) => Duration::from_secs(seconds),
        // The cache's default lifetime is for anonymous requests only, and successes.
        None if credentials.is_empty() && DEFAULT_LIFETIME.contains(&status.as_u16()) => {
            default_ttl?
        }
        None => return None,
    };
    (!lifetime.is_zero()).then_some((lifetime, vary))
}

/// Seconds from `Date` (else now) to `Expires`: 0 for an `Expires` that is not a date or
/// comes twice, or is past (RFC 9111 §5.3: "already expired").
fn expires_in(headers: &HeaderMap) -> u64 {
    let date = |value: &HeaderValue| httpdate::parse_http_date(value.to_str().ok()?).ok();
    let mut all = headers.get_all(EXPIRES).iter();
    let (Some(expires), None) = (all.next().and_then(date), all.next()) else {
        return 0;
    };
    let since = headers
        .get(DATE)
        .and_then(date)
        .unwrap_or_else(std::time::SystemTime::now);
    expires
        .duration_since(since)
        .map_or(0, |left| left.as_secs())
}

/// What the handler gave a request whose response the cache does not answer.
enum Handled<B, E> {
    /// Its response: stored under another key (`stored`), not storable, or a failure.
    Response {
        response: Response<CacheBody<B>>,
        stored: bool,
    },
    /// Its error.
    Error(E),
}

/// A slot shared between a request and the loader it hands the cache.
type Slot<T> = Arc<Mutex<Option<T>>>;

fn take<T>(slot: &Slot<T>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

fn put<T>(slot: &Slot<T>, value: T) {
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseCache<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Remote<String, Stamped<CachedResponse>> + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service `poll_ready` prepared goes into the future; a clone takes its place.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        Box::pin(serve(config, inner, request))
    }
}

/// Answers `request`: from the cache, or through `inner` (ready to be called).
async fn serve<S, R, ReqBody, ResBody>(
    config: Arc<Config<R>>,
    mut inner: S,
    mut request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Remote<String, Stamped<CachedResponse>> + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let metrics = &config.metrics;
    let method = request.method().clone();
    let cacheable = (method == Method::GET || method == Method::HEAD)
        && !request.headers().contains_key(RANGE)
        && !has_body(request.headers())
        && !OVERRIDES
            .iter()
            .any(|name| request.headers().contains_key(name));
    // No key (a `Host` that is no authority, a key too long): the handler's, unstored.
    let base = match key::base_key(request.uri(), request.headers()) {
        Ok(base) if cacheable => base,
        // An unsafe method that succeeds invalidates the URL (RFC 9111 §4.4): its entry, and
        // with it the generation its variants were stored in.
        Ok(base) if !method.is_safe() => {
            let answer = pass(metrics, &mut inner, request).await?;
            let status = answer.status();
            if status.is_success() || status.is_redirection() {
                // Counted by the cache if it fails: the answer stands (the change was made).
                let _ = config.cache.remove(&base).await;
            }
            return Ok(answer);
        }
        _ => return pass(metrics, &mut inner, request).await,
    };
    let asks = asks(request.headers(), config.request_directives);
    // The credential headers the request carries: it is personal if there are any.
    let credentials: Vec<HeaderName> = config
        .credentials
        .iter()
        .filter(|name| request.headers().contains_key(*name))
        .cloned()
        .collect();
    let cache = &config.cache;
    let found = cache.peek(&base).await;
    let (expected, generation) = match found.as_ref().map(|stored| &*stored.0) {
        Some(Stored::Vary(names, generation)) => (names.clone(), *generation),
        _ => (Vec::new(), 0),
    };
    let key = if expected.is_empty() {
        base.clone()
    } else {
        match key::variant_key(
            &base,
            &expected,
            request.headers(),
            &config.credentials,
            generation,
        ) {
            Ok(key) => key,
            Err(_) => return pass(metrics, &mut inner, request).await,
        }
    };
    // A personal request that a stored response may not answer is the handler's: a load
    // through the cache would answer (and refresh) that response.
    if !credentials.is_empty() {
        let stored = if expected.is_empty() {
            found
        } else {
            cache.peek(&key).await
        };
        if stored.is_some_and(|stored| stored.refuses(&credentials)) {
            return pass(metrics, &mut inner, request).await;
        }
    }
    let head = method == Method::HEAD;
    if head || asks == Asks::NoStore {
        // Answered from the cache if it can be; what the handler answers is not stored.
        if let Ok(Some(stored)) = cache.get(&key).await
            && let Some(response) = from_cache(&config, &stored, Answered::Hit, head, &credentials)
        {
            return Ok(response);
        }
        return pass(metrics, &mut inner, request).await;
    }
    // The handler's request has no preconditions: it makes the full response that every
    // request shares (preconditions are answered on it outside, by a `ConditionalLayer`).
    for name in PRECONDITIONS.into_iter().chain([IF_RANGE]) {
        request.headers_mut().remove(name);
    }
    let pending: Slot<(S, Request<ReqBody>)> = Arc::new(Mutex::new(Some((inner, request))));
    let handled: Slot<Handled<ResBody, S::Error>> = Arc::new(Mutex::new(None));
    let made: Slot<CachedResponse> = Arc::new(Mutex::new(None));
    let load = loader(
        Arc::clone(&config),
        Arc::clone(&pending),
        Arc::clone(&handled),
        Arc::clone(&made),
        base,
        expected,
        credentials.clone(),
    );
    let loaded = if asks == Asks::Refresh {
        // To the handler without looking, stored under its key as a load would be.
        match load().await {
            Ok(stored) => {
                cache
                    .store_loaded(key, stored.clone(), stored.lifetime())
                    .await;
                Ok((stored, false))
            }
            Err(not_stored) => Err(Error::Load {
                key,
                source: Arc::new(not_stored),
            }),
        }
    } else if credentials.is_empty() {
        cache
            .load_through(
                key,
                load,
                |stored: &CachedResponse| stored.lifetime(),
                CachedResponse::may_serve_stale,
            )
            .await
    } else {
        // Loads apart from other users' (another loader error type is another flight): a
        // personal request never leads the load anonymous requests wait for, where its
        // answer (personal, unstored) or its failure would reach them as a miss, a timeout
        // or a fail-safe. What it stores (a response any user may have) is theirs as well.
        let apart = move || {
            let loading = load();
            Box::pin(async move { loading.await.map_err(NotStoredApart) })
                as Pin<Box<dyn Future<Output = _> + Send>>
        };
        cache
            .load_through(
                key,
                apart,
                |stored: &CachedResponse| stored.lifetime(),
                CachedResponse::may_serve_stale,
            )
            .await
            .map_err(|error| {
                error.map_load(|apart: Arc<NotStoredApart>| {
                    Arc::new(NotStored {
                        failed: apart.0.failed,
                    })
                })
            })
    };
    let mine = take(&handled);
    match loaded {
        Ok((stored, stale)) => {
            // A miss if this request's loader made the answer (a refresh it started behind
            // a hit or a stale answer makes another one).
            let made = take(&made).is_some_and(|made| Arc::ptr_eq(&made.0, &stored.0));
            let answered = match (stale, made) {
                (true, _) => Answered::Stale,
                (false, false) => Answered::Hit,
                (false, true) => Answered::Miss,
            };
            // A failure answered by a stale copy: the failed response is dropped.
            drop(mine);
            if let Some(response) = from_cache(&config, &stored, answered, false, &credentials) {
                return Ok(response);
            }
            // A URL's `Vary` list where a response was expected (it changed just now), or
            // a response stored just now that may not answer this personal request.
            match take(&pending) {
                Some((mut inner, request)) => pass(metrics, &mut inner, request).await,
                None => Ok(unanswerable(metrics, StatusCode::INTERNAL_SERVER_ERROR)),
            }
        }
        // Still pending: this request's loader did not run (it waited for another's).
        Err(error) => match (mine, take(&pending)) {
            (Some(Handled::Response { response, stored }), _) => {
                if stored {
                    metrics.miss.increment();
                } else {
                    metrics.pass.increment();
                }
                Ok(answered_header(response, Answered::Miss))
            }
            (Some(Handled::Error(error)), _) => {
                metrics.pass.increment();
                Err(error)
            }
            (None, Some((mut inner, request))) => match error {
                // The call this request waited for took too long: so would its own.
                Error::LoadTimeout { .. } | Error::LoadWaitTimeout { .. } => {
                    Ok(unanswerable(metrics, StatusCode::GATEWAY_TIMEOUT))
                }
                Error::LoadPanicked { .. } => {
                    Ok(unanswerable(metrics, StatusCode::INTERNAL_SERVER_ERROR))
                }
                // The response it waited for is not stored, or failed (here or in another
                // instance): this request asks the handler itself.
                _ => pass(metrics, &mut inner, request).await,
            },
            (None, None) => Ok(unanswerable(
                metrics,
                match error {
                    Error::LoadTimeout { .. } | Error::LoadWaitTimeout { .. } => {
                        StatusCode::GATEWAY_TIMEOUT
                    }
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                },
            )),
        },
    }
}

/// The loader a request hands the cache: calls the handler, and gives the cache a response
/// it may store under the key it loads; anything else goes to `handled`, for the request.
fn loader<S, R, ReqBody, ResBody>(
    config: Arc<Config<R>>,
    pending: Slot<(S, Request<ReqBody>)>,
    handled: Slot<Handled<ResBody, S::Error>>,
    made: Slot<CachedResponse>,
    base: String,
    expected: Vec<HeaderName>,
    credentials: Vec<HeaderName>,
) -> impl FnOnce() -> Pin<Box<dyn Future<Output = Result<CachedResponse, NotStored>> + Send>>
+ Send
+ 'static
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Remote<String, Stamped<CachedResponse>> + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    move || {
        Box::pin(async move {
            let Some((mut inner, request)) = take(&pending) else {
                return Err(NotStored { failed: false });
            };
            // Read if the response varies otherwise than the key said (a copy: the handler
            // takes the request).
            let headers = request.headers().clone();
            let called = match poll_fn(|cx| inner.poll_ready(cx)).await {
                Ok(()) => inner.call(request).await,
                Err(error) => Err(error),
            };
            let response = match called {
                Ok(response) => response,
                Err(error) => {
                    put(&handled, Handled::Error(error));
                    return Err(NotStored { failed: true });
                }
            };
            let failed = response.status().is_server_error();
            let decided = (!failed)
                .then(|| {
                    storable(
                        config.max_body,
                        // The lifetime of a response that gives none (anonymous requests).
                        config.cache.fresh_for(),
                        &credentials,
                        response.status(),
                        response.headers(),
                        response.body().size_hint().exact(),
                    )
                })
                .flatten()
                // Varying otherwise than the key said, it is stored under a key of its own:
                // none (too long), none stored.
                .and_then(|(lifetime, vary)| {
                    let own = if vary.is_empty() || vary == expected {
                        None
                    } else {
                        let generation = crate::jitter::random();
                        let key = key::variant_key(
                            &base,
                            &vary,
                            &headers,
                            &config.credentials,
                            generation,
                        )
                        .ok()?;
                        Some((key, generation))
                    };
                    Some((lifetime, vary, own))
                });
            let Some((lifetime, vary, own)) = decided else {
                let response = response.map(CacheBody::passed);
                put(
                    &handled,
                    Handled::Response {
                        response,
                        stored: false,
                    },
                );
                return Err(NotStored { failed });
            };
            let (mut parts, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let response = Response::from_parts(parts, CacheBody::failed(error.into()));
                    put(
                        &handled,
                        Handled::Response {
                            response,
                            stored: false,
                        },
                    );
                    return Err(NotStored { failed: true });
                }
            };
            strip_hop_by_hop(&mut parts.headers);
            if parts.status == StatusCode::OK
                && !parts.headers.contains_key(ETAG)
                && let Some(value) = hash_tag(&body).and_then(|tag| tag.header_value())
            {
                parts.headers.insert(ETAG, value);
            }
            let age = parts
                .headers
                .remove(AGE)
                .map_or(0, |value| age_seconds(&value));
            // Fresh for what its lifetime has left past its age (RFC 9111 §4.2.3); none left:
            // stale, not stored.
            let Some(lifetime) = lifetime
                .checked_sub(Duration::from_secs(age))
                .filter(|left| !left.is_zero())
            else {
                let response = Response::from_parts(parts, CacheBody::buffered(body));
                put(
                    &handled,
                    Handled::Response {
                        response,
                        stored: false,
                    },
                );
                return Err(NotStored { failed: false });
            };
            let names = vary.clone();
            let stored = CachedResponse(Arc::new(Stored::Response(Entry {
                status: parts.status,
                headers: parts.headers,
                body,
                stored_at: config.cache.now_ms(),
                age,
                lifetime,
                vary,
            })));
            if names == expected {
                put(&made, stored.clone());
                return Ok(stored);
            }
            // The URL's responses vary otherwise than its key said: this one is stored under
            // its own key, and the URL's entry says how they vary.
            let cache = &config.cache;
            if let Some((key, generation)) = own {
                let vary = CachedResponse(Arc::new(Stored::Vary(names, generation)));
                cache.store_loaded(base, vary, Some(lifetime)).await;
                cache
                    .store_loaded(key, stored.clone(), Some(lifetime))
                    .await;
            } else {
                cache
                    .store_loaded(base, stored.clone(), Some(lifetime))
                    .await;
            }
            if let Some(response) = entry_response(&config, &stored, Answered::Miss, false) {
                put(
                    &handled,
                    Handled::Response {
                        response,
                        stored: true,
                    },
                );
            }
            Err(NotStored { failed: false })
        })
    }
}

/// A stored response as the answer to a request (`head`: without its body) that carries the
/// credential headers `credentials`, counted; `None` if `stored` is a URL's `Vary` list or
/// may not answer that request.
fn from_cache<R, B>(
    config: &Config<R>,
    stored: &CachedResponse,
    answered: Answered,
    head: bool,
    credentials: &[HeaderName],
) -> Option<Response<CacheBody<B>>>
where
    R: Remote<String, Stamped<CachedResponse>>,
{
    if stored.refuses(credentials) {
        return None;
    }
    let response = entry_response(config, stored, answered, head)?;
    let metrics = &config.metrics;
    match answered {
        Answered::Hit => metrics.hit.increment(),
        Answered::Stale => metrics.stale.increment(),
        Answered::Miss => metrics.miss.increment(),
        Answered::Pass => metrics.pass.increment(),
    }
    if matches!(answered, Answered::Hit | Answered::Stale) {
        metrics.handler_calls_saved.increment();
    }
    Some(response)
}

/// [`from_cache`], uncounted.
fn entry_response<R, B>(
    config: &Config<R>,
    stored: &CachedResponse,
    answered: Answered,
    head: bool,
) -> Option<Response<CacheBody<B>>>
where
    R: Remote<String, Stamped<CachedResponse>>,
{
    let Stored::Response(entry) = &*stored.0 else {
        return None;
    };
    let body = if head {
        CacheBody::empty()
    } else {
        CacheBody::buffered(entry.body.clone())
    };
    let mut response = Response::new(body);
    *response.status_mut() = entry.status;
    *response.headers_mut() = entry.headers.clone();
    let headers = response.headers_mut();
    if entry.status != StatusCode::NO_CONTENT {
        headers.insert(http::header::CONTENT_LENGTH, entry.body.len().into());
    }
    if answered != Answered::Miss {
        let held = config.cache.now_ms().saturating_sub(entry.stored_at) / 1000;
        headers.insert(AGE, entry.age.saturating_add(held).into());
    }
    Some(answered_header(response, answered))
}

/// `response` with its `x-cache` header.
fn answered_header<B>(mut response: Response<B>, answered: Answered) -> Response<B> {
    response.headers_mut().insert(X_CACHE, answered.header());
    response
}

/// The handler's own answer to a request the cache does not answer, counted as a pass.
async fn pass<S, ReqBody, ResBody>(
    metrics: &Metrics,
    inner: &mut S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody<ResBody>>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    metrics.pass.increment();
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    let response = inner.call(request).await?;
    Ok(answered_header(
        response.map(CacheBody::passed),
        Answered::Pass,
    ))
}

/// A bodiless answer when neither the cache nor the handler can give one (the load timed
/// out or panicked), counted as a pass.
fn unanswerable<B>(metrics: &Metrics, status: StatusCode) -> Response<CacheBody<B>> {
    metrics.pass.increment();
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = status;
    answered_header(response, Answered::Pass)
}
