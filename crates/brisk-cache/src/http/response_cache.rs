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
        AGE, AUTHORIZATION, CACHE_CONTROL, DATE, ETAG, EXPIRES, HOST, IF_RANGE, PRAGMA, RANGE,
        SET_COOKIE, VARY,
    },
};
use http_body::Body;
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, CacheBody, directives, layer::hash_tag, precondition::PRECONDITIONS};
use crate::{Cache, Error, NoRemote, Remote, Stamped, Tiered, metrics::Series, tiered::NotStored};

/// The response header that tells how a response was answered: `hit`, `miss` or `stale`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Statuses a cache may store with explicit freshness (RFC 9110 §15.1, "heuristically
/// cacheable" ones; server errors are failures here).
const STORABLE: [u16; 10] = [200, 203, 204, 300, 301, 308, 404, 405, 410, 414];

/// A response as the response cache keeps it: status, headers and body, or the list of
/// request headers the responses at a URL vary on. Opaque; with feature `redis` it is
/// serialized into the Redis level.
#[derive(Clone)]
pub struct CachedResponse(Arc<Stored>);

enum Stored {
    Response(Entry),
    /// The responses at this URL vary on these request headers (lowercase, sorted): each
    /// variant is stored under a key of its own.
    Vary(Vec<HeaderName>),
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
            Stored::Vary(names) => {
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
            Stored::Vary(_) => None,
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
            Stored::Vary(names) => f.debug_tuple("CachedResponse::Vary").field(names).finish(),
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
        Vary(Vec<String>),
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
                Stored::Vary(vary) => Wire::Vary(names(vary)),
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
                    Wire::Vary(vary) => Stored::Vary(parse_names(vary)?),
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
/// - **Keys**: the method (a `HEAD` reads `GET`'s entry), `Host`, path and query, and the
///   values of the request headers the response names in `Vary`. A response that varies is
///   stored once per variant; `Vary: *` is never stored.
/// - **What is stored**: a response of a storable status (200, 203, 204, 300, 301, 308, 404,
///   405, 410, 414) with a body of known length up to
///   [`max_body`](ResponseCacheLayerBuilder::max_body), fresh for its `s-maxage`, else its
///   `max-age`, else `Expires` − `Date`, else the [`Tiered`] cache's
///   [`fresh_for`](crate::TieredBuilder::fresh_for) (without it, not stored). A response with `no-store`, `private`, `no-cache` or
///   `Set-Cookie` is not stored; nor is one to a request with `Authorization`, `Range` or a
///   method other than GET and HEAD (those pass through).
/// - **Requests**: `Cache-Control: no-store` is answered from the cache if it can be, and
///   what the handler answers is not stored; `no-cache`, `max-age=0` or `Pragma: no-cache`
///   go to the handler and store its response (unless
///   [`ignore_request_directives`](ResponseCacheLayerBuilder::ignore_request_directives)).
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
            .finish_non_exhaustive()
    }
}

struct Config<R> {
    cache: Tiered<String, CachedResponse, R>,
    max_body: u64,
    request_directives: bool,
    metrics: Metrics,
}

