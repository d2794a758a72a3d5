use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use brisk_metrics::Recorder;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};

use super::into_bytes;
use crate::{
    AcceptEncoding, BoxError, Encoder, Encoding, Error, Policy,
    metrics::{Direction, Metrics, Skip},
    stream::{Flush, Pump},
};

/// Compresses responses per a [`Policy`] and the request's `Accept-Encoding`.
///
/// For each response it:
/// - leaves alone anything already encoded (a `Content-Encoding` other than identity), marked
///   `Cache-Control: no-transform`, partial (`206`, `Content-Range`), bodiless (`1xx`, `204`),
///   or of a type the policy skips;
/// - adds `Vary: Accept-Encoding` to every response whose encoding depends on the header, so
///   caches keep one copy per coding;
/// - sends bodies below the minimum size as they are, when the size is known;
/// - otherwise compresses with the negotiated coding, removes `Content-Length` (the body is
///   streamed) and `Accept-Ranges`, sets `Content-Encoding`, and weakens a strong `ETag`
///   (the bytes differ from the identity representation);
/// - flushes whenever the inner body has nothing ready, so server-sent events and NDJSON are
///   never held back, while a body that is all there is compressed in one go;
/// - answers `HEAD` with the headers `GET` gets (`Content-Encoding`, `Vary`, the weakened
///   `ETag`, no `Content-Length`) and no body, as RFC 9110 §9.3.2 asks; the size `GET` would
///   send is read from `Content-Length`, which axum sets on `HEAD` responses;
/// - gives a `304 Not Modified` the `Vary` and `ETag` of the `200` it validates (RFC 9110
///   §15.4.5), so a cache refreshing its copy keeps the weak validator. The layer cannot see
///   that `200`: it judges the 304 by its own `Content-Type` and `Content-Length` when the
///   handler sends them, else as a compressible body of unknown size, and the `ETag` follows the
///   form (weak or strong) in which the request's `If-None-Match` names it.
///
/// A client that accepts no offered coding gets identity, as RFC 9110 advises.
///
/// ```
/// use axum::{Router, routing::get};
/// use brisk_compress::{Policy, tower::{CompressionLayer}};
///
/// let app: Router = Router::new()
///     .route("/users", get(|| async { "[...]" }))
///     .layer(CompressionLayer::new(Policy::default()));
/// ```
#[derive(Debug, Clone)]
pub struct CompressionLayer {
    policy: Arc<Policy>,
    metrics: Metrics,
}

impl Default for CompressionLayer {
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

impl CompressionLayer {
    /// Compresses per `policy`.
    #[must_use]
    pub fn new(policy: Policy) -> Self {
        Self {
            policy: Arc::new(policy),
            metrics: Metrics::noop(),
        }
    }

    /// Reports bytes in/out, ratios and skips to `recorder`, labelled `name`.
    #[must_use]
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = Metrics::new(recorder, name);
        self
    }
}

