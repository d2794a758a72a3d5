//! [`ConditionalLayer`]: validators on responses, and 304/412 answers to conditional requests.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use brisk_metrics::{Counter, Recorder};
use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode,
    header::{
        AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LOCATION, CONTENT_TYPE, COOKIE, DATE, ETAG,
        EXPIRES, LAST_MODIFIED, SET_COOKIE, VARY,
    },
};
use http_body::Body;
use http_body_util::BodyExt;
use tower_layer::Layer;
use tower_service::Service;

use super::{
    BoxError, CacheBody, CacheControl, EntityTag, X_CACHE,
    precondition::{PRECONDITIONS, Precondition, Validators, evaluate},
};
use crate::{Error, metrics::Series};

/// What a [`ConditionalLayer`] reports, each series labelled `name="<name>"`.
#[derive(Debug, Clone)]
struct Metrics {
    /// `brisk_cache_http_not_modified_total`
    not_modified: Counter,
    /// `brisk_cache_http_precondition_failed_total`
    precondition_failed: Counter,
    /// `brisk_cache_http_bodies_hashed_total`
    hashed: Counter,
    /// `brisk_cache_http_bytes_saved_total`: body bytes 304s did not send.
    bytes_saved: Counter,
    /// `brisk_cache_http_handler_calls_saved_total`: requests answered before the handler.
    handler_calls_saved: Counter,
}

impl Metrics {
    fn noop() -> Self {
        Self {
            not_modified: Counter::noop(),
            precondition_failed: Counter::noop(),
            hashed: Counter::noop(),
            bytes_saved: Counter::noop(),
            handler_calls_saved: Counter::noop(),
        }
    }

    fn new(recorder: &dyn Recorder, name: &str) -> Self {
        let series = Series::new(recorder, name);
        Self {
            not_modified: series.counter("brisk_cache_http_not_modified_total"),
            precondition_failed: series.counter("brisk_cache_http_precondition_failed_total"),
            hashed: series.counter("brisk_cache_http_bodies_hashed_total"),
            bytes_saved: series.counter("brisk_cache_http_bytes_saved_total"),
            handler_calls_saved: series.counter("brisk_cache_http_handler_calls_saved_total"),
        }
    }
}

/// Headers a 304 carries from the response it stands for: RFC 9110 §15.4.5's list, then
/// `Set-Cookie` (a session the handler renewed stays renewed), and `Age` and `x-cache` (what
/// a [`ResponseCacheLayer`](super::ResponseCacheLayer) inside said of the answer).
const NOT_MODIFIED_HEADERS: [http::HeaderName; 10] = [
    CACHE_CONTROL,
    CONTENT_LOCATION,
    DATE,
    ETAG,
    EXPIRES,
    LAST_MODIFIED,
    VARY,
    SET_COOKIE,
    AGE,
    X_CACHE,
];

/// A tower layer that gives responses validators and answers conditional requests:
///
/// - **Validators, cheapest first**: the handler's own `ETag` / `Last-Modified` headers; else,
///   for a body of known length up to [`max_hashed_body`](ConditionalLayerBuilder::max_hashed_body),
///   a strong `ETag` from the XXH3 hash of its bytes (stable across instances and restarts).
///   A streaming body, or a longer one, passes through untouched, without a tag; so do
///   responses other than 200 (a 206's bytes are a part) and HEAD responses.
/// - **Preconditions** of GET and HEAD requests are evaluated against them after the handler,
///   in RFC 9110 §13.2.2's order ([`evaluate`](super::evaluate)): a 304 carries `ETag`,
///   `Cache-Control`, `Vary`, `Date`, `Expires`, `Content-Location` and `Last-Modified`, and
///   the handler's `Set-Cookie`, `Age` and `x-cache`, and no body; a 412 has no body. Only 2xx responses are considered (§13.2.1). Those of other
///   methods must hold *before* the method runs, so they are answered only with a
///   [`validator`](ConditionalLayerBuilder::validator), before the handler; without one they
///   are the handler's.
/// - **`Cache-Control`** from the policies set on the builder, unless the handler set one,
///   only on the answers to GET and HEAD requests that are 2xx other than 206, or 304, and
///   have no `Set-Cookie`: a 4xx/5xx, another 3xx, a 206 (a part), the answer to a POST, PUT,
///   DELETE or other method, or a response that sets a cookie goes out with the handler's
///   headers as they are. On the answer to a request with credentials (`Authorization` or
///   `Cookie`) a `public` policy goes out made `private`, without `s-maxage`
///   (`public, max-age=60, s-maxage=600` as `private, max-age=60`): no shared cache keeps one
///   user's answer for the next, their own browser still may. A handler whose answer is the
///   same for everyone sets its own `Cache-Control`, which is left as it is. Entity tags
///   (looked up or hashed) go on 2xx responses only.
///
/// ```
/// use std::time::Duration;
/// use brisk_cache::http::{CacheControl, ConditionalLayer};
///
/// let layer = ConditionalLayer::builder()
///     .cache_control(CacheControl::private().max_age(Duration::from_secs(60)).must_revalidate())
///     .cache_control_for(
///         "image/",
///         CacheControl::public().max_age(Duration::from_secs(3600)).immutable(),
///     )
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), brisk_cache::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConditionalLayer {
    config: Arc<Config>,
}

