//! The synchronous engine every API in this crate runs on: push bytes in, take bytes out.

use std::{fmt, io};

use async_compression::{
    Level as CodecLevel,
    codecs::{
        BrotliDecoder, BrotliEncoder, DecodeV2, EncodeV2, GzipDecoder, GzipEncoder, ZlibDecoder,
        ZlibEncoder, brotli::params::EncoderParams as BrotliParams,
    },
    core::util::{PartialBuffer, WriteBuffer},
};
use bytes::Bytes;

use crate::{
    Encoding, Error, Level, Result,
    zstd_codec::{self, ZstdDecoder, ZstdEncoder},
};

/// The smallest window the output grows by.
const MIN_GROWTH: usize = 8 * 1024;
/// Below this share of the buffer, [`Output::take`] copies the bytes out and keeps the buffer.
const COPY_OUT_BELOW: usize = 4;

/// A growable output that hands codecs initialised windows, so no `unsafe` is needed, and that
/// stops a decoder at its limit before the memory is spent.
struct Output {
    buf: Vec<u8>,
    /// Bytes of `buf` written by the codec; the rest is zeroed spare room.
    filled: usize,
    /// Bytes produced over the whole stream, taken or not.
    produced: u64,
    /// At most this many bytes may be produced (decoders only).
    limit: Option<u64>,
}

impl Output {
    fn new(limit: Option<u64>, capacity_hint: usize) -> Self {
        let capacity = limit.map_or(capacity_hint, |limit| {
            capacity_hint.min(usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX))
        });
        Self {
            buf: vec![0; capacity],
            filled: 0,
            produced: 0,
            limit,
        }
    }

    /// Runs `step` on the unwritten room, growing it first when full. Returns the step's answer
    /// and whether it filled the room (then the codec may have more to give). Codec errors go
    /// through `codec_error`; passing the limit is [`Error::TooLarge`].
    fn step<T>(
        &mut self,
        step: impl FnOnce(&mut WriteBuffer<'_>) -> io::Result<T>,
        codec_error: impl FnOnce(io::Error) -> Error,
    ) -> Result<StepResult<T>> {
        if self.filled == self.buf.len() {
            let mut growth = self.buf.len().max(MIN_GROWTH);
            if let Some(limit) = self.limit {
                // Never offer more than one byte past the limit: a bomb stops here, not after
                // it has been written out.
                let allowed = limit.saturating_add(1).saturating_sub(self.produced);
                growth = growth
                    .min(usize::try_from(allowed).unwrap_or(usize::MAX))
                    .max(1);
            }
            self.buf.resize(self.filled + growth, 0);
        }
        let mut room = WriteBuffer::new_initialized(&mut self.buf[self.filled..]);
        let answer = step(&mut room).map_err(codec_error)?;
        let written = room.written_len();
        let full = room.has_no_spare_space();
        self.filled += written;
        self.produced += written as u64;
        if let Some(limit) = self.limit.filter(|&limit| self.produced > limit) {
            return Err(Error::TooLarge { limit });
        }
        Ok(StepResult {
            answer,
            full,
            written,
        })
    }

    /// Appends bytes as they are (identity); refused whole if they would pass the limit.
    fn push(&mut self, bytes: &[u8]) -> Result<()> {
        let total = self.produced + bytes.len() as u64;
        if let Some(limit) = self.limit.filter(|&limit| total > limit) {
            return Err(Error::TooLarge { limit });
        }
        self.buf.truncate(self.filled);
        self.buf.extend_from_slice(bytes);
        self.filled = self.buf.len();
        self.produced = total;
        Ok(())
    }

    fn len(&self) -> usize {
        self.filled
    }

    /// Takes what has been written. Small outputs are copied so the buffer is reused.
    fn take(&mut self) -> Bytes {
        let filled = std::mem::take(&mut self.filled);
        if filled * COPY_OUT_BELOW < self.buf.len() {
            Bytes::copy_from_slice(&self.buf[..filled])
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.truncate(filled);
            Bytes::from(buf)
        }
    }

    fn into_vec(mut self) -> Vec<u8> {
        self.buf.truncate(self.filled);
        self.buf
    }
}