impl<S> tower_layer::Layer<S> for CompressionLayer {
    type Service = Compression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Compression {
            inner,
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`CompressionLayer`].
#[derive(Debug, Clone)]
pub struct Compression<S> {
    inner: S,
    policy: Arc<Policy>,
    metrics: Metrics,
}

impl<S, ReqB, ResB> tower_service::Service<Request<ReqB>> for Compression<S>
where
    S: tower_service::Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CompressionBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let accept = AcceptEncoding::from_headers(request.headers());
        let negotiated = accept
            .negotiate(self.policy.encodings())
            .unwrap_or(Encoding::Identity);
        let head = request.method() == Method::HEAD;
        // Only read if the response is a 304: which representation the client holds.
        let held = Held::from_request(request.headers());
        ResponseFuture {
            inner: self.inner.call(request),
            negotiated,
            head,
            held,
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Compression`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        negotiated: Encoding,
        head: bool,
        held: Held,
        policy: Arc<Policy>,
        metrics: Metrics,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<CompressionBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let (mut parts, body) = response.into_parts();
        let encoding = decide(
            &mut parts,
            &body,
            *this.negotiated,
            *this.head,
            this.held,
            this.policy,
            this.metrics,
        );
        let body = match encoding {
            None => CompressionBody::passthrough(body),
            // The headers are those of the compressed GET; there is no body to compress.
            Some(_) if *this.head => CompressionBody::bodiless(body),
            Some(encoding) => {
                let level = this.policy.level(encoding);
                // A known size lets zstd fit its tables to the body (3× faster on small ones).
                let encoder = match body.size_hint().exact() {
                    Some(size) => Encoder::with_size(encoding, level, size),
                    None => Encoder::new(encoding, level),
                };
                CompressionBody::compressing(body, encoder, this.metrics.clone())
            }
        };
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// Applies the policy to a response head: the coding to compress with, if any, with the
/// headers already adjusted for it. For `HEAD` the headers are those `GET` gets (RFC 9110
/// §9.3.2), and the caller sends no body.
fn decide<B: Body>(
    parts: &mut http::response::Parts,
    body: &B,
    negotiated: Encoding,
    head: bool,
    held: &Held,
    policy: &Policy,
    metrics: &Metrics,
) -> Option<Encoding> {
    let headers = &mut parts.headers;
    let status = parts.status;
    if status == StatusCode::NOT_MODIFIED {
        not_modified(headers, negotiated, held, policy);
        return None;
    }
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return None;
    }
    if is_encoded(headers) || has_no_transform(headers) {
        metrics.skipped(Skip::Encoded);
        return None;
    }
    if !policy.compresses_type(content_type(headers)) {
        metrics.skipped(Skip::ContentType);
        return None;
    }
    // From here on the representation depends on Accept-Encoding.
    add_vary(headers);
    // A HEAD response's body is empty (or dropped unread): its Content-Length, which axum sets
    // from the GET body, tells the size GET would send.
    let hinted = body.size_hint().exact();
    let size = if head {
        content_length(headers).or(hinted.filter(|&size| size > 0))
    } else {
        hinted.or_else(|| content_length(headers))
    };
    if size.is_some_and(|size| size < policy.min_size()) {
        metrics.skipped(Skip::Small);
        return None;
    }
    if negotiated == Encoding::Identity {
        metrics.skipped(Skip::NotAccepted);
        return None;
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::ACCEPT_RANGES);
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(negotiated.as_str()),
    );
    weaken_etag(headers);
    Some(negotiated)
}

/// Gives a 304 the ETag and Vary of the 200 it validates (RFC 9110 §15.4.5), so a cache that
/// refreshes its stored response from the 304 (RFC 9111 §4.3.4) keeps the right validator.
///
/// The layer never sees that 200, so it treats the 304 as the 200 would be treated: by the
/// 304's `Content-Type` and `Content-Length` when the handler sends them (RFC 9110 allows both),
/// and otherwise as a streamed body of a compressed type. The ETag follows the client where its
/// `If-None-Match` names the validator in one form only: that is the representation it holds.
fn not_modified(headers: &mut HeaderMap, negotiated: Encoding, held: &Held, policy: &Policy) {
    if is_encoded(headers) || has_no_transform(headers) {
        return;
    }
    if let Some(content_type) = content_type(headers)
        && !policy.compresses_type(Some(content_type))
    {
        return;
    }
    add_vary(headers);
    let compressed = negotiated != Encoding::Identity
        && content_length(headers).is_none_or(|size| size >= policy.min_size());
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    let weaken = match held.form_of(etag.as_bytes()) {
        Some(Form::Weak) => true,
        Some(Form::Strong) => false,
        None => compressed,
    };
    if weaken {
        weaken_etag(headers);
    }
}

/// The entity tags of a request's `If-None-Match`, kept only while its response is pending.
#[derive(Debug, Default)]
struct Held(Vec<HeaderValue>);

/// Which form of a strong entity tag a client sent back.
enum Form {
    Weak,
    Strong,
}

impl Held {
    fn from_request(headers: &HeaderMap) -> Self {
        Self(
            headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        )
    }

    /// How the client holds the strong tag `etag` (`"x"`): as `W/"x"` only, as `"x"` only, or
    /// `None` when it names neither, both, or the tag is not strong.
    fn form_of(&self, etag: &[u8]) -> Option<Form> {
        if !etag.starts_with(b"\"") {
            return None;
        }
        let (mut weak, mut strong) = (false, false);
        for tag in self
            .0
            .iter()
            .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
            .map(<[u8]>::trim_ascii)
        {
            match tag.strip_prefix(b"W/") {
                Some(opaque) if opaque == etag => weak = true,
                None if tag == etag => strong = true,
                _ => {}
            }
        }
        match (weak, strong) {
            (true, false) => Some(Form::Weak),
            (false, true) => Some(Form::Strong),
            _ => None,
        }
    }
}

fn is_encoded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|value| !value.as_bytes().eq_ignore_ascii_case(b"identity"))
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse().ok())
}

fn has_no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|value| {
        value
            .as_bytes()
            .split(|&byte| byte == b',')
            .any(|directive| directive.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
    })
}

/// Adds `Accept-Encoding` to `Vary` unless it, or `*`, is already there.
fn add_vary(headers: &mut HeaderMap) {
    let present = headers.get_all(header::VARY).iter().any(|value| {
        value.as_bytes().split(|&byte| byte == b',').any(|name| {
            let name = name.trim_ascii();
            name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding")
        })
    });
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

/// A strong validator names exact bytes, which compression changes; a weak one still holds.
fn weaken_etag(headers: &mut HeaderMap) {
    let Some(etag) = headers.get(header::ETAG) else {
        return;
    };
    if etag.as_bytes().starts_with(b"\"") {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(weak) = HeaderValue::from_bytes(&weak) {
            headers.insert(header::ETAG, weak);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body, compressed or passed through by [`Compression`].
    #[derive(Debug)]
    pub struct CompressionBody<B> {
        #[pin]
        inner: B,
        state: Option<Box<Compressing>>,
        // The response to a HEAD that GET would compress: its headers say so, and it sends
        // nothing, not even the inner body's size.
        bodiless: bool,
    }
}

#[derive(Debug)]
struct Compressing {
    pump: Pump<Encoder>,
    trailers: Option<HeaderMap>,
    /// The inner body reported the end (or trailers); no more polling it.
    inner_done: bool,
    metrics: Metrics,
    recorded: bool,
}

impl<B> CompressionBody<B> {
    fn passthrough(inner: B) -> Self {
        Self {
            inner,
            state: None,
            bodiless: false,
        }
    }

    fn bodiless(inner: B) -> Self {
        Self {
            inner,
            state: None,
            bodiless: true,
        }
    }

    fn compressing(inner: B, encoder: Encoder, metrics: Metrics) -> Self {
        let state = Compressing {
            pump: Pump::new(encoder, Flush::WhenIdle),
            trailers: None,
            inner_done: false,
            metrics,
            recorded: false,
        };
        Self {
            inner,
            state: Some(Box::new(state)),
            bodiless: false,
        }
    }
}

impl<B> Body for CompressionBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.bodiless {
            return Poll::Ready(None);
        }
        let mut inner = this.inner;
        let Some(state) = this.state else {
            return inner.poll_frame(cx).map(|frame| {
                frame.map(|frame| {
                    frame
                        .map(|frame| frame.map_data(into_bytes))
                        .map_err(Into::into)
                })
            });
        };
        let Compressing {
            pump,
            trailers,
            inner_done,
            metrics,
            recorded,
        } = &mut **state;
        let next = pump.poll_next(cx, |cx| {
            loop {
                if *inner_done {
                    return Poll::Ready(None);
                }
                match ready!(inner.as_mut().poll_frame(cx)) {
                    None => {
                        *inner_done = true;
                    }
                    Some(Err(error)) => return Poll::Ready(Some(Err(Error::Source(error.into())))),
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => return Poll::Ready(Some(Ok(into_bytes(data)))),
                        Err(frame) => {
                            // Trailers end the data; they are sent after the compressed end.
                            if let Ok(map) = frame.into_trailers() {
                                *trailers = Some(map);
                            }
                            *inner_done = true;
                        }
                    },
                }
            }
        });
        let next = ready!(next);
        // Record as soon as the encoder is finished: a client that sees `is_end_stream` after
        // the last data frame never polls again.
        if pump.is_done() && !std::mem::replace(recorded, true) {
            let encoder = &pump.transform;
            metrics.record(
                Direction::Compress,
                encoder.encoding(),
                encoder.bytes_in(),
                encoder.bytes_out(),
            );
        }
        match next {
            Some(Ok(chunk)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            Some(Err(Error::Source(error))) => Poll::Ready(Some(Err(error))),
            Some(Err(error)) => Poll::Ready(Some(Err(Box::new(error)))),
            None => Poll::Ready(trailers.take().map(|map| Ok(Frame::trailers(map)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.bodiless {
            return true;
        }
        match &self.state {
            None => self.inner.is_end_stream(),
            Some(state) => state.pump.is_done() && state.trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.bodiless {
            // Unknown, like the compressed GET body: a size here would become a Content-Length.
            return SizeHint::default();
        }
        match &self.state {
            None => self.inner.size_hint(),
            Some(_) => SizeHint::default(),
        }
    }
}
