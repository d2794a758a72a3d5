use std::{
    fmt,
    future::{Future, poll_fn},
    pin::{Pin, pin},
    sync::Arc,
    task::{Context, Poll},
};

use brisk_metrics::Recorder;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};

use super::into_bytes;
use crate::{
    BoxError, Decoder, Encoding, Error,
    metrics::{Direction, Metrics},
};

/// Decodes request bodies sent with a `Content-Encoding`, refusing bombs.
///
/// - A body whose decoded size would pass the limit (default 2 MiB, like axum's body limit) is
///   answered **413 Payload Too Large** as soon as decoding crosses the limit, without calling
///   the inner service. Memory is bounded by the limit whatever the compression ratio; the
///   compressed body is held to the same limit.
/// - An unknown or stacked coding (`Content-Encoding: gzip, br`) is answered **415 Unsupported
///   Media Type** with an `Accept-Encoding` header listing what is accepted (RFC 9110 §15.5.16).
/// - Corrupt or truncated data is answered **400 Bad Request**.
/// - An empty body is an empty body, whatever its `Content-Encoding`: some clients set the
///   header on every request, bodiless ones included, and zero bytes hold no data to misread.
/// - Otherwise the inner service gets the decoded body with `Content-Encoding` removed and
///   `Content-Length` set to the decoded size. Requests without a coding pass through
///   untouched, streamed.
///
/// Decoding buffers the body (up to the limit) before calling the inner service, so that a bomb
/// becomes a 413 rather than an error halfway through a handler.
///
/// ```
/// use axum::{Router, routing::post};
/// use brisk_compress::tower::DecompressionLayer;
///
/// let app: Router = Router::new()
///     .route("/events", post(|body: String| async move { body.len().to_string() }))
///     .layer(DecompressionLayer::new().limit(8 << 20));
/// ```
#[derive(Debug, Clone)]
pub struct DecompressionLayer {
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    limit: u64,
    encodings: Vec<Encoding>,
    metrics: Metrics,
}

impl Default for DecompressionLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl DecompressionLayer {
    /// Accepts every coding, with a 2 MiB limit.
    #[must_use]
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                limit: 2 << 20,
                encodings: vec![
                    Encoding::Gzip,
                    Encoding::Deflate,
                    Encoding::Brotli,
                    Encoding::Zstd,
                ],
                metrics: Metrics::noop(),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        // Layers are configured before they are shared; clone-on-write keeps `Clone` cheap.
        Arc::make_mut(&mut self.config)
    }

    /// The most bytes a body may decode to, and the most compressed bytes read.
    #[must_use]
    pub fn limit(mut self, bytes: u64) -> Self {
        self.config().limit = bytes;
        self
    }

    /// The codings accepted (identity always is).
    #[must_use]
    pub fn encodings(mut self, encodings: impl IntoIterator<Item = Encoding>) -> Self {
        self.config().encodings = encodings
            .into_iter()
            .filter(|&e| e != Encoding::Identity)
            .collect();
        self
    }

    /// Reports bytes in/out and ratios to `recorder`, labelled `name`.
    #[must_use]
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.config().metrics = Metrics::new(recorder, name);
        self
    }
}

impl<S> tower_layer::Layer<S> for DecompressionLayer {
    type Service = Decompression<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Decompression {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The service made by [`DecompressionLayer`].
#[derive(Debug, Clone)]
pub struct Decompression<S> {
    inner: S,
    config: Arc<Config>,
}

/// The request body [`Decompression`] hands on: the original, or the decoded bytes.
pub struct DecodedBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Passthrough(Pin<Box<B>>),
    Decoded(Option<Bytes>),
}

impl<B> fmt::Debug for DecodedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Passthrough(_) => f.write_str("DecodedBody::Passthrough"),
            Kind::Decoded(bytes) => f
                .debug_struct("DecodedBody::Decoded")
                .field("len", &bytes.as_ref().map_or(0, Bytes::len))
                .finish(),
        }
    }
}