struct StepResult<T> {
    answer: T,
    full: bool,
    written: usize,
}

enum EncodeCodec {
    Identity,
    Gzip(GzipEncoder),
    Deflate(ZlibEncoder),
    Brotli(Box<BrotliEncoder>),
    Zstd(ZstdEncoder),
    /// The codec could not be created (zstd out of memory); reported by the first operation.
    Failed(Option<io::Error>),
}

impl EncodeCodec {
    fn new(encoding: Encoding, level: Level, size: Option<u64>) -> Self {
        let level = level.for_encoding(encoding);
        match encoding {
            Encoding::Identity => Self::Identity,
            Encoding::Gzip => Self::Gzip(GzipEncoder::new(CodecLevel::Precise(level).into())),
            Encoding::Deflate => Self::Deflate(ZlibEncoder::new(CodecLevel::Precise(level).into())),
            Encoding::Brotli => Self::Brotli(Box::new(BrotliEncoder::new(
                BrotliParams::default().quality(CodecLevel::Precise(level)),
            ))),
            Encoding::Zstd => ZstdEncoder::new(level, size)
                .map_or_else(|error| Self::Failed(Some(error)), Self::Zstd),
        }
    }

    /// The codec; `Ok(None)` for identity.
    fn codec(&mut self) -> io::Result<Option<&mut dyn EncodeV2>> {
        Ok(match self {
            Self::Identity => None,
            Self::Gzip(codec) => Some(codec),
            Self::Deflate(codec) => Some(codec),
            Self::Brotli(codec) => Some(&mut **codec),
            Self::Zstd(codec) => Some(codec),
            Self::Failed(error) => {
                return Err(error
                    .take()
                    .unwrap_or_else(|| io::Error::other("the codec failed to start")));
            }
        })
    }
}

enum DecodeCodec {
    Identity,
    Gzip(Flate<GzipDecoder>),
    Deflate(Flate<ZlibDecoder>),
    Brotli(Box<BrotliDecoder>),
    Zstd(ZstdDecoder),
    /// The codec could not be created (zstd out of memory); reported by the first operation.
    Failed(Option<io::Error>),
}

impl DecodeCodec {
    fn new(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Identity => Self::Identity,
            Encoding::Gzip => Self::Gzip(Flate(GzipDecoder::new())),
            Encoding::Deflate => Self::Deflate(Flate(ZlibDecoder::new())),
            Encoding::Brotli => Self::Brotli(Box::new(BrotliDecoder::new())),
            Encoding::Zstd => {
                ZstdDecoder::new().map_or_else(|error| Self::Failed(Some(error)), Self::Zstd)
            }
        }
    }

    /// The codec; `Ok(None)` for identity.
    fn codec(&mut self) -> io::Result<Option<&mut dyn DecodeV2>> {
        Ok(match self {
            Self::Identity => None,
            Self::Gzip(codec) => Some(codec),
            Self::Deflate(codec) => Some(codec),
            Self::Brotli(codec) => Some(&mut **codec),
            Self::Zstd(codec) => Some(codec),
            Self::Failed(error) => {
                return Err(error
                    .take()
                    .unwrap_or_else(|| io::Error::other("the codec failed to start")));
            }
        })
    }
}

/// async-compression's gzip and zlib decoders, made safe to step without input.
///
/// [`Decoder::write`] steps a codec once more with no input after a step that filled the output
/// exactly, since the codec may hold output that did not fit. brotli and zstd then give what they
/// hold, or nothing; the flate codecs instead report zlib's `BufError` ("no progress possible")
/// as an error whenever they hold nothing, which refused valid bodies that arrived in pieces.
/// Without input this wrapper drains through the codec's `flush`, which treats `BufError` as
/// "nothing more", and then asks whether the stream has ended.
struct Flate<D>(D);

impl<D: DecodeV2> DecodeV2 for Flate<D> {
    fn reinit(&mut self) -> io::Result<()> {
        self.0.reinit()
    }

