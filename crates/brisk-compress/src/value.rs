//! Framed, compressed values for caches.

use brisk_metrics::Recorder;

use crate::{
    Encoding, Error, Level, Result, compress, decompress,
    metrics::{Direction, Metrics},
};

/// The first byte of every framed value.
const MAGIC: u8 = 0xBC;
/// The frame layout this crate writes and reads.
const VERSION: u8 = 1;
/// The longest LEB128 encoding of a `u64`.
const MAX_VARINT: usize = 10;

/// Compresses values for a cache (Redis, an in-process map) behind a small header, so that any
/// reader decodes any value whatever coding its writer was configured with.
///
/// Frame layout (version 1): `0xBC`, the version byte `1`, a coding byte (0 identity, 1 gzip,
/// 2 deflate, 3 brotli, 4 zstd), the decoded length as an unsigned LEB128 varint, then the
/// payload. Values below the minimum size, and values the codec cannot shrink, are stored raw
/// (coding 0), so a small value costs 3–4 bytes and no CPU.
///
/// Decoding checks everything: a missing magic byte, an unknown version or coding, a payload
/// that decodes to another length than the header says, or a length above the decode limit are
/// errors, never panics or wrong bytes.
///
/// ```
/// use brisk_compress::{Encoding, ValueCodec};
///
/// let codec = ValueCodec::builder().encoding(Encoding::Zstd).build()?;
/// let user = br#"{"id":7,"name":"Ada","roles":["admin","editor"],"bio":"..."}"#.repeat(40);
/// let stored = codec.encode(&user)?;
/// assert!(stored.len() < user.len() / 4);
/// assert_eq!(codec.decode(&stored)?, user);
///
/// let tiny = codec.encode(b"42")?; // below the threshold: stored raw
/// assert_eq!(tiny.len(), 2 + 4);
/// # Ok::<(), brisk_compress::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ValueCodec {
    encoding: Encoding,
    level: Level,
    min_size: usize,
    max_decoded: u64,
    metrics: Metrics,
}

impl Default for ValueCodec {
    fn default() -> Self {
        Self::builder()
            .build()
            .expect("the default settings are valid")
    }
}

impl ValueCodec {
    /// A builder: zstd at its default level, values from 1 KiB compressed, 64 MiB decode limit.
    #[must_use]
    pub fn builder() -> ValueCodecBuilder<'static> {
        ValueCodecBuilder {
            encoding: Encoding::Zstd,
            level: Level::Default,
            min_size: 1024,
            max_decoded: 64 << 20,
            recorder: None,
            name: "value".to_owned(),
        }
    }

    /// The coding new values are written with.
    #[must_use]
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Frames `value`, compressed when it is at least the minimum size and the codec shrinks it.
    ///
    /// # Errors
    /// [`Error::Compress`] only if the codec itself fails.
    pub fn encode(&self, value: &[u8]) -> Result<Vec<u8>> {
        if value.len() >= self.min_size && self.encoding != Encoding::Identity {
            let compressed = compress(self.encoding, self.level, value)?;
            self.metrics.record(
                Direction::Compress,
                self.encoding,
                value.len() as u64,
                compressed.len() as u64,
            );
            if compressed.len() + MAX_VARINT < value.len() {
                return Ok(frame(self.encoding, value.len(), &compressed));
            }
        }
        Ok(frame(Encoding::Identity, value.len(), value))
    }

    /// Reads a framed value written by any `ValueCodec` of this format version.
    ///
    /// # Errors
    /// - [`Error::Frame`]: not a framed value, an unknown coding, or a length mismatch;
    /// - [`Error::FrameVersion`]: written by a newer format;
    /// - [`Error::TooLarge`]: the value would decode to more than the limit;
    /// - [`Error::Corrupt`] / [`Error::Truncated`]: a damaged payload.
    pub fn decode(&self, framed: &[u8]) -> Result<Vec<u8>> {
        let frame = |reason| Error::Frame { reason };
        let (encoding, rest) = read_header(framed)?;
        let (length, payload) = read_varint(rest).ok_or(frame("bad length varint"))?;
        if length > self.max_decoded {
            return Err(Error::TooLarge {
                limit: self.max_decoded,
            });
        }
        let value = match decompress(encoding, payload, length) {
            Err(Error::TooLarge { .. }) => {
                return Err(frame("payload longer than its header says"));
            }
            other => other?,
        };
        if value.len() as u64 != length {
            return Err(frame("payload shorter than its header says"));
        }
        if encoding != Encoding::Identity {
            self.metrics.record(
                Direction::Decompress,
                encoding,
                payload.len() as u64,
                length,
            );
        }
        Ok(value)
    }

    /// The coding a framed value was written with, without decoding it.
    ///
    /// # Errors
    /// As [`decode`](Self::decode) for the header.
    pub fn peek_encoding(framed: &[u8]) -> Result<Encoding> {
        read_header(framed).map(|(encoding, _)| encoding)
    }
}