impl<R> ResponseCacheLayer<R> {
    /// Starts configuring a layer that stores responses in `cache`.
    pub fn builder(cache: Tiered<String, CachedResponse, R>) -> ResponseCacheLayerBuilder<R> {
        ResponseCacheLayerBuilder {
            cache,
            max_body: 1 << 20,
            request_directives: true,
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
    metrics: Metrics,
}

impl<R> fmt::Debug for ResponseCacheLayerBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCacheLayerBuilder")
            .field("max_body", &self.max_body)
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

    /// Ignores the requests' `Cache-Control` and `Pragma`, so that clients cannot make
    /// requests skip the cache (a request's `no-cache` reaches the handler otherwise).
    pub fn ignore_request_directives(mut self) -> Self {
        self.request_directives = false;
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

fn asks(headers: &HeaderMap) -> Asks {
    let mut asks = Asks::Normal;
    for value in headers.get_all(CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for directive in directives(text) {
            match &*directive.name {
                "no-store" => return Asks::NoStore,
                "no-cache" => asks = Asks::Refresh,
                "max-age" if directive.seconds() == Some(0) => asks = Asks::Refresh,
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
    if asks == Asks::Normal && !headers.contains_key(CACHE_CONTROL) && pragma_no_cache() {
        asks = Asks::Refresh;
    }
    asks
}

/// The request's base key: `Host`, path and query (the method is GET's for GET and HEAD).
fn base_key<B>(request: &Request<B>) -> String {
    let host = request
        .uri()
        .authority()
        .map(|authority| authority.as_str().as_bytes())
        .or_else(|| request.headers().get(HOST).map(HeaderValue::as_bytes))
        .unwrap_or_default();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    let mut key = String::with_capacity(host.len() + path.len() + 5);
    key.push_str("GET ");
    key.push_str(&String::from_utf8_lossy(host));
    key.push_str(path);
    key
}

/// The key of the variant of `base` that `headers` select on `names`.
fn variant_key(base: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
    let mut key = String::from(base);
    for name in names {
        key.push('\n');
        key.push_str(name.as_str());
        key.push(':');
        for (at, value) in headers.get_all(name).iter().enumerate() {
            if at > 0 {
                key.push(',');
            }
            key.push_str(&String::from_utf8_lossy(value.as_bytes()));
        }
    }
    key
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

/// How long a response may be stored fresh, if it may be stored at all (status, directives,
/// cookies, body length).
fn storable<B: Body>(
    max_body: u64,
    default_ttl: Option<Duration>,
    response: &Response<B>,
) -> Option<Duration> {
    if !STORABLE.contains(&response.status().as_u16())
        || response.headers().contains_key(SET_COOKIE)
        || response
            .body()
            .size_hint()
            .exact()
            .is_none_or(|length| length > max_body)
    {
        return None;
    }
    let (mut max_age, mut s_maxage) = (None, None);
    for value in response.headers().get_all(CACHE_CONTROL) {
        let text = value.to_str().ok()?;
        for directive in directives(text) {
            match &*directive.name {
                "no-store" | "private" | "no-cache" => return None,
                "max-age" => max_age = directive.seconds(),
                "s-maxage" => s_maxage = directive.seconds(),
                _ => {}
            }
        }
    }
    let seconds = s_maxage.or(max_age).or_else(|| {
        let date = |name| {
            let text = response.headers().get(name)?.to_str().ok()?;
            httpdate::parse_http_date(text).ok()
        };
        // An unreadable `Expires` means already expired (RFC 9111 §5.3).
        if !response.headers().contains_key(EXPIRES) {
            return None;
        }
        let expires = date(EXPIRES)?;
        let since = date(DATE).unwrap_or_else(std::time::SystemTime::now);
        Some(
            expires
                .duration_since(since)
                .map_or(0, |left| left.as_secs()),
        )
    });
    let lifetime = match seconds {
        Some(seconds) => Duration::from_secs(seconds),
        None => default_ttl?,
    };
    (!lifetime.is_zero()).then_some(lifetime)
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
        && !request.headers().contains_key(AUTHORIZATION)
        && !request.headers().contains_key(RANGE);
    if !cacheable {
        return pass(metrics, &mut inner, request).await;
    }
    let asks = if config.request_directives {
        asks(request.headers())
    } else {
        Asks::Normal
    };
    let base = base_key(&request);
    let cache = &config.cache;
    let expected = match cache.peek(&base).await.as_ref().map(|stored| &*stored.0) {
        Some(Stored::Vary(names)) => names.clone(),
        _ => Vec::new(),
    };
    let key = if expected.is_empty() {
        base.clone()
    } else {
        variant_key(&base, &expected, request.headers())
    };
    let head = method == Method::HEAD;
    if head || asks == Asks::NoStore {
        // Answered from the cache if it can be; what the handler answers is not stored.
        if let Ok(Some(stored)) = cache.get(&key).await
            && let Some(response) = from_cache(&config, &stored, Answered::Hit, head)
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
    } else {
        cache
            .load_through(
                key,
                load,
                |stored: &CachedResponse| stored.lifetime(),
                |_| true,
            )
            .await
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
            if let Some(response) = from_cache(&config, &stored, answered, false) {
                return Ok(response);
            }
            // A URL's `Vary` list where a response was expected (it changed just now).
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
            let lifetime = (!failed)
                // The cache's `fresh_for` is the lifetime of a response that gives none.
                .then(|| storable(config.max_body, config.cache.fresh_for(), &response))
                .flatten();
            let (Some(lifetime), Some(vary)) = (lifetime, vary_names(response.headers())) else {
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
            for name in [
                http::header::CONNECTION,
                http::header::TRANSFER_ENCODING,
                HeaderName::from_static("keep-alive"),
            ] {
                parts.headers.remove(name);
            }
            if parts.status == StatusCode::OK
                && !parts.headers.contains_key(ETAG)
                && let Some(value) = hash_tag(&body).and_then(|tag| tag.header_value())
            {
                parts.headers.insert(ETAG, value);
            }
            let age = parts
                .headers
                .remove(AGE)
                .and_then(|value| value.to_str().ok()?.trim().parse().ok())
                .unwrap_or(0);
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
            if names.is_empty() {
                cache
                    .store_loaded(base, stored.clone(), Some(lifetime))
                    .await;
            } else {
                let key = variant_key(&base, &names, &headers);
                let vary = CachedResponse(Arc::new(Stored::Vary(names)));
                cache.store_loaded(base, vary, Some(lifetime)).await;
                cache
                    .store_loaded(key, stored.clone(), Some(lifetime))
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

/// A stored response as the answer to a request (`head`: without its body), counted;
/// `None` if `stored` is a URL's `Vary` list.
fn from_cache<R, B>(
    config: &Config<R>,
    stored: &CachedResponse,
    answered: Answered,
    head: bool,
) -> Option<Response<CacheBody<B>>>
where
    R: Remote<String, Stamped<CachedResponse>>,
{
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
