//! A tower [`Layer`] that records request latency by route and status
//! class into any [`Recorder`].
//!
//! Each request lands in the histogram `<metric>{route="…",status="2xx"}`; the status is
//! `1xx`…`5xx`, `error` when the inner service fails, or `cancelled` when the response
//! future is dropped first (the client went away). The route comes from a function of the
//! request head. By default every request has the route `all`: the raw URI path is outside
//! input (a scanner sends a new one with each request), so it is never a label unless you say
//! so. Give the matched route pattern, e.g. axum's `MatchedPath`, with no allocation:
//!
//! ```
//! use axum::{Router, extract::MatchedPath, routing::get};
//! use brisk_metrics::{Registry, tower::LatencyLayer};
//!
//! # fn main() -> Result<(), brisk_metrics::Error> {
//! let registry = Registry::new();
//! let layer = LatencyLayer::new(registry.clone(), "http_request_seconds")?.route_with(|head| {
//!     head.extensions
//!         .get::<MatchedPath>()
//!         .map_or("unmatched", MatchedPath::as_str)
//!         .into()
//! });
//! // route_layer: runs after routing, so MatchedPath is known.
//! let app: Router = Router::new().route("/users/{id}", get(|| async { "hi" })).route_layer(layer);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! **Bounded**: the layer keeps one entry per distinct route, at most
//! [`max_routes`](LatencyLayer::max_routes) of them (141 by default, so that every series of
//! those routes and of `other`, 7 status labels each, fits in a default registry's 1000
//! label sets per name); requests on any further route are recorded under the route `other`.
//! A route name longer than [`MAX_ROUTE_LEN`](LatencyLayer::MAX_ROUTE_LEN) (128 bytes) is cut
//! to that length with a hash suffix, so each kept route costs a bounded amount of memory and
//! scrape text. So even a route function that returns outside input cannot grow the process.
//! A route takes
//! its place on its first request, whatever the answer, first come first served: see
//! [`max_routes`](LatencyLayer::max_routes).

use std::{
    borrow::Cow,
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    task::{Context, Poll},
    time::Instant,
};

#[cfg(feature = "registry")]
use http::{Method, StatusCode, header};
use http::{Request, Response, request::Parts};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    error::Result,
    key::{DEFAULT_MAX_LABEL_SETS, Key},
    recorder::{Histogram, MetricKind, Recorder, Unit},
};
#[cfg(feature = "registry")]
use crate::{registry::Registry, snapshot::PROMETHEUS_CONTENT_TYPE};

type RouteFn = Arc<dyn for<'a> Fn(&'a Parts) -> Cow<'a, str> + Send + Sync>;

/// The route label of every request when no route function is given.
const DEFAULT_ROUTE: &str = "all";
/// The route label of requests beyond `max_routes` distinct routes.
const OTHER_ROUTE: &str = "other";
/// The status labels, in the order of [`Route::histograms`].
const STATUSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error", "cancelled"];
/// Distinct routes kept by default: as many as fit, with `other` and every status class, in
/// a default registry's label sets per name (141 × 7 + 7 = 994 ≤ 1000).
const DEFAULT_MAX_ROUTES: usize = LatencyLayer::routes_fitting(DEFAULT_MAX_LABEL_SETS);
const _: () =
    assert!((DEFAULT_MAX_ROUTES + 1) * LatencyLayer::SERIES_PER_ROUTE <= DEFAULT_MAX_LABEL_SETS);

/// Records request latency by route and status class; see the [module docs](self).
#[derive(Clone)]
pub struct LatencyLayer {
    shared: Arc<Shared>,
    route: RouteFn,
}

struct Shared {
    recorder: Arc<dyn Recorder>,
    metric: Key,
    max_routes: usize,
    routes: RwLock<HashMap<Box<str>, Arc<Route>>>,
    other: Arc<Route>,
}

/// One route's histograms, registered on first use.
struct Route {
    name: Box<str>,
    histograms: [OnceLock<Histogram>; STATUSES.len()],
}

impl Route {
    fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            histograms: Default::default(),
        })
    }
}

impl fmt::Debug for LatencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyLayer")
            .field("metric", &self.shared.metric.name())
            .field("max_routes", &self.shared.max_routes)
            .finish_non_exhaustive()
    }
}