/// The coding named by a frame's fixed header, and the bytes after it.
fn read_header(framed: &[u8]) -> Result<(Encoding, &[u8])> {
    let frame = |reason| Error::Frame { reason };
    let [magic, version, coding, rest @ ..] = framed else {
        return Err(frame("shorter than a frame header"));
    };
    if *magic != MAGIC {
        return Err(frame("no frame header (is this value from a ValueCodec?)"));
    }
    if *version != VERSION {
        return Err(Error::FrameVersion(*version));
    }
    let encoding = Encoding::from_frame_id(*coding).ok_or(frame("unknown coding byte"))?;
    Ok((encoding, rest))
}

fn frame(encoding: Encoding, length: usize, payload: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(3 + MAX_VARINT + payload.len());
    framed.extend_from_slice(&[MAGIC, VERSION, encoding.frame_id()]);
    let mut length = length as u64;
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            framed.push(byte);
            break;
        }
        framed.push(byte | 0x80);
    }
    framed.extend_from_slice(payload);
    framed
}

/// An unsigned LEB128 `u64` and the bytes after it; `None` if it is cut short, too long, or
/// not minimal.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (index, &byte) in bytes.iter().enumerate().take(MAX_VARINT) {
        let bits = u64::from(byte & 0x7f);
        let shift = 7 * index as u32;
        if shift == 63 && bits > 1 {
            return None;
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            // A trailing zero byte would make two encodings of one length.
            if index > 0 && byte == 0 {
                return None;
            }
            return Some((value, &bytes[index + 1..]));
        }
    }
    None
}

/// Builds a [`ValueCodec`].
#[derive(Debug)]
pub struct ValueCodecBuilder<'r> {
    encoding: Encoding,
    level: Level,
    min_size: usize,
    max_decoded: u64,
    recorder: Option<&'r dyn Recorder>,
    name: String,
}

impl<'r> ValueCodecBuilder<'r> {
    /// The coding for new values (default zstd: the best speed for its ratio). Readers decode
    /// every coding regardless.
    #[must_use]
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The level for new values.
    #[must_use]
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Values shorter than this are stored raw (default 1024).
    #[must_use]
    pub fn min_size(mut self, bytes: usize) -> Self {
        self.min_size = bytes;
        self
    }

    /// Refuse to decode values longer than this (default 64 MiB), so a corrupted or hostile
    /// cache entry cannot exhaust memory. 0 is refused by [`build`](Self::build).
    #[must_use]
    pub fn max_decoded_size(mut self, bytes: u64) -> Self {
        self.max_decoded = bytes;
        self
    }

    /// Reports bytes in/out and ratios to `recorder`, labelled `name` (default `value`).
    #[must_use]
    pub fn metrics<'a>(
        self,
        recorder: &'a dyn Recorder,
        name: impl Into<String>,
    ) -> ValueCodecBuilder<'a> {
        ValueCodecBuilder {
            encoding: self.encoding,
            level: self.level,
            min_size: self.min_size,
            max_decoded: self.max_decoded,
            recorder: Some(recorder),
            name: name.into(),
        }
    }

    /// Builds the codec, or [`Error::Config`](crate::Error::Config) for a
    /// `max_decoded_size` of 0 (which would refuse every value).
    pub fn build(self) -> crate::Result<ValueCodec> {
        if self.max_decoded == 0 {
            return Err(crate::Error::Config {
                setting: "max_decoded_size",
                value: "0".to_owned(),
                reason: "at least 1 byte",
            });
        }
        Ok(ValueCodec {
            encoding: self.encoding,
            level: self.level,
            min_size: self.min_size,
            max_decoded: self.max_decoded,
            metrics: self
                .recorder
                .map_or_else(Metrics::noop, |r| Metrics::new(r, &self.name)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_reject_bad_forms() {
        for length in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 40] {
            let framed = frame(Encoding::Identity, length, b"");
            assert_eq!(
                read_varint(&framed[3..]),
                Some((length as u64, &[][..])),
                "{length}"
            );
        }
        assert_eq!(read_varint(&[0x80]), None, "cut short");
        assert_eq!(read_varint(&[0x80, 0x00]), None, "not minimal");
        assert_eq!(read_varint(&[0xff; 11]), None, "too long");
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None,
            "overflow"
        );
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((u64::MAX, &[][..]))
        );
    }
}
