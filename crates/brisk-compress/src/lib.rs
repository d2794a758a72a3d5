//! Compress what a service sends and decode what it receives, negotiated per request, only
//! when it pays, and safe against decompression bombs.
//!
//! ```
//! use brisk_compress::{AcceptEncoding, Policy, compress, decompress};
//!
//! let policy = Policy::default(); // 1 KiB minimum, brotli 4 > gzip 6 > zstd 3 > deflate 6
//! let body = br#"{"users":[{"id":1,"name":"Ada"},{"id":2,"name":"Grace"}]}"#.repeat(40);
//!
//! let accept = AcceptEncoding::parse(b"gzip, deflate, br;q=1.0, zstd;q=0.9");
//! let encoding = accept.negotiate(policy.encodings())?; // brotli
//! if policy.should_compress(Some("application/json"), Some(body.len() as u64)) {
//!     let wire = compress(encoding, policy.level(encoding), &body)?;
//!     assert!(wire.len() * 10 < body.len());
//!     // Reading never trusts the sender: at most 1 MiB comes out, whatever the ratio.
//!     assert_eq!(decompress(encoding, &wire, 1 << 20)?, body);
//! }
//! # Ok::<(), brisk_compress::Error>(())
//! ```
//!
//! # What is in the box
//! - [`Encoding`] and [`AcceptEncoding`]: RFC 9110 negotiation (q-values, `*`,
//!   `identity;q=0`, malformed entries skipped, server preference for ties).
//! - [`compress`] / [`decompress`] for buffers; [`Encoder`] / [`Decoder`] push codecs for any
//!   poll loop; [`CompressStream`] / [`DecompressStream`] over `Stream<Item = Result<Bytes, _>>`
//!   and [`CompressReader`] / [`DecompressReader`] over `AsyncRead`. Streams flush as
//!   [`Flush`] says; by default whenever the source goes idle, so server-sent events and NDJSON
//!   rows are never held back.
//! - [`Policy`]: minimum size, content-type allow/deny, codings and a level per coding.
//! - [`tower::CompressionLayer`] and [`tower::DecompressionLayer`] (feature `tower`) for axum, hyper and any
//!   tower stack.
//! - [`ValueCodec`]: compressed values for caches behind a versioned header naming the codec.
//! - Metrics through [`brisk_metrics::Recorder`]: bytes in/out and the ratio per coding.
//!
//! # Feature flags
//! | feature | default | enables |
//! |---|---|---|
//! | `tower` | no | [`tower::CompressionLayer`], [`tower::DecompressionLayer`] and their services and bodies (adds `http`, `http-body`, `tower-layer`, `tower-service`) |
//!
//! # Guarantees
//! - **Bounded decoding.** Every decoder takes a limit and stops with [`Error::TooLarge`] as the
//!   output crosses it, after producing at most one byte more. Streaming decoders hand output on
//!   in chunks of at most 32 KiB and feed input in 16 KiB pieces, so memory stays small whatever
//!   the ratio; zstd windows above 8 MiB (RFC 9659) are refused.
//! - **No panics on input.** Malformed headers, corrupt, truncated or trailing data, and
//!   unknown frame versions are typed [`Error`]s. No `unsafe` code.
//! - **Same bytes as the codec crates.** gzip, deflate and brotli run on async-compression's
//!   codecs, zstd on the `zstd` crate; output decodes with any standard decoder.
//! - **Cancellation.** Dropping a stream, reader or body mid-way drops its codec; nothing runs
//!   in the background.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

mod codec;
mod encoding;
mod error;
#[cfg(feature = "tower")]
mod layer;
mod metrics;
mod negotiate;
mod policy;
mod stream;
mod value;
mod zstd_codec;

pub use crate::metrics::METRICS;
pub use codec::{Decoder, Encoder, compress, decompress};
pub use encoding::{Encoding, Level};
pub use error::{BoxError, Error, Result};
/// Tower layers: responses compressed for each client, request bodies decompressed (feature
/// `tower`).
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower {
    pub use crate::layer::{
        Compression, CompressionBody, CompressionLayer, DecodedBody, Decompression,
        DecompressionLayer, ResponseFuture,
    };
}
pub use negotiate::{AcceptEncoding, Quality};
pub use policy::{Policy, PolicyBuilder};
pub use stream::{CompressReader, CompressStream, DecompressReader, DecompressStream, Flush};
pub use value::{ValueCodec, ValueCodecBuilder};
