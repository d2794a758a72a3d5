//! `Stream<Item = Result<Bytes, _>>` and `AsyncRead` adapters over [`Encoder`] and [`Decoder`].

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use futures_core::Stream;
use tokio::io::{AsyncRead, ReadBuf};

use crate::{BoxError, Decoder, Encoder, Encoding, Error, Level, Result};

/// Input is fed to a codec in pieces of at most this size, so one small compressed chunk cannot
/// expand into a large output in one step.
const FEED: usize = 16 * 1024;
/// Output is handed on once this much is ready, even while input keeps coming.
const YIELD_AT: usize = 32 * 1024;
/// Input consumed in one poll before yielding to the executor, for sources that are always ready
/// and compress so well that no output is due.
const BUDGET: usize = 512 * 1024;
/// The read buffer of the `AsyncRead` adapters.
const READ_CHUNK: usize = 16 * 1024;

/// When a streaming encoder makes what it has compressed so far available downstream.
///
/// Flushing costs a few bytes and some ratio each time, but without it a compressor holds small
/// writes back until its buffer fills: a server-sent event or an NDJSON row would reach the
/// client seconds late or never (the failure of tower-http #292).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flush {
    /// Only when the codec's own buffers fill, and at the end. Best ratio; for bulk data only.
    Never,
    /// Whenever the source has nothing ready: bursts are compressed together, and nothing waits
    /// while the source is idle. The default.
    #[default]
    WhenIdle,
    /// After every chunk of the source, so each chunk can be decoded as soon as it arrives
    /// (one event or row per chunk).
    EveryChunk,
}

/// The operations [`Pump`] needs from an encoder or a decoder.
pub(crate) trait Transform {
    fn push(&mut self, input: &[u8]) -> Result<()>;
    fn flush(&mut self) -> Result<()>;
    fn end(&mut self) -> Result<()>;
    fn take(&mut self) -> Bytes;
    fn pending(&self) -> usize;
}

impl Transform for Encoder {
    fn push(&mut self, input: &[u8]) -> Result<()> {
        self.write(input)
    }
    fn flush(&mut self) -> Result<()> {
        Encoder::flush(self)
    }
    fn end(&mut self) -> Result<()> {
        self.finish()
    }
    fn take(&mut self) -> Bytes {
        Encoder::take(self)
    }
    fn pending(&self) -> usize {
        Encoder::pending(self)
    }
}

impl Transform for Decoder {
    fn push(&mut self, input: &[u8]) -> Result<()> {
        self.write(input)
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        self.finish()
    }
    fn take(&mut self) -> Bytes {
        Decoder::take(self)
    }
    fn pending(&self) -> usize {
        Decoder::pending(self)
    }
}

/// The state machine shared by every streaming adapter: pulls chunks from a source, pushes them
/// through a [`Transform`] and hands out what comes out, flushing as [`Flush`] says.
#[derive(Debug)]
pub(crate) struct Pump<T> {
    pub(crate) transform: T,
    flush: Flush,
    /// The part of the last source chunk not yet fed.
    input: Bytes,
    source_ended: bool,
    done: bool,
}

impl<T: Transform> Pump<T> {
    pub(crate) fn new(transform: T, flush: Flush) -> Self {
        Self {
            transform,
            flush,
            input: Bytes::new(),
            source_ended: false,
            done: false,
        }
    }

    pub(crate) fn set_flush(&mut self, flush: Flush) {
        self.flush = flush;
    }

