//! [`CacheBody`]: the response body of the HTTP layers.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::BoxError;

pin_project_lite::pin_project! {
    /// The body of a response from this module's layers: the handler's, passed through; its
    /// bytes, read whole (to be hashed, or from the response cache); or none (304, 412).
    pub struct CacheBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProjection]
    enum Kind<B> {
        Passed { #[pin] body: B },
        Buffered { bytes: Option<Bytes> },
        Failed { error: Option<BoxError> },
    }
}

impl<B> CacheBody<B> {
    pub(super) fn passed(body: B) -> Self {
        Self {
            kind: Kind::Passed { body },
        }
    }

    pub(super) fn buffered(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Buffered {
                bytes: (!bytes.is_empty()).then_some(bytes),
            },
        }
    }

    pub(super) fn empty() -> Self {
        Self {
            kind: Kind::Buffered { bytes: None },
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Self {
            kind: Kind::Failed { error: Some(error) },
        }
    }
}

impl<B: Body> CacheBody<B> {
    /// The body's length when it is known: read whole, or passed with an exact size hint.
    pub(super) fn exact_len(&self) -> u64 {
        match &self.kind {
            Kind::Buffered { bytes } => bytes.as_ref().map_or(0, |bytes| bytes.len() as u64),
            Kind::Passed { body } => body.size_hint().exact().unwrap_or(0),
            Kind::Failed { .. } => 0,
        }
    }
}

impl<B> fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheBody").finish_non_exhaustive()
    }
}

impl<B> Body for CacheBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProjection::Passed { body } => body.poll_frame(cx).map_err(Into::into),
            KindProjection::Buffered { bytes } => {
                Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes))))
            }
            KindProjection::Failed { error } => Poll::Ready(error.take().map(Err)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passed { body } => body.is_end_stream(),
            Kind::Buffered { bytes } => bytes.is_none(),
            Kind::Failed { error } => error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passed { body } => body.size_hint(),
            Kind::Buffered { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            Kind::Failed { .. } => SizeHint::default(),
        }
    }
}
