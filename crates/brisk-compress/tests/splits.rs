//! Real-world input sizes and frame splits through every decoder and encoder adapter.
//!
//! The network hands a body over in pieces (hyper: about 16 KiB; TCP segments: 1460 bytes;
//! clients' own buffers: 4 or 8 KiB), and real uploads are tens of KiB, often incompressible.
//! Each case takes data of up to 256 KiB, compressible or not, compresses it with the raw codec
//! crates (flate2, brotli, zstd), splits the wire bytes at real frame sizes or at arbitrary
//! points, and checks that [`Decoder`], [`DecompressStream`], [`DecompressReader`] and the
//! request layer all give back the original bytes; then the same for the encoders, checked with
//! the raw decoders.

use std::{
    collections::VecDeque,
    io::{self, Write as _},
    pin::Pin,
    task::{Context, Poll},
};

use brisk_compress::{
    CompressReader, CompressStream, Decoder, DecompressReader, DecompressStream, Encoder, Encoding,
    Error, Flush, Level,
};
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use proptest::prelude::*;
use tokio::io::{AsyncRead, AsyncReadExt as _, ReadBuf};

const CODECS: [Encoding; 4] = [
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Brotli,
    Encoding::Zstd,
];

/// Frame sizes seen on the wire: TCP segments, client write buffers, hyper's reads, and the
/// 4212-byte writes of the deflate report.
const FRAMES: [usize; 7] = [1460, 4096, 4212, 8192, 16384, 16393, 65536];

const MAX_LEN: usize = 256 * 1024;

/// A small deterministic generator, so a failing case shrinks to a seed and a length.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    /// Random bytes: what `head -c N /dev/urandom | gzip` and already-compressed files look like.
    Incompressible,
    /// JSON-like rows: what APIs send.
    Json,
    /// Runs of incompressible and compressible pieces, like a multipart upload.
    Mixed,
}

fn make_data(shape: Shape, seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed | 1);
    let mut out = Vec::with_capacity(len);
    let random = |rng: &mut Rng, out: &mut Vec<u8>, n: usize| {
        while out.len() < n {
            out.extend_from_slice(&rng.next().to_le_bytes());
        }
        out.truncate(n);
    };
    let json = |rng: &mut Rng, out: &mut Vec<u8>, n: usize| {
        const WORDS: [&str; 8] = ["alpha", "beta", "gamma", "pro", "free", "de", "fr", "en"];
        while out.len() < n {
            let id = rng.next() % 100_000;
            let word = WORDS[(rng.next() % 8) as usize];
            let _ = write!(
                out,
                r#"{{"id":{id},"name":"user {id}","plan":"{word}","active":true}},"#
            );
        }
        out.truncate(n);
    };
    match shape {
        Shape::Incompressible => random(&mut rng, &mut out, len),
        Shape::Json => json(&mut rng, &mut out, len),
        Shape::Mixed => {
            while out.len() < len {
                let piece = (out.len() + 1 + (rng.next() % 20_000) as usize).min(len);
                if rng.next().is_multiple_of(2) {
                    random(&mut rng, &mut out, piece);
                } else {
                    json(&mut rng, &mut out, piece);
                }
            }
        }
    }
    out
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec![Shape::Incompressible, Shape::Json, Shape::Mixed]),
        any::<u64>(),
        prop_oneof![0..=MAX_LEN, (MAX_LEN - 4096)..=MAX_LEN, 0..=2048usize],
    )
        .prop_map(|(shape, seed, len)| make_data(shape, seed, len))
}

/// Where a byte string is cut into frames.
#[derive(Debug, Clone)]
enum Split {
    /// Every `n` bytes.
    Frames(usize),
    /// At these points (taken modulo the length, sorted).
    Cuts(Vec<usize>),
}

fn split() -> impl Strategy<Value = Split> {
    prop_oneof![
        prop::sample::select(FRAMES.to_vec()).prop_map(Split::Frames),
        prop::collection::vec(any::<usize>(), 0..40).prop_map(Split::Cuts),
    ]
}

impl Split {
    fn apply(&self, bytes: &[u8]) -> Vec<Bytes> {
        let mut points = match self {
            Split::Frames(size) => (1..)
                .map(|n| n * size)
                .take_while(|&at| at < bytes.len())
                .collect(),
            Split::Cuts(cuts) if bytes.is_empty() => {
                let _ = cuts;
                Vec::new()
            }
            Split::Cuts(cuts) => cuts.iter().map(|cut| cut % bytes.len()).collect::<Vec<_>>(),
        };
        points.sort_unstable();
        points.dedup();
        let mut start = 0;
        let mut frames = Vec::new();
        for at in points.into_iter().chain([bytes.len()]) {
            if at > start {
                frames.push(Bytes::copy_from_slice(&bytes[start..at]));
                start = at;
            }
        }
        frames
    }
}