impl LatencyLayer {
    /// Records into histogram `metric` (in seconds) of `recorder`, every request under the
    /// route `all` until [`route_with`](Self::route_with) says otherwise.
    ///
    /// # Errors
    /// [`Error::InvalidMetricName`](crate::Error::InvalidMetricName) for an invalid name.
    pub fn new(recorder: impl Recorder + 'static, metric: &str) -> Result<Self> {
        recorder.describe(
            metric,
            MetricKind::Histogram(Unit::Seconds),
            "Time from a request's arrival to its response head, by route and status class.",
        );
        Ok(Self {
            shared: Arc::new(Shared {
                recorder: Arc::new(recorder),
                metric: Key::new(metric.to_owned())?,
                max_routes: DEFAULT_MAX_ROUTES,
                routes: RwLock::default(),
                other: Route::new(OTHER_ROUTE),
            }),
            route: Arc::new(|_: &Parts| Cow::Borrowed(DEFAULT_ROUTE)),
        })
    }

    /// Derives the `route` label from the request head (method, URI, headers, extensions).
    /// Return a borrowed `&str` (`.into()`) where you can: a route already known costs no
    /// allocation.
    pub fn route_with(
        mut self,
        route: impl for<'a> Fn(&'a Parts) -> Cow<'a, str> + Send + Sync + 'static,
    ) -> Self {
        self.route = Arc::new(route);
        self
    }

    /// The longest `route` label kept, in bytes. A longer name returned by the route
    /// function is cut at a character boundary to at most 111 bytes and given the suffix
    /// `~` and 16 hex digits of a hash (64-bit FNV-1a) of the whole name, so that names
    /// that differ only past the cut stay apart (unless their hashes collide) and a name
    /// always gets the same label. Outside input (a raw path of tens of KiB) then costs at
    /// most this much per route, in memory and on every line of a scrape.
    pub const MAX_ROUTE_LEN: usize = 128;

    /// The series one route can have: one per status label (`1xx` … `5xx`, `error`,
    /// `cancelled`). The layer records no other label (no method).
    pub const SERIES_PER_ROUTE: usize = STATUSES.len();

    /// The most routes whose every series, and those of `other`, fit in `max_label_sets`
    /// label sets per metric name (a [`RegistryBuilder::max_label_sets`]): one less than
    /// `max_label_sets / 7`, and 0 below 14.
    ///
    #[cfg_attr(
        feature = "registry",
        doc = "[`RegistryBuilder::max_label_sets`]: crate::RegistryBuilder::max_label_sets"
    )]
    #[cfg_attr(
        not(feature = "registry"),
        doc = "[`RegistryBuilder::max_label_sets`]: self \"needs the registry feature\""
    )]
    pub const fn routes_fitting(max_label_sets: usize) -> usize {
        (max_label_sets / Self::SERIES_PER_ROUTE).saturating_sub(1)
    }

    /// The most distinct routes kept; requests on routes beyond them are recorded under
    /// `other`. 0 records every request under `other`.
    ///
    /// Default 141: with `other`, (141 + 1) × 7 = 994 series, within a default
    /// `Registry`'s 1000 label sets per name, so no series of a kept
    /// route ever falls into the registry's `overflow` series. With a registry of another
    /// `max_label_sets`, use [`routes_fitting`](Self::routes_fitting) of it.
    ///
    /// **How a route is counted**: a route takes one of the places on its first request,
    /// whatever that request's answer (a 404 too), and keeps it for the life of the layer.
    /// Routes are admitted first come, first served: with a route function that returns
    /// outside input (the raw path), junk seen first takes the places and later real routes
    /// land in `other`. Return a route pattern (axum's `MatchedPath`) and a fixed name for
    /// unmatched requests, so that the routes counted are the application's.
    pub fn max_routes(mut self, routes: usize) -> Self {
        // A fresh table of routes with the new bound; clones made before keep theirs.
        self.shared = Arc::new(Shared {
            recorder: Arc::clone(&self.shared.recorder),
            metric: self.shared.metric.clone(),
            max_routes: routes,
            routes: RwLock::default(),
            other: Route::new(OTHER_ROUTE),
        });
        self
    }
}

/// The `route` label of the route function's `name`: itself up to
/// [`LatencyLayer::MAX_ROUTE_LEN`] bytes, else cut and suffixed with a hash of the whole.
fn bounded_route(name: &str) -> Cow<'_, str> {
    /// `~` and 16 hex digits.
    const SUFFIX_LEN: usize = 17;
    if name.len() <= LatencyLayer::MAX_ROUTE_LEN {
        return Cow::Borrowed(name);
    }
    let mut cut = LatencyLayer::MAX_ROUTE_LEN - SUFFIX_LEN;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    // 64-bit FNV-1a: stable across processes and releases, so a route keeps its label.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Cow::Owned(format!("{}~{hash:016x}", &name[..cut]))
}