/// Looks up a request's current validator before the handler runs.
type Lookup = Arc<
    dyn Fn(&http::request::Parts) -> Pin<Box<dyn Future<Output = Option<EntityTag>> + Send>>
        + Send
        + Sync,
>;

struct Config {
    metrics: Metrics,
    lookup: Option<Lookup>,
    max_hashed_body: Option<u64>,
    default_policy: Option<Policy>,
    /// (content-type prefix, `Cache-Control` values), most specific first.
    policies: Vec<(String, Policy)>,
}

/// A `Cache-Control` policy's header values.
#[derive(Debug, Clone)]
struct Policy {
    /// As it was set.
    anyone: HeaderValue,
    /// For the answer to a request with credentials: `public` made `private`, no `s-maxage`
    /// ([`CacheControl::for_credentials`]).
    credentialed: HeaderValue,
}

impl Policy {
    fn new(policy: &CacheControl) -> Result<Self, Error> {
        Ok(Self {
            anyone: policy.header_value()?,
            credentialed: policy.for_credentials().header_value()?,
        })
    }

    /// The value for a request that has credentials or not.
    fn value(&self, credentials: bool) -> &HeaderValue {
        if credentials {
            &self.credentialed
        } else {
            &self.anyone
        }
    }
}

/// Whether a request carries credentials (`Authorization` or `Cookie`), whose answer may be
/// one user's own: no policy that lets a shared cache keep it goes on it.
fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(AUTHORIZATION) || headers.contains_key(COOKIE)
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("max_hashed_body", &self.max_hashed_body)
            .field("validator", &self.lookup.is_some())
            .finish_non_exhaustive()
    }
}

impl ConditionalLayer {
    /// Starts configuring the layer.
    pub fn builder() -> ConditionalLayerBuilder {
        ConditionalLayerBuilder {
            metrics: Metrics::noop(),
            lookup: None,
            max_hashed_body: Some(256 << 10),
            default_policy: None,
            policies: Vec::new(),
        }
    }
}

impl<S> Layer<S> for ConditionalLayer {
    type Service = Conditional<S>;

    fn layer(&self, inner: S) -> Conditional<S> {
        Conditional {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}

/// Configures a [`ConditionalLayer`]; from [`ConditionalLayer::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConditionalLayerBuilder {
    metrics: Metrics,
    lookup: Option<Lookup>,
    max_hashed_body: Option<u64>,
    default_policy: Option<CacheControl>,
    policies: Vec<(String, CacheControl)>,
}

impl fmt::Debug for ConditionalLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConditionalLayerBuilder")
            .field("max_hashed_body", &self.max_hashed_body)
            .field("validator", &self.lookup.is_some())
            .finish_non_exhaustive()
    }
}