    fn decode(
        &mut self,
        input: &mut PartialBuffer<&[u8]>,
        output: &mut WriteBuffer<'_>,
    ) -> io::Result<bool> {
        if !input.unwritten().is_empty() {
            return self.0.decode(input, output);
        }
        if !self.0.flush(output)? {
            // The room filled again: more may follow.
            return Ok(false);
        }
        // The codec holds no output. A finished stream answers "ended" (zlib's StreamEnd, or
        // gzip's trailer already read); any other stream can only answer that it needs input,
        // with the error this wrapper exists to absorb. Nothing is written either way: the flush
        // above ran the codec until it made no more progress.
        Ok(self.0.decode(input, output).unwrap_or(false))
    }

    fn flush(&mut self, output: &mut WriteBuffer<'_>) -> io::Result<bool> {
        self.0.flush(output)
    }

    fn finish(&mut self, output: &mut WriteBuffer<'_>) -> io::Result<bool> {
        self.0.finish(output)
    }
}

/// A push encoder: [`write`](Self::write) uncompressed bytes, [`flush`](Self::flush) to make
/// everything written so far decodable, [`finish`](Self::finish) once, and
/// [`take`](Self::take) the compressed bytes whenever convenient.
///
/// It does no I/O and never blocks, so it fits inside `poll` functions; the [`Stream`],
/// `AsyncRead` and HTTP body adapters of this crate are built on it.
///
/// ```
/// use brisk_compress::{Encoder, Encoding, Level, decompress};
///
/// let mut encoder = Encoder::new(Encoding::Zstd, Level::Default);
/// encoder.write(b"data: first event\n\n")?;
/// encoder.flush()?; // the client can decode the first event now
/// let mut wire = encoder.take().to_vec();
/// encoder.write(b"data: second event\n\n")?;
/// encoder.finish()?;
/// wire.extend_from_slice(&encoder.take());
/// assert_eq!(decompress(Encoding::Zstd, &wire, 1 << 20)?, b"data: first event\n\ndata: second event\n\n");
/// # Ok::<(), brisk_compress::Error>(())
/// ```
///
/// [`Stream`]: futures_core::Stream
pub struct Encoder {
    encoding: Encoding,
    codec: EncodeCodec,
    output: Output,
    /// Input was written since the last flush.
    dirty: bool,
    finished: bool,
    consumed: u64,
}

