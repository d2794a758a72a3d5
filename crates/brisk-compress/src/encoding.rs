use std::{fmt, str::FromStr};

use crate::Error;

/// A content coding: how a body or value is compressed.
///
/// Names follow the HTTP registry (RFC 9110 §8.4.1): `identity`, `gzip`, `deflate` (the zlib
/// format, RFC 1950, as HTTP defines it), `br` and `zstd`. Parsing is case-insensitive and
/// accepts the legacy alias `x-gzip`.
///
/// ```
/// use brisk_compress::Encoding;
///
/// assert_eq!("GZip".parse::<Encoding>()?, Encoding::Gzip);
/// assert_eq!(Encoding::Brotli.as_str(), "br");
/// assert!("lz4".parse::<Encoding>().is_err());
/// # Ok::<(), brisk_compress::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    /// No compression.
    Identity,
    /// gzip (RFC 1952).
    Gzip,
    /// HTTP's `deflate`: the zlib format (RFC 1950).
    Deflate,
    /// Brotli (RFC 7932), `br` on the wire.
    Brotli,
    /// Zstandard (RFC 8878).
    Zstd,
}

impl Encoding {
    /// Every coding, identity first.
    pub const ALL: [Encoding; 5] = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ];

    /// The token used in `Content-Encoding` and `Accept-Encoding`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Brotli => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// Parses a coding token, ignoring ASCII case; `None` for unknown tokens.
    #[must_use]
    pub fn from_token(token: &[u8]) -> Option<Self> {
        const NAMES: [(&[u8], Encoding); 6] = [
            (b"identity", Encoding::Identity),
            (b"gzip", Encoding::Gzip),
            (b"x-gzip", Encoding::Gzip),
            (b"deflate", Encoding::Deflate),
            (b"br", Encoding::Brotli),
            (b"zstd", Encoding::Zstd),
        ];
        NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(token))
            .map(|&(_, encoding)| encoding)
    }

    /// The byte that names this coding in a framed value (see [`ValueCodec`](crate::ValueCodec)).
    pub(crate) const fn frame_id(self) -> u8 {
        match self {
            Encoding::Identity => 0,
            Encoding::Gzip => 1,
            Encoding::Deflate => 2,
            Encoding::Brotli => 3,
            Encoding::Zstd => 4,
        }
    }

    pub(crate) fn from_frame_id(id: u8) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|encoding| encoding.frame_id() == id)
    }

    /// The index of this coding in per-coding tables.
    pub(crate) const fn index(self) -> usize {
        self.frame_id() as usize
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_token(s.trim().as_bytes()).ok_or_else(|| Error::UnknownEncoding(s.to_owned()))
    }
}

/// A compression level.
///
/// `Default` is chosen per coding for serving live traffic, not for the smallest output:
/// gzip and deflate 6, brotli **4** (its library default is 11, which is tens of times slower and
/// a classic cause of slow responses), zstd 3. `Precise` values are clamped to each codec's range:
/// gzip/deflate 0–9, brotli 0–11, zstd −7–22.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    /// The fastest level: gzip/deflate 1, brotli 0, zstd 1.
    Fastest,
    /// The level for live responses (see above).
    #[default]
    Default,
    /// The smallest output: gzip/deflate 9, brotli 11, zstd 19.
    Best,
    /// A codec-specific level, clamped to the codec's range.
    Precise(i32),
}

impl Level {
    /// The numeric level this means for `encoding` (0 for identity).
    #[must_use]
    pub fn for_encoding(self, encoding: Encoding) -> i32 {
        let (fastest, default, best, min, max) = match encoding {
            Encoding::Identity => return 0,
            Encoding::Gzip | Encoding::Deflate => (1, 6, 9, 0, 9),
            Encoding::Brotli => (0, 4, 11, 0, 11),
            Encoding::Zstd => (1, 3, 19, -7, 22),
        };
        match self {
            Level::Fastest => fastest,
            Level::Default => default,
            Level::Best => best,
            Level::Precise(level) => level.clamp(min, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_ignore_case() {
        for encoding in Encoding::ALL {
            assert_eq!(encoding.as_str().parse::<Encoding>().unwrap(), encoding);
            assert_eq!(
                encoding
                    .as_str()
                    .to_uppercase()
                    .parse::<Encoding>()
                    .unwrap(),
                encoding
            );
            assert_eq!(Encoding::from_frame_id(encoding.frame_id()), Some(encoding));
        }
        assert_eq!("x-gzip".parse::<Encoding>().unwrap(), Encoding::Gzip);
        assert!(
            matches!("compress".parse::<Encoding>(), Err(Error::UnknownEncoding(name)) if name == "compress")
        );
        assert_eq!(Encoding::from_frame_id(9), None);
    }

    #[test]
    fn levels_map_per_codec_and_clamp() {
        assert_eq!(Level::Default.for_encoding(Encoding::Brotli), 4);
        assert_eq!(Level::Default.for_encoding(Encoding::Gzip), 6);
        assert_eq!(Level::Default.for_encoding(Encoding::Zstd), 3);
        assert_eq!(Level::Best.for_encoding(Encoding::Brotli), 11);
        assert_eq!(Level::Precise(99).for_encoding(Encoding::Gzip), 9);
        assert_eq!(Level::Precise(-99).for_encoding(Encoding::Zstd), -7);
        assert_eq!(Level::Precise(5).for_encoding(Encoding::Identity), 0);
    }
}