impl ConditionalLayerBuilder {
    /// Answers conditional requests **before the handler runs**: `lookup` gives the current
    /// entity tag of what a request asks for (the version of the cache entry its response is
    /// built from, say), or `None` to let the handler and the other validators decide. A
    /// matching `If-None-Match` is then a 304, and a failed `If-Match` a 412, without calling
    /// the handler (counted in `brisk_cache_http_handler_calls_saved_total`); otherwise the
    /// handler's response carries that tag unless it set its own. The 304 carries the
    /// default `Cache-Control` policy (the content type is not known without a response),
    /// made private for a request with credentials.
    pub fn validator<F, Fut>(mut self, lookup: F) -> Self
    where
        F: Fn(&http::request::Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<EntityTag>> + Send + 'static,
    {
        self.lookup = Some(Arc::new(move |parts: &http::request::Parts| {
            Box::pin(lookup(parts)) as Pin<Box<dyn Future<Output = Option<EntityTag>> + Send>>
        }));
        self
    }

    /// The longest body (by its exact length) hashed for an `ETag` when the handler set none;
    /// such a body is read whole before it is sent. Default: 256 KiB.
    pub fn max_hashed_body(mut self, bytes: u64) -> Self {
        self.max_hashed_body = Some(bytes);
        self
    }

    /// No body hashing: only the handler's own validators count.
    pub fn no_body_hash(mut self) -> Self {
        self.max_hashed_body = None;
        self
    }

    /// `Cache-Control` for responses no content-type policy covers. Default: none. Like
    /// every policy, set only on the 2xx (but 206) and 304 answers to GET and HEAD requests
    /// that have no `Cache-Control` and no `Set-Cookie` of their own; on the answer to a
    /// request with `Authorization` or `Cookie`, a `public` policy goes out as `private`
    /// without `s-maxage`.
    pub fn cache_control(mut self, policy: CacheControl) -> Self {
        self.default_policy = Some(policy);
        self
    }

    /// `Cache-Control` for responses whose `Content-Type` starts with `prefix` (such as
    /// `"image/"` or `"application/json"`); the longest matching prefix wins.
    pub fn cache_control_for(mut self, prefix: impl Into<String>, policy: CacheControl) -> Self {
        self.policies.push((prefix.into(), policy));
        self
    }

    /// Reports to `recorder`, each series labelled `name="<name>"`:
    /// `brisk_cache_http_not_modified_total` (304s sent),
    /// `brisk_cache_http_precondition_failed_total` (412s sent),
    /// `brisk_cache_http_bodies_hashed_total`, `brisk_cache_http_bytes_saved_total` (body
    /// bytes a 304 did not send) and `brisk_cache_http_handler_calls_saved_total` (requests
    /// answered before the handler, with [`validator`](Self::validator)). Default: none.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero `max_hashed_body` (use `no_body_hash`), an empty
    /// content-type prefix, or a policy that contradicts itself (see [`CacheControl`]).
    pub fn build(self) -> Result<ConditionalLayer, Error> {
        if self.max_hashed_body == Some(0) {
            return Err(Error::Config {
                setting: "max_hashed_body",
                value: "0".into(),
                reason: "must be at least 1 byte; `no_body_hash` turns hashing off",
            });
        }
        let mut policies = Vec::with_capacity(self.policies.len());
        for (prefix, policy) in self.policies {
            if prefix.is_empty() {
                return Err(Error::Config {
                    setting: "cache_control_for",
                    value: "\"\"".into(),
                    reason: "the content-type prefix must be non-empty; `cache_control` sets the default",
                });
            }
            policies.push((prefix.to_ascii_lowercase(), Policy::new(&policy)?));
        }
        policies.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(ConditionalLayer {
            config: Arc::new(Config {
                metrics: self.metrics,
                lookup: self.lookup,
                max_hashed_body: self.max_hashed_body,
                default_policy: self.default_policy.as_ref().map(Policy::new).transpose()?,
                policies,
            }),
        })
    }
}

/// The service of a [`ConditionalLayer`].
#[derive(Debug, Clone)]
pub struct Conditional<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Conditional<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
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
        let method = request.method().clone();
        let credentials = has_credentials(request.headers());
        // Only the four precondition headers are kept while the handler runs.
        let mut conditions = HeaderMap::new();
        for name in PRECONDITIONS {
            for value in request.headers().get_all(&name) {
                conditions.append(name.clone(), value.clone());
            }
        }
        let config = Arc::clone(&self.config);
        let Some(lookup) = config.lookup.clone() else {
            let response = self.inner.call(request);
            return Box::pin(async move {
                let response = response.await?;
                Ok(answer(&config, &method, credentials, &conditions, response, None).await)
            });
        };
        let (parts, body) = request.into_parts();
        let looked_up = lookup(&parts);
        let request = Request::from_parts(parts, body);
        // The service `poll_ready` prepared goes into the future; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let current = looked_up.await;
            if let Some(tag) = &current {
                let validators = Validators {
                    etag: Some(tag),
                    last_modified: None,
                };
                // What the 304 carries: the tag, and the default policy (no response, so no
                // content type to pick another by).
                let mut headers = HeaderMap::new();
                if let Some(value) = tag.header_value() {
                    headers.insert(ETAG, value);
                }
                if let Some(policy) = &config.default_policy {
                    headers.insert(CACHE_CONTROL, policy.value(credentials).clone());
                }
                let decided = evaluate(&method, &conditions, Some(&validators));
                if let Some(answer) = refuse(&config, decided, &headers, 0) {
                    config.metrics.handler_calls_saved.increment();
                    return Ok(answer);
                }
            }
            let response = inner.call(request).await?;
            Ok(answer(
                &config,
                &method,
                credentials,
                &conditions,
                response,
                current,
            )
            .await)
        })
    }
}