impl fmt::Debug for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encoder")
            .field("encoding", &self.encoding)
            .field("consumed", &self.consumed)
            .field("produced", &self.output.produced)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// An encoder for `encoding` at `level`.
    #[must_use]
    pub fn new(encoding: Encoding, level: Level) -> Self {
        Self::with_capacity(encoding, level, None, MIN_GROWTH)
    }

    /// An encoder for exactly `size` bytes of input, which lets zstd size its tables to the
    /// input (several times faster on small bodies) and record the size in its frame. Writing a
    /// different number of bytes makes [`finish`](Self::finish) fail for zstd.
    #[must_use]
    pub fn with_size(encoding: Encoding, level: Level, size: u64) -> Self {
        Self::with_capacity(encoding, level, Some(size), MIN_GROWTH)
    }

    fn with_capacity(encoding: Encoding, level: Level, size: Option<u64>, capacity: usize) -> Self {
        Self {
            encoding,
            codec: EncodeCodec::new(encoding, level, size),
            output: Output::new(None, capacity),
            dirty: false,
            finished: false,
            consumed: 0,
        }
    }

    /// The coding this encoder produces.
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Compresses `input`. Output may stay inside the codec until a flush or the finish.
    ///
    /// # Errors
    /// [`Error::Compress`] if the codec fails, or if called after [`finish`](Self::finish).
    pub fn write(&mut self, input: &[u8]) -> Result<()> {
        self.check_open()?;
        if input.is_empty() {
            return Ok(());
        }
        self.consumed += input.len() as u64;
        self.dirty = true;
        let encoding = self.encoding;
        let compress_error = |source| Error::Compress { encoding, source };
        let Some(codec) = self.codec.codec().map_err(compress_error)? else {
            return self.output.push(input);
        };
        let mut input = PartialBuffer::new(input);
        while !input.unwritten().is_empty() {
            self.output
                .step(|room| codec.encode(&mut input, room), compress_error)?;
        }
        Ok(())
    }

    /// Emits everything written so far so that a decoder can produce it, at a cost of a few bytes
    /// (a sync flush). Does nothing when nothing was written since the last flush.
    ///
    /// # Errors
    /// [`Error::Compress`] if the codec fails, or if called after [`finish`](Self::finish).
    pub fn flush(&mut self) -> Result<()> {
        self.check_open()?;
        if !std::mem::take(&mut self.dirty) {
            return Ok(());
        }
        self.drain(|codec, room| codec.flush(room))
    }

    /// Ends the stream: writes the codec's trailer. Further writes are errors.
    ///
    /// # Errors
    /// [`Error::Compress`] if the codec fails, or if called twice.
    pub fn finish(&mut self) -> Result<()> {
        self.check_open()?;
        self.finished = true;
        self.dirty = false;
        self.drain(|codec, room| codec.finish(room))
    }

    /// Repeats a flush or finish step, growing the output, until the codec says it is done.
    fn drain(
        &mut self,
        step: impl Fn(&mut dyn EncodeV2, &mut WriteBuffer<'_>) -> io::Result<bool>,
    ) -> Result<()> {
        let encoding = self.encoding;
        let compress_error = |source| Error::Compress { encoding, source };
        let Some(codec) = self.codec.codec().map_err(compress_error)? else {
            return Ok(());
        };
        while !self
            .output
            .step(|room| step(codec, room), compress_error)?
            .answer
        {}
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.finished {
            return Err(Error::Compress {
                encoding: self.encoding,
                source: io::Error::other("the encoder is already finished"),
            });
        }
        Ok(())
    }

    /// Takes the compressed bytes produced so far (possibly none).
    pub fn take(&mut self) -> Bytes {
        self.output.take()
    }

    /// How many compressed bytes are waiting to be taken.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.output.len()
    }

    /// Uncompressed bytes written so far.
    #[must_use]
    pub fn bytes_in(&self) -> u64 {
        self.consumed
    }

    /// Compressed bytes produced so far, taken or not.
    #[must_use]
    pub fn bytes_out(&self) -> u64 {
        self.output.produced
    }

    fn into_vec(self) -> Vec<u8> {
        self.output.into_vec()
    }
}

/// A push decoder with a hard limit on the decoded size.
///
/// [`write`](Self::write) compressed bytes in, [`take`](Self::take) decoded bytes out,
/// [`finish`](Self::finish) at the end of the input to check the stream was complete. The
/// decoder never holds more than the limit plus one byte of output: a bomb fails with
/// [`Error::TooLarge`] as its output crosses the limit, whatever its ratio.
///
/// Concatenated gzip members and zstd frames are decoded as one stream, as their RFCs allow.
pub struct Decoder {
    encoding: Encoding,
    codec: DecodeCodec,
    output: Output,
    /// The last decode step ended a member or frame, and no input followed.
    at_end: bool,
    consumed: u64,
}