    /// Whether the output has ended (the response body asks; only the layers use it).
    #[cfg(feature = "tower")]
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// The next output chunk. `source` is polled for input only when the pump needs it.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        mut source: impl FnMut(&mut Context<'_>) -> Poll<Option<Result<Bytes>>>,
    ) -> Poll<Option<Result<Bytes>>> {
        match self.step(cx, &mut source) {
            Poll::Ready(Some(Err(error))) => {
                self.done = true;
                Poll::Ready(Some(Err(error)))
            }
            other => other,
        }
    }

    /// What the transform has produced since the last take, if anything.
    fn produced(&mut self) -> Option<Bytes> {
        (self.transform.pending() > 0).then(|| self.transform.take())
    }

    fn step(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut impl FnMut(&mut Context<'_>) -> Poll<Option<Result<Bytes>>>,
    ) -> Poll<Option<Result<Bytes>>> {
        let mut fed = 0;
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            if !self.input.is_empty() {
                let piece = self.input.split_to(self.input.len().min(FEED));
                self.transform.push(&piece)?;
                fed += piece.len();
                let chunk_done = self.input.is_empty();
                if chunk_done && self.flush == Flush::EveryChunk {
                    self.transform.flush()?;
                    if let Some(output) = self.produced() {
                        return Poll::Ready(Some(Ok(output)));
                    }
                }
                if self.transform.pending() >= YIELD_AT {
                    return Poll::Ready(Some(Ok(self.transform.take())));
                }
                if fed >= BUDGET {
                    if let Some(output) = self.produced() {
                        return Poll::Ready(Some(Ok(output)));
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                continue;
            }
            if self.source_ended {
                self.transform.end()?;
                self.done = true;
                return Poll::Ready(self.produced().map(Ok));
            }
            match source(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.input = chunk,
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error))),
                Poll::Ready(None) => self.source_ended = true,
                Poll::Pending => {
                    if self.flush == Flush::WhenIdle {
                        self.transform.flush()?;
                    }
                    return match self.produced() {
                        Some(output) => Poll::Ready(Some(Ok(output))),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}

fn poll_source<S, E>(stream: Pin<&mut S>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes>>>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    stream
        .poll_next(cx)
        .map(|item| item.map(|chunk| chunk.map_err(|error| Error::Source(error.into()))))
}

pin_project_lite::pin_project! {
    /// Compresses a stream of byte chunks, flushing as its [`Flush`] says.
    ///
    /// ```
    /// use brisk_compress::{CompressStream, Encoding, Flush, Level, decompress};
    /// use bytes::Bytes;
    /// use futures_util::{StreamExt, stream};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), brisk_compress::Error> {
    /// let rows = stream::iter(["{\"id\":1}\n", "{\"id\":2}\n"])
    ///     .map(|row| Ok::<_, std::io::Error>(Bytes::from(row)));
    /// let mut gzipped = CompressStream::new(rows, Encoding::Gzip, Level::Default)
    ///     .flush(Flush::EveryChunk);
    /// let mut wire = Vec::new();
    /// while let Some(chunk) = gzipped.next().await {
    ///     wire.extend_from_slice(&chunk?); // the first row is decodable before the second comes
    /// }
    /// assert_eq!(decompress(Encoding::Gzip, &wire, 1024)?, b"{\"id\":1}\n{\"id\":2}\n");
    /// # Ok(())
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct CompressStream<S> {
        #[pin]
        source: S,
        pump: Pump<Encoder>,
    }
}

impl<S> CompressStream<S> {
    /// Compresses `source` with `encoding` at `level`, flushing [`Flush::WhenIdle`].
    pub fn new(source: S, encoding: Encoding, level: Level) -> Self {
        Self {
            source,
            pump: Pump::new(Encoder::new(encoding, level), Flush::default()),
        }
    }

    /// Sets when compressed output is flushed downstream.
    #[must_use]
    pub fn flush(mut self, flush: Flush) -> Self {
        self.pump.set_flush(flush);
        self
    }

    /// The encoder, for its byte counts.
    pub fn encoder(&self) -> &Encoder {
        &self.pump.transform
    }
}

impl<S, E> Stream for CompressStream<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        this.pump
            .poll_next(cx, |cx| poll_source(this.source.as_mut(), cx))
    }
}

pin_project_lite::pin_project! {
    /// Decompresses a stream of byte chunks, failing with [`Error::TooLarge`] past its limit.
    ///
    /// Output is handed on as it is decoded, in chunks of at most 32 KiB plus one codec step,
    /// so memory stays small whatever the limit.
    #[derive(Debug)]
    pub struct DecompressStream<S> {
        #[pin]
        source: S,
        pump: Pump<Decoder>,
    }
}

impl<S> DecompressStream<S> {
    /// Decodes `source` as `encoding`, refusing to produce more than `limit` bytes in all.
    pub fn new(source: S, encoding: Encoding, limit: u64) -> Self {
        Self {
            source,
            pump: Pump::new(Decoder::new(encoding, limit), Flush::Never),
        }
    }

    /// The decoder, for its byte counts.
    pub fn decoder(&self) -> &Decoder {
        &self.pump.transform
    }
}

impl<S, E> Stream for DecompressStream<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<BoxError>,
{
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        this.pump
            .poll_next(cx, |cx| poll_source(this.source.as_mut(), cx))
    }
}

