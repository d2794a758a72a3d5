use std::io;

use crate::Encoding;

/// A boxed error from a caller's stream or body, kept whole so callers can downcast it (the
/// one alias of every brisk crate, from brisk-metrics).
pub use brisk_metrics::BoxError;

/// Everything that can go wrong in brisk-compress.
///
/// No input makes this crate panic: malformed headers, corrupt or truncated streams, bombs and
/// unknown frame versions all come back as one of these variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting out of range, refused by `build()`.
    #[error("invalid compress setting {setting}={value}: {reason}")]
    Config {
        /// The builder method, as the user wrote it.
        setting: &'static str,
        /// The rejected value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// The name is not a content coding this crate knows (`gzip`, `x-gzip`, `deflate`, `br`,
    /// `zstd`, `identity`).
    #[error("unknown content coding `{0}`")]
    UnknownEncoding(String),
    /// No content coding offered by the server is acceptable to the client (for example
    /// `Accept-Encoding: identity;q=0` against a server that only offers identity).
    #[error("no acceptable content coding")]
    NotAcceptable,
    /// Decoding would produce more than the configured limit; decoding stopped there.
    #[error("decoded data exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit that was hit, in bytes.
        limit: u64,
    },
    /// The compressed data is invalid for its coding.
    #[error("invalid {encoding} data")]
    Corrupt {
        /// The coding being decoded.
        encoding: Encoding,
        /// What the codec reported.
        #[source]
        source: io::Error,
    },
    /// The compressed data ended before the end of its stream.
    #[error("{encoding} data ends before the end of its stream")]
    Truncated {
        /// The coding being decoded.
        encoding: Encoding,
    },
    /// More data follows the end of the compressed stream.
    #[error("data follows the end of the {encoding} stream")]
    TrailingData {
        /// The coding being decoded.
        encoding: Encoding,
    },
    /// The codec failed while compressing (only out of memory or an internal codec error).
    #[error("{encoding} compression failed")]
    Compress {
        /// The coding being encoded.
        encoding: Encoding,
        /// What the codec reported.
        #[source]
        source: io::Error,
    },
    /// A policy setting is invalid; `reason` says which and why.
    #[error("invalid policy: {reason}")]
    Policy {
        /// What is wrong.
        reason: String,
    },
    /// A framed cache value could not be read; `reason` says why.
    #[error("invalid framed value: {reason}")]
    Frame {
        /// What is wrong with the frame.
        reason: &'static str,
    },
    /// A framed value names a format version newer than this crate reads.
    #[error("framed value has format version {0}, this version of brisk-compress reads version 1")]
    FrameVersion(u8),
    /// Reading from the source stream, body or reader failed.
    #[error("reading the source failed")]
    Source(#[source] BoxError),
}

impl Error {
    /// Whether this error is [`Error::TooLarge`]: the data is well formed but too big.
    #[must_use]
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}

impl From<Error> for io::Error {
    fn from(error: Error) -> Self {
        let kind = match &error {
            Error::TooLarge { .. } | Error::Corrupt { .. } | Error::TrailingData { .. } => {
                io::ErrorKind::InvalidData
            }
            Error::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            Error::Source(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, error)
    }
}

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_names_the_failure_and_source_gives_the_cause() {
        let error = Error::Corrupt {
            encoding: Encoding::Gzip,
            source: io::Error::other("invalid block type"),
        };
        assert_eq!(error.to_string(), "invalid gzip data");
        assert_eq!(error.source().unwrap().to_string(), "invalid block type");
        let error = Error::Source("connection reset".into());
        assert_eq!(error.to_string(), "reading the source failed");
        assert_eq!(error.source().unwrap().to_string(), "connection reset");
    }
}
