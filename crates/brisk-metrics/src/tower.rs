//! A tower [`Layer`] that records request latency by route and status
//! class into any [`Recorder`].
//!
//! Each request lands in the histogram `<metric>{route="…",status="2xx"}`; the status is
//! `1xx`…`5xx`, `error` when the inner service fails, or `cancelled` when the response
//! future is dropped first (the client went away). The route comes from a function of the
//! request head; by default the URI path, which can have unbounded values, so prefer the
//! matched route pattern, e.g. axum's `MatchedPath`:
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
//!         .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned())
//! });
//! // route_layer: runs after routing, so MatchedPath is known.
//! let app: Router = Router::new().route("/users/{id}", get(|| async { "hi" })).route_layer(layer);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Whatever the route function returns, the registry's label-set cap bounds the series.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response, request::Parts};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{
    error::Result,
    key::Key,
    recorder::{Histogram, Recorder, Unit},
};

type RouteFn = Arc<dyn Fn(&Parts) -> String + Send + Sync>;

/// Records request latency by route and status class; see the [module docs](self).
#[derive(Clone)]
pub struct LatencyLayer {
    shared: Arc<Shared>,
    route: RouteFn,
}

struct Shared {
    recorder: Box<dyn Recorder>,
    metric: Key,
    handles: RwLock<HashMap<(String, &'static str), Histogram>>,
}

impl fmt::Debug for LatencyLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatencyLayer")
            .field("metric", &self.shared.metric.name())
            .finish_non_exhaustive()
    }
}

impl LatencyLayer {
    /// Records into histogram `metric` (in seconds) of `recorder`, with the URI path as route.
    ///
    /// # Errors
    /// [`Error::InvalidMetricName`](crate::Error::InvalidMetricName) for an invalid name.
    pub fn new(recorder: impl Recorder + 'static, metric: &str) -> Result<Self> {
        Ok(Self {
            shared: Arc::new(Shared {
                recorder: Box::new(recorder),
                metric: Key::new(metric.to_owned())?,
                handles: RwLock::default(),
            }),
            route: Arc::new(|head: &Parts| head.uri.path().to_owned()),
        })
    }

    /// Derives the `route` label from the request head (method, URI, headers, extensions).
    pub fn route_with(mut self, route: impl Fn(&Parts) -> String + Send + Sync + 'static) -> Self {
        self.route = Arc::new(route);
        self
    }
}

impl Shared {
    fn record(&self, route: String, status: &'static str, started: Instant) {
        let elapsed = started.elapsed();
        let cached = self
            .handles
            .read()
            .expect("lock")
            .get(&(route.clone(), status))
            .cloned();
        let histogram = match cached {
            Some(h) => h,
            None => {
                let key = self
                    .metric
                    .clone()
                    .with_label("route", route.clone())
                    .and_then(|k| k.with_label("status", status));
                let h = match key {
                    Ok(key) => self.recorder.histogram(&key, Unit::Seconds),
                    // The metric name was validated and both label names are fixed and valid.
                    Err(_) => Histogram::noop(Unit::Seconds),
                };
                self.handles
                    .write()
                    .expect("lock")
                    .entry((route, status))
                    .or_insert(h)
                    .clone()
            }
        };
        histogram.record_duration(elapsed);
    }
}

fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

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
        let route = (self.layer.route)(&head);
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

struct Pending {
    shared: Arc<Shared>,
    route: String,
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
                p.shared.record(p.route, "cancelled", p.started);
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
                Err(_) => "error",
            };
            p.shared.record(p.route, status, p.started);
        }
        Poll::Ready(output)
    }
}