pin_project_lite::pin_project! {
    /// The reading side of a pump: reads `R` in chunks and serves the transformed bytes.
    #[derive(Debug)]
    struct ReadPump<R, T> {
        #[pin]
        reader: R,
        pump: Pump<T>,
        buf: Box<[u8]>,
        out: Bytes,
    }
}

impl<R: AsyncRead, T: Transform> ReadPump<R, T> {
    fn new(reader: R, transform: T, flush: Flush) -> Self {
        Self {
            reader,
            pump: Pump::new(transform, flush),
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            out: Bytes::new(),
        }
    }

    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let mut this = self.project();
        while this.out.is_empty() {
            let next = this.pump.poll_next(cx, |cx| {
                let mut read = ReadBuf::new(this.buf);
                match this.reader.as_mut().poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(None),
                    Poll::Ready(Ok(())) => {
                        Poll::Ready(Some(Ok(Bytes::copy_from_slice(read.filled()))))
                    }
                    Poll::Ready(Err(error)) => {
                        Poll::Ready(Some(Err(Error::Source(Box::new(error)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            });
            match ready!(next) {
                Some(Ok(chunk)) => *this.out = chunk,
                Some(Err(Error::Source(error))) => {
                    return Poll::Ready(Err(match error.downcast::<std::io::Error>() {
                        Ok(io) => *io,
                        Err(other) => std::io::Error::other(other),
                    }));
                }
                Some(Err(error)) => return Poll::Ready(Err(error.into())),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = this.out.len().min(dst.remaining());
        dst.put_slice(&this.out.split_to(n));
        Poll::Ready(Ok(()))
    }
}

pin_project_lite::pin_project! {
    /// An `AsyncRead` that compresses what it reads from `R`.
    ///
    /// Errors from `R` come back unchanged; codec errors as `io::Error`s that carry an
    /// [`Error`] (`io::Error::get_ref` and `downcast_ref`).
    #[derive(Debug)]
    pub struct CompressReader<R> {
        #[pin]
        inner: ReadPump<R, Encoder>,
    }
}

impl<R: AsyncRead> CompressReader<R> {
    /// Compresses `reader` with `encoding` at `level`, flushing [`Flush::WhenIdle`].
    pub fn new(reader: R, encoding: Encoding, level: Level) -> Self {
        Self::with_flush(reader, encoding, level, Flush::default())
    }

    /// Compresses `reader`, flushing as `flush` says.
    pub fn with_flush(reader: R, encoding: Encoding, level: Level, flush: Flush) -> Self {
        Self {
            inner: ReadPump::new(reader, Encoder::new(encoding, level), flush),
        }
    }
}

impl<R: AsyncRead> AsyncRead for CompressReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

pin_project_lite::pin_project! {
    /// An `AsyncRead` that decompresses what it reads from `R`, failing with an `io::Error` of
    /// kind `InvalidData` that carries [`Error::TooLarge`] past its limit.
    #[derive(Debug)]
    pub struct DecompressReader<R> {
        #[pin]
        inner: ReadPump<R, Decoder>,
    }
}

impl<R: AsyncRead> DecompressReader<R> {
    /// Decodes `reader` as `encoding`, refusing to produce more than `limit` bytes.
    pub fn new(reader: R, encoding: Encoding, limit: u64) -> Self {
        Self {
            inner: ReadPump::new(reader, Decoder::new(encoding, limit), Flush::Never),
        }
    }
}

impl<R: AsyncRead> AsyncRead for DecompressReader<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}