/// The raw codec crates' encoders, at a level picked by `level` (0..=9).
fn raw_encode(encoding: Encoding, level: u32, data: &[u8]) -> Vec<u8> {
    match encoding {
        Encoding::Identity => data.to_vec(),
        Encoding::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        Encoding::Deflate => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level));
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        Encoding::Brotli => {
            let mut out = Vec::new();
            {
                let mut writer = brotli::CompressorWriter::new(&mut out, 4096, level, 22);
                writer.write_all(data).unwrap();
            }
            out
        }
        Encoding::Zstd => zstd::encode_all(data, (level as i32 * 2).max(1)).unwrap(),
    }
}

/// The raw codec crates' decoders.
fn raw_decode(encoding: Encoding, wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Identity => out.extend_from_slice(wire),
        Encoding::Gzip => {
            io::copy(&mut flate2::read::MultiGzDecoder::new(wire), &mut out).unwrap();
        }
        Encoding::Deflate => {
            io::copy(&mut flate2::read::ZlibDecoder::new(wire), &mut out).unwrap();
        }
        Encoding::Brotli => brotli::BrotliDecompress(&mut &wire[..], &mut out).unwrap(),
        Encoding::Zstd => out = zstd::decode_all(wire).unwrap(),
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// An `AsyncRead` that hands out one frame (or what fits of it) per read, like a socket.
struct Frames(VecDeque<Bytes>);

impl AsyncRead for Frames {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(front) = self.0.front_mut() {
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front.split_to(n));
            if front.is_empty() {
                self.0.pop_front();
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn source(frames: &[Bytes]) -> impl futures_util::Stream<Item = io::Result<Bytes>> + Unpin {
    stream::iter(frames.iter().cloned().map(Ok))
}

fn decode_push(encoding: Encoding, frames: &[Bytes], limit: u64) -> Result<Vec<u8>, Error> {
    let mut decoder = Decoder::new(encoding, limit);
    let mut out = Vec::new();
    for frame in frames {
        decoder.write(frame)?;
        out.extend_from_slice(&decoder.take());
    }
    decoder.finish()?;
    out.extend_from_slice(&decoder.take());
    Ok(out)
}

async fn decode_stream(encoding: Encoding, frames: &[Bytes], limit: u64) -> Result<Vec<u8>, Error> {
    let mut stream = DecompressStream::new(source(frames), encoding, limit);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

async fn decode_reader(encoding: Encoding, frames: &[Bytes], limit: u64) -> io::Result<Vec<u8>> {
    let mut reader =
        DecompressReader::new(Frames(frames.iter().cloned().collect()), encoding, limit);
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await?;
    Ok(out)
}

/// Every decoding adapter on the same frames; each must give back `original`.
fn check_decoders(
    encoding: Encoding,
    frames: &[Bytes],
    original: &[u8],
) -> Result<(), TestCaseError> {
    let limit = original.len() as u64;
    let pushed = decode_push(encoding, frames, limit);
    prop_assert!(
        pushed.as_deref().ok() == Some(original),
        "Decoder: {:?}",
        pushed.err()
    );
    let runtime = runtime();
    let streamed = runtime.block_on(decode_stream(encoding, frames, limit));
    prop_assert!(
        streamed.as_deref().ok() == Some(original),
        "DecompressStream: {:?}",
        streamed.err()
    );
    let read = runtime.block_on(decode_reader(encoding, frames, limit));
    prop_assert!(
        read.as_deref().ok() == Some(original),
        "DecompressReader: {:?}",
        read.err()
    );
    #[cfg(feature = "tower")]
    {
        // The layer holds the compressed body to the limit too; random data grows a little.
        let wire_len: usize = frames.iter().map(Bytes::len).sum();
        let limit = limit.max(wire_len as u64);
        let (status, body) = runtime.block_on(layer::post(encoding, frames, limit));
        prop_assert_eq!(status, 200, "request layer");
        prop_assert!(
            body == original,
            "request layer: the handler got other bytes"
        );
    }
    Ok(())
}

fn encode_push(encoding: Encoding, frames: &[Bytes], flush_each: bool) -> Vec<u8> {
    let mut encoder = Encoder::new(encoding, Level::Fastest);
    let mut wire = Vec::new();
    for frame in frames {
        encoder.write(frame).unwrap();
        if flush_each {
            encoder.flush().unwrap();
        }
        wire.extend_from_slice(&encoder.take());
    }
    encoder.finish().unwrap();
    wire.extend_from_slice(&encoder.take());
    wire
}

fn check_encoders(
    encoding: Encoding,
    frames: &[Bytes],
    original: &[u8],
    flush: Flush,
) -> Result<(), TestCaseError> {
    let pushed = encode_push(encoding, frames, flush == Flush::EveryChunk);
    prop_assert!(raw_decode(encoding, &pushed) == original, "Encoder");
    let runtime = runtime();
    let streamed = runtime.block_on(async {
        let mut stream = CompressStream::new(source(frames), encoding, Level::Default).flush(flush);
        let mut wire = Vec::new();
        while let Some(chunk) = stream.next().await {
            wire.extend_from_slice(&chunk.unwrap());
        }
        wire
    });
    prop_assert!(
        raw_decode(encoding, &streamed) == original,
        "CompressStream"
    );
    let read = runtime.block_on(async {
        let mut reader = CompressReader::with_flush(
            Frames(frames.iter().cloned().collect()),
            encoding,
            Level::Default,
            flush,
        );
        let mut wire = Vec::new();
        reader.read_to_end(&mut wire).await.unwrap();
        wire
    });
    prop_assert!(raw_decode(encoding, &read) == original, "CompressReader");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn raw_codec_output_decodes_whatever_the_split(
        encoding in prop::sample::select(CODECS.to_vec()),
        level in 0..=9u32,
        data in data(),
        split in split(),
    ) {
        let wire = raw_encode(encoding, level, &data);
        check_decoders(encoding, &split.apply(&wire), &data)?;
    }

    #[test]
    fn encoders_take_any_split(
        encoding in prop::sample::select(CODECS.to_vec()),
        data in data(),
        split in split(),
        flush in prop::sample::select(vec![Flush::Never, Flush::WhenIdle, Flush::EveryChunk]),
    ) {
        check_encoders(encoding, &split.apply(&data), &data, flush)?;
    }
}

/// The reported cases, exactly: 32 KiB of random bytes through `gzip -1` written 8 and 16 KiB at
/// a time, and 200 KB of JSON as deflate in 4212-byte writes; every coding at every frame size.
#[test]
fn the_reported_uploads_decode() {
    for (shape, len) in [(Shape::Incompressible, 32 * 1024), (Shape::Json, 200_000)] {
        let data = make_data(shape, 7, len);
        for encoding in CODECS {
            for level in [1, 6, 9] {
                let wire = raw_encode(encoding, level, &data);
                for frame in FRAMES {
                    check_decoders(encoding, &Split::Frames(frame).apply(&wire), &data)
                        .unwrap_or_else(|error| {
                            panic!("{encoding} level {level}, {frame}-byte frames: {error}")
                        });
                }
            }
        }
    }
}

/// Every way of cutting a small stream in two decodes: the exact fills a step can end on.
#[test]
fn every_cut_of_a_stream_decodes() {
    let data = make_data(Shape::Mixed, 11, 40_000);
    for encoding in CODECS {
        let wire = raw_encode(encoding, 6, &data);
        for cut in (1..wire.len()).step_by(7) {
            let frames = Split::Cuts(vec![cut]).apply(&wire);
            let pushed = decode_push(encoding, &frames, data.len() as u64);
            assert!(
                pushed.as_deref().ok() == Some(&data[..]),
                "{encoding} cut at {cut}: {:?}",
                pushed.err()
            );
        }
    }
}

#[cfg(feature = "tower")]
mod layer {
    use std::convert::Infallible;

    use axum::http::{Request, Response, header};
    use brisk_compress::{
        Encoding,
        tower::{DecodedBody, DecompressionLayer},
    };
    use bytes::Bytes;
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::{BodyExt as _, Full, StreamBody};
    use tower::{ServiceBuilder, ServiceExt as _};

    type Upload = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

    /// POSTs `frames` with `Content-Encoding: encoding` through a [`DecompressionLayer`] to a
    /// handler that echoes what it got; returns the status and the echoed body.
    pub(super) async fn post(encoding: Encoding, frames: &[Bytes], limit: u64) -> (u16, Vec<u8>) {
        let frames: Vec<_> = frames
            .iter()
            .map(|frame| Ok(Frame::data(frame.clone())))
            .collect();
        let body: Upload = StreamBody::new(stream::iter(frames));
        let request = Request::post("/upload")
            .header(header::CONTENT_ENCODING, encoding.as_str())
            .body(body)
            .unwrap();
        let service = ServiceBuilder::new()
            .layer(DecompressionLayer::new().limit(limit.max(1)))
            .service_fn(|request: Request<DecodedBody<Upload>>| async move {
                let body = request.into_body().collect().await.unwrap().to_bytes();
                Ok::<_, Infallible>(Response::new(Full::new(body)))
            });
        let response = service.oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    }
}