impl fmt::Debug for Decoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoder")
            .field("encoding", &self.encoding)
            .field("consumed", &self.consumed)
            .field("produced", &self.output.produced)
            .field("limit", &self.output.limit)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for `encoding` that fails once it would produce more than `limit` bytes.
    #[must_use]
    pub fn new(encoding: Encoding, limit: u64) -> Self {
        Self::with_capacity(encoding, limit, MIN_GROWTH)
    }

    fn with_capacity(encoding: Encoding, limit: u64, capacity: usize) -> Self {
        Self {
            encoding,
            codec: DecodeCodec::new(encoding),
            output: Output::new(Some(limit), capacity),
            at_end: encoding == Encoding::Identity,
            consumed: 0,
        }
    }

    /// The coding this decoder reads.
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Decodes `input`.
    ///
    /// # Errors
    /// - [`Error::TooLarge`] when the decoded size passes the limit;
    /// - [`Error::Corrupt`] for invalid data;
    /// - [`Error::TrailingData`] for bytes after the end of a brotli or deflate stream.
    pub fn write(&mut self, input: &[u8]) -> Result<()> {
        if input.is_empty() {
            return Ok(());
        }
        self.consumed += input.len() as u64;
        let encoding = self.encoding;
        let corrupt = |source: io::Error| decode_error(encoding, source);
        let Some(codec) = self.codec.codec().map_err(corrupt)? else {
            return self.output.push(input);
        };
        let mut input = PartialBuffer::new(input);
        loop {
            if self.at_end {
                if input.unwritten().is_empty() {
                    return Ok(());
                }
                // Another gzip member or zstd frame may follow; the other formats end here.
                if !matches!(encoding, Encoding::Gzip | Encoding::Zstd) {
                    return Err(Error::TrailingData { encoding });
                }
                codec.reinit().map_err(corrupt)?;
                self.at_end = false;
            }
            let before = input.written_len();
            let step = self
                .output
                .step(|room| codec.decode(&mut input, room), corrupt)?;
            self.at_end = step.answer;
            if self.at_end || step.full {
                // Look for trailing data, or let the codec give what did not fit.
                continue;
            }
            if input.unwritten().is_empty() {
                return Ok(());
            }
            if input.written_len() == before && step.written == 0 {
                return Err(corrupt(io::Error::other("the decoder made no progress")));
            }
        }
    }

    /// Checks that the input ended at the end of a stream.
    ///
    /// # Errors
    /// [`Error::Truncated`] when it did not.
    pub fn finish(&mut self) -> Result<()> {
        if self.at_end {
            Ok(())
        } else {
            Err(Error::Truncated {
                encoding: self.encoding,
            })
        }
    }

    /// Takes the decoded bytes produced so far (possibly none).
    pub fn take(&mut self) -> Bytes {
        self.output.take()
    }

    /// How many decoded bytes are waiting to be taken.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.output.len()
    }

    /// Compressed bytes written so far.
    #[must_use]
    pub fn bytes_in(&self) -> u64 {
        self.consumed
    }

    /// Decoded bytes produced so far, taken or not.
    #[must_use]
    pub fn bytes_out(&self) -> u64 {
        self.output.produced
    }

    fn into_vec(self) -> Vec<u8> {
        self.output.into_vec()
    }
}

/// Maps a decoding codec's error to [`Error`].
fn decode_error(encoding: Encoding, source: io::Error) -> Error {
    if source.kind() == io::ErrorKind::UnexpectedEof {
        return Error::Truncated { encoding };
    }
    Error::Corrupt { encoding, source }
}

/// Compresses `input` in one call.
///
/// ```
/// use brisk_compress::{Encoding, Level, compress, decompress};
///
/// let json = br#"{"users":[{"id":1,"name":"Ada"},{"id":2,"name":"Grace"}]}"#.repeat(20);
/// let small = compress(Encoding::Brotli, Level::Default, &json)?;
/// assert!(small.len() < json.len() / 5);
/// assert_eq!(decompress(Encoding::Brotli, &small, 1 << 20)?, json);
/// # Ok::<(), brisk_compress::Error>(())
/// ```
///
/// # Errors
/// [`Error::Compress`] only if the codec itself fails.
pub fn compress(encoding: Encoding, level: Level, input: &[u8]) -> Result<Vec<u8>> {
    if encoding == Encoding::Zstd {
        return zstd_codec::compress_all(level.for_encoding(encoding), input)
            .map_err(|source| Error::Compress { encoding, source });
    }
    // API JSON compresses 4–10×; a quarter of the input is rarely outgrown and cheap to zero.
    let mut encoder = Encoder::with_capacity(encoding, level, None, input.len() / 4 + 64);
    encoder.write(input)?;
    encoder.finish()?;
    Ok(encoder.into_vec())
}

/// Decompresses `input` in one call, refusing to produce more than `limit` bytes.
///
/// # Errors
/// [`Error::TooLarge`], [`Error::Corrupt`], [`Error::Truncated`] or [`Error::TrailingData`].
pub fn decompress(encoding: Encoding, input: &[u8], limit: u64) -> Result<Vec<u8>> {
    if encoding == Encoding::Zstd
        && let Some(output) = zstd_codec::decompress_all(input, limit)
    {
        return Ok(output);
    }
    let hint = input.len().saturating_mul(4).max(MIN_GROWTH);
    let mut decoder = Decoder::with_capacity(encoding, limit, hint);
    decoder.write(input)?;
    decoder.finish()?;
    Ok(decoder.into_vec())
}
