//! Negotiated, thresholded compression for responses, requests and cache values.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod codec;
mod encoding;
mod error;
mod negotiate;
mod stream;

pub use codec::{Decoder, Encoder, compress, decompress};
pub use encoding::{Encoding, Level};
pub use error::{BoxError, Error, Result};
pub use negotiate::{AcceptEncoding, Quality};
pub use stream::{CompressReader, CompressStream, DecompressReader, DecompressStream, Flush};