impl Shared {
    /// The entry of route `name` (cut to its label, see [`bounded_route`]), made on first
    /// use while there is room, else `other`.
    fn route(&self, name: &str) -> Arc<Route> {
        let name = &*bounded_route(name);
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(route) = routes.get(name) {
            return Arc::clone(route);
        }
        if routes.len() >= self.max_routes {
            return Arc::clone(&self.other);
        }
        drop(routes);
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if routes.len() >= self.max_routes && !routes.contains_key(name) {
            return Arc::clone(&self.other);
        }
        Arc::clone(
            routes
                .entry(name.into())
                .or_insert_with(|| Route::new(name)),
        )
    }

    fn record(&self, route: &Route, status: usize, started: Instant) {
        let elapsed = started.elapsed();
        let histogram = route.histograms[status].get_or_init(|| {
            let key = self
                .metric
                .clone()
                .with_label("route", route.name.to_string())
                .and_then(|k| k.with_label("status", STATUSES[status]));
            match key {
                Ok(key) => self.recorder.histogram(&key, Unit::Seconds),
                // The metric name was validated and both label names are fixed and valid.
                Err(_) => Histogram::noop(Unit::Seconds),
            }
        });
        histogram.record_duration(elapsed);
    }
}

/// The index in [`STATUSES`] of `status`'s class.
fn status_class(status: http::StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

const ERROR: usize = 5;
const CANCELLED: usize = 6;

impl<S> Layer<S> for LatencyLayer {
    type Service = LatencyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LatencyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`LatencyLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct LatencyService<S> {
    inner: S,
    layer: LatencyLayer,
}

impl<S, B, ResB> Service<Request<B>> for LatencyService<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (head, body) = request.into_parts();
        let route = self.layer.shared.route(&(self.layer.route)(&head));
        ResponseFuture {
            inner: self.inner.call(Request::from_parts(head, body)),
            pending: Some(Pending {
                shared: self.layer.shared.clone(),
                route,
                started: Instant::now(),
            }),
        }
    }
}

/// A tower [`Service`] that answers `GET` and `HEAD` with a [`Registry`]'s Prometheus text
/// exposition, served with its media type ([`PROMETHEUS_CONTENT_TYPE`]) and
/// `Cache-Control: no-store` (so no cache between the service and the scraper keeps an old
/// one); other methods get `405 Method Not Allowed`.
///
/// ```
/// use axum::Router;
/// use brisk_metrics::{Registry, tower::PrometheusService};
///
/// let registry = Registry::new();
/// let app: Router = Router::new().route_service("/metrics", PrometheusService::new(registry));
/// # let _ = app;
/// ```
#[cfg(feature = "registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "registry")))]
#[derive(Debug, Clone)]
pub struct PrometheusService {
    registry: Registry,
}

#[cfg(feature = "registry")]
impl PrometheusService {
    /// Serves `registry`'s series.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

#[cfg(feature = "registry")]
impl<B> Service<Request<B>> for PrometheusService {
    type Response = Response<String>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<std::result::Result<Response<String>, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = request.method();
        let response = if method == Method::GET || method == Method::HEAD {
            let text = self.registry.prometheus_text();
            Response::builder()
                .header(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)
                .header(header::CACHE_CONTROL, "no-store")
                .body(text)
        } else {
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .header(header::ALLOW, "GET, HEAD")
                .body(String::new())
        };
        // Every header above is a valid constant.
        std::future::ready(Ok(response.unwrap_or_default()))
    }
}

struct Pending {
    shared: Arc<Shared>,
    route: Arc<Route>,
    started: Instant,
}

pin_project! {
    /// The response future of [`LatencyService`]: records when it completes or is dropped.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(p) = this.project().pending.take() {
                p.shared.record(&p.route, CANCELLED, p.started);
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = std::task::ready!(this.inner.poll(cx));
        if let Some(p) = this.pending.take() {
            let status = match &output {
                Ok(response) => status_class(response.status()),
                Err(_) => ERROR,
            };
            p.shared.record(&p.route, status, p.started);
        }
        Poll::Ready(output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_route_name_is_cut_at_a_char_boundary_with_a_hash_of_the_whole() {
        assert_eq!(bounded_route("/users/{id}"), "/users/{id}");
        let exact = "r".repeat(LatencyLayer::MAX_ROUTE_LEN);
        assert_eq!(
            bounded_route(&exact),
            exact.as_str(),
            "128 bytes are kept whole"
        );

        // Two-byte characters: byte 111 falls inside one.
        let long = "é".repeat(200);
        let cut = bounded_route(&long);
        assert!(cut.len() <= LatencyLayer::MAX_ROUTE_LEN, "{}", cut.len());
        let (kept, hash) = cut.rsplit_once('~').unwrap();
        assert_eq!(kept, "é".repeat(55));
        assert_eq!(hash.len(), 16);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(bounded_route(&long), cut, "the same name, the same label");
        let other = format!("{long}!");
        assert_ne!(
            bounded_route(&other),
            cut,
            "a difference past the cut shows"
        );
    }
}
