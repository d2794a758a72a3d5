//! Negotiated, thresholded compression for responses, requests and cache values.
#![cfg_attr(docsrs, feature(doc_cfg))]

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

pub use codec::{Decoder, Encoder, compress, decompress};
pub use encoding::{Encoding, Level};
pub use error::{BoxError, Error, Result};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use layer::{
    Compression, CompressionBody, CompressionLayer, DecodedBody, Decompression, DecompressionLayer,
    ResponseFuture,
};
pub use negotiate::{AcceptEncoding, Quality};
pub use policy::{Policy, PolicyBuilder};
pub use stream::{CompressReader, CompressStream, DecompressReader, DecompressStream, Flush};
pub use value::{ValueCodec, ValueCodecBuilder};