impl<B> Body for DecodedBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.kind {
            Kind::Passthrough(body) => body.as_mut().poll_frame(cx).map(|frame| {
                frame.map(|frame| {
                    frame
                        .map(|frame| frame.map_data(into_bytes))
                        .map_err(Into::into)
                })
            }),
            Kind::Decoded(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough(body) => body.is_end_stream(),
            Kind::Decoded(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough(body) => body.size_hint(),
            Kind::Decoded(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// Why a request was refused before reaching the service.
enum Refusal {
    TooLarge,
    Unsupported,
    Bad,
}

impl Refusal {
    fn response<B: Default>(self, config: &Config) -> Response<B> {
        let mut response = Response::new(B::default());
        *response.status_mut() = match self {
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Unsupported => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Bad => StatusCode::BAD_REQUEST,
        };
        if matches!(self, Refusal::Unsupported) {
            let accepted: Vec<&str> = config
                .encodings
                .iter()
                .map(|e| e.as_str())
                .chain(["identity"])
                .collect();
            if let Ok(value) = HeaderValue::from_str(&accepted.join(", ")) {
                response
                    .headers_mut()
                    .insert(header::ACCEPT_ENCODING, value);
            }
        }
        response
    }
}

/// The coding of a request body: `Ok(None)` for none (or only identity).
fn content_coding(
    headers: &http::HeaderMap,
    accepted: &[Encoding],
) -> Result<Option<Encoding>, Refusal> {
    let mut codings = headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty() && !token.eq_ignore_ascii_case(b"identity"));
    let Some(first) = codings.next() else {
        return Ok(None);
    };
    if codings.next().is_some() {
        return Err(Refusal::Unsupported);
    }
    match Encoding::from_token(first) {
        Some(encoding) if accepted.contains(&encoding) => Ok(Some(encoding)),
        _ => Err(Refusal::Unsupported),
    }
}

/// Reads and decodes the whole body, stopping at the limit.
async fn decode_body<B>(body: B, encoding: Encoding, config: &Config) -> Result<Bytes, Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    let mut decoder = Decoder::new(encoding, config.limit);
    let mut decoded = Vec::new();
    while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let Ok(data) = frame.map_err(|_| Refusal::Bad)?.into_data() else {
            continue;
        };
        let data = into_bytes(data);
        if decoder.bytes_in() + data.len() as u64 > config.limit {
            return Err(Refusal::TooLarge);
        }
        decoder.write(&data).map_err(refusal)?;
        decoded.extend_from_slice(&decoder.take());
    }
    if decoder.bytes_in() == 0 {
        return Ok(Bytes::new());
    }
    decoder.finish().map_err(refusal)?;
    decoded.extend_from_slice(&decoder.take());
    config.metrics.record(
        Direction::Decompress,
        encoding,
        decoder.bytes_in(),
        decoder.bytes_out(),
    );
    Ok(Bytes::from(decoded))
}

fn refusal(error: Error) -> Refusal {
    if error.is_too_large() {
        Refusal::TooLarge
    } else {
        Refusal::Bad
    }
}

impl<S, ReqB, ResB> tower_service::Service<Request<ReqB>> for Decompression<S>
where
    S: tower_service::Service<Request<DecodedBody<ReqB>>, Response = Response<ResB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ReqB::Data: Send,
    ReqB::Error: Into<BoxError>,
    ResB: Default + Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResB>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let config = self.config.clone();
        let encoding = match content_coding(request.headers(), &config.encodings) {
            Ok(Some(encoding)) => encoding,
            Ok(None) => {
                let request = request.map(|body| DecodedBody {
                    kind: Kind::Passthrough(Box::pin(body)),
                });
                return Box::pin(self.inner.call(request));
            }
            Err(refusal) => return Box::pin(std::future::ready(Ok(refusal.response(&config)))),
        };
        // The ready service goes into the future; a fresh clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let decoded = match decode_body(body, encoding, &config).await {
                Ok(decoded) => decoded,
                Err(refusal) => return Ok(refusal.response(&config)),
            };
            parts.headers.remove(header::CONTENT_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(decoded.len()));
            let body = DecodedBody {
                kind: Kind::Decoded(Some(decoded)),
            };
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}
