//! A body stream of given chunks, of unknown length (as a streaming handler's is).

use std::convert::Infallible;

use bytes::Bytes;

/// A stream that yields `chunks` in order, then ends.
pub(crate) fn chunks(
    chunks: Vec<Bytes>,
) -> impl futures_core::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    struct Chunks(std::vec::IntoIter<Bytes>);
    impl futures_core::Stream for Chunks {
        type Item = Result<Bytes, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(Ok))
        }
    }
    Chunks(chunks.into_iter())
}
