//! tower layers: response compression and request decompression (feature `tower`).

mod request;
mod response;

pub use request::{DecodedBody, Decompression, DecompressionLayer};
pub use response::{Compression, CompressionBody, CompressionLayer, ResponseFuture};

use bytes::{Buf, Bytes};

/// Turns any body chunk into `Bytes`, without a copy when it already is one.
fn into_bytes(mut data: impl Buf) -> Bytes {
    data.copy_to_bytes(data.remaining())
}