/// The handler's response, given validators (the looked-up `known` tag, the handler's own, or
/// a body hash) and, where the preconditions call for it, turned into a 304 or 412;
/// `credentials`: whether the request had any.
async fn answer<B>(
    config: &Config,
    method: &Method,
    credentials: bool,
    conditions: &HeaderMap,
    response: Response<B>,
    known: Option<EntityTag>,
) -> Response<CacheBody<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    // A policy is for a read's full answer: never on a 4xx/5xx (a shared cache in front
    // would keep the error), a 1xx or 3xx other than 304, a 206 (a part), the answer to a
    // method other than GET and HEAD, nor on a response that sets a cookie (`public` on it
    // would share one user's session with the next).
    let read = *method == Method::GET || *method == Method::HEAD;
    let full = (parts.status.is_success() && parts.status != StatusCode::PARTIAL_CONTENT)
        || parts.status == StatusCode::NOT_MODIFIED;
    let policed = read && full && !parts.headers.contains_key(SET_COOKIE);
    if policed
        && !parts.headers.contains_key(CACHE_CONTROL)
        && let Some(policy) = policy_for(config, &parts.headers)
    {
        parts
            .headers
            .insert(CACHE_CONTROL, policy.value(credentials).clone());
    }
    if !parts.status.is_success() {
        return Response::from_parts(parts, CacheBody::passed(body));
    }
    if !parts.headers.contains_key(ETAG)
        && let Some(value) = known.as_ref().and_then(EntityTag::header_value)
    {
        parts.headers.insert(ETAG, value);
    }
    let mut etag = parts
        .headers
        .get(ETAG)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| EntityTag::parse(text).ok());
    let last_modified = parts
        .headers
        .get(LAST_MODIFIED)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| httpdate::parse_http_date(text).ok());
    // Only a full representation is hashed: a 206's bytes are a part, whose hash is no tag of
    // the whole (Range and If-Range are the handler's).
    let hashable = etag.is_none()
        && parts.status == StatusCode::OK
        && !parts.headers.contains_key(ETAG)
        && *method != Method::HEAD
        && config
            .max_hashed_body
            .zip(body.size_hint().exact())
            .is_some_and(|(max, length)| length <= max);
    let body = if hashable {
        match body.collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                etag = hash_tag(&bytes);
                config.metrics.hashed.increment();
                if let Some(value) = etag.as_ref().and_then(EntityTag::header_value) {
                    parts.headers.insert(ETAG, value);
                }
                CacheBody::buffered(bytes)
            }
            Err(error) => {
                return Response::from_parts(parts, CacheBody::failed(error.into()));
            }
        }
    } else {
        CacheBody::passed(body)
    };
    // A write's preconditions must hold before it runs: after the handler, only reads are
    // answered (a write's are, with `validator`, before it).
    if *method != Method::GET && *method != Method::HEAD {
        return Response::from_parts(parts, body);
    }
    // A 2xx means a current representation exists (`*` matches it), validators or not.
    let validators = Validators {
        etag: etag.as_ref(),
        last_modified,
    };
    let decided = evaluate(method, conditions, Some(&validators));
    // The length of the body a 304 does not send: known for a read body, or by its hint.
    let unsent = body.exact_len();
    refuse(config, decided, &parts.headers, unsent)
        .unwrap_or_else(|| Response::from_parts(parts, body))
}

/// The strong tag of a body: its XXH3 hash (the same in every instance and after restarts).
pub(super) fn hash_tag(bytes: &[u8]) -> Option<EntityTag> {
    let hash = xxhash_rust::xxh3::xxh3_64(bytes);
    // Hex digits are entity-tag characters: the tag is always made.
    EntityTag::strong(format!("{hash:016x}")).ok()
}

/// The 304 or 412 that `decided` calls for (`None`: proceed), counted: a 304 carries the
/// listed headers of `headers` and no body, and saves `unsent` body bytes.
fn refuse<B>(
    config: &Config,
    decided: Precondition,
    headers: &HeaderMap,
    unsent: u64,
) -> Option<Response<CacheBody<B>>> {
    let mut answer = Response::new(CacheBody::empty());
    match decided {
        Precondition::Proceed => return None,
        Precondition::NotModified => {
            config.metrics.not_modified.increment();
            config.metrics.bytes_saved.add(unsent);
            *answer.status_mut() = StatusCode::NOT_MODIFIED;
            for name in NOT_MODIFIED_HEADERS {
                for value in headers.get_all(&name) {
                    answer.headers_mut().append(name.clone(), value.clone());
                }
            }
        }
        Precondition::Failed => {
            config.metrics.precondition_failed.increment();
            *answer.status_mut() = StatusCode::PRECONDITION_FAILED;
        }
    }
    Some(answer)
}

fn policy_for<'a>(config: &'a Config, headers: &HeaderMap) -> Option<&'a Policy> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase);
    content_type
        .and_then(|content_type| {
            config
                .policies
                .iter()
                .find(|(prefix, _)| content_type.starts_with(prefix.as_str()))
                .map(|(_, policy)| policy)
        })
        .or(config.default_policy.as_ref())
}
