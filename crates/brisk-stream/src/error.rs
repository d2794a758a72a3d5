use std::fmt;

/// A boxed error from a row stream or a job, as the encoders and [`Parallel`](crate::Parallel)
/// carry it (the one alias of every brisk crate, from brisk-metrics).
pub use brisk_metrics::BoxError;

/// What brisk-stream can fail with.
///
/// A cursor or field list from a client is outside input: its errors
/// ([`Error::InvalidCursor`], [`Error::UnknownField`], [`Error::InvalidFields`]) are the
/// client's fault, and [`Error::is_client_error`] says so (the axum integration answers them
/// with 400).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A builder was given a setting it cannot use.
    #[error("invalid stream setting {setting}={value}: {reason}")]
    Config {
        /// The setting, as the builder method is named.
        setting: &'static str,
        /// The value given, as text.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A cursor was refused; [`CursorRejection`] says why.
    #[error("invalid cursor: {reason}")]
    InvalidCursor {
        /// Why the cursor was refused.
        reason: CursorRejection,
    },
    /// A field list named a field the endpoint does not have.
    #[error("unknown field `{field}`")]
    UnknownField {
        /// The field as the client wrote it (at most 64 bytes of it).
        field: String,
    },
    /// A field list was empty, had an empty entry, or was too long.
    #[error("invalid field list: {reason}")]
    InvalidFields {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A page number was 0, or deeper than the listing serves.
    #[error("invalid page: {reason}")]
    InvalidPage {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A row could not be serialized (JSON or CSV); the body was aborted there.
    #[error("a row could not be encoded")]
    Encode {
        /// The serializer's error.
        #[source]
        source: BoxError,
    },
    /// The row stream failed; the body was aborted there (after an error record in NDJSON).
    #[error("the row stream failed after {rows} rows")]
    Source {
        /// Rows encoded before the failure.
        rows: u64,
        /// The row stream's error.
        #[source]
        source: BoxError,
    },
    /// A cursor would be longer than its codec accepts back
    /// ([`max_len`](crate::CursorsBuilder::max_len)): its sort key is too large.
    #[error("a cursor of {len} bytes is longer than the {max_len} its codec accepts")]
    CursorTooLong {
        /// The cursor's length as text.
        len: usize,
        /// The codec's `max_len`.
        max_len: usize,
    },
    /// A cursor's key could not be serialized.
    #[error("a cursor's key could not be serialized")]
    CursorKey {
        /// The serializer's error.
        #[source]
        source: postcard::Error,
    },
    /// A row's sort key, as the code's key closure gave it, cannot be the position of the next
    /// (or previous) page: it does not fit the [`Keyset`](crate::Keyset) (another number of
    /// values than sort columns, or NULL in a NOT NULL column), or it is the very position the
    /// page started from, so the same page would come back forever. A bug in the server's code,
    /// not the client's: [`Plan::page`](crate::Plan::page) fails with it, and a
    /// [`KeysetStream`](crate::KeysetStream) ends with it after the rows before, which aborts
    /// an encoded body; an export never ends early as if it were complete.
    #[error("a row's sort key {reason}")]
    SortKey {
        /// What is wrong with the key.
        reason: &'static str,
    },
    /// The query of one of a [`KeysetStream`](crate::KeysetStream)'s pages failed; the stream
    /// ended there.
    #[error("a page's query failed after {rows} rows")]
    Fetch {
        /// Rows the stream gave before the failure.
        rows: u64,
        /// The query's error (from the stream's `fetch`).
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether the client caused it (a bad cursor or field list): an HTTP service answers 400.
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidCursor { .. }
                | Self::UnknownField { .. }
                | Self::InvalidFields { .. }
                | Self::InvalidPage { .. }
        )
    }

    pub(crate) fn config(
        setting: &'static str,
        value: impl fmt::Debug,
        reason: &'static str,
    ) -> Self {
        Self::Config {
            setting,
            value: format!("{value:?}"),
            reason,
        }
    }
}

/// Why a cursor was refused. Each is a client error; none reveals the server's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CursorRejection {
    /// Not a cursor at all: wrong alphabet, wrong length, an unknown version, or a key that does
    /// not decode as the query's sort key.
    Malformed,
    /// Signed with no key this server knows, or altered since it was signed.
    BadSignature,
    /// Issued for another query (another sort order or filter).
    WrongQuery,
    /// Older than the cursors' time to live.
    Expired,
}

impl CursorRejection {
    /// The reason as a short label: `malformed`, `bad_signature`, `wrong_query`, `expired`
    /// (the `reason` label of `brisk_stream_cursor_rejections_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::WrongQuery => "wrong_query",
            Self::Expired => "expired",
        }
    }

    pub(crate) const ALL: [Self; 4] = [
        Self::Malformed,
        Self::BadSignature,
        Self::WrongQuery,
        Self::Expired,
    ];
}

impl fmt::Display for CursorRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "not a cursor this service issued",
            Self::BadSignature => "its signature does not match",
            Self::WrongQuery => "it belongs to another query",
            Self::Expired => "it has expired",
        })
    }
}

/// `Result` with brisk-stream's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_does_not_repeat_the_source() {
        let source = std::io::Error::other("connection reset");
        let error = Error::Source {
            rows: 3,
            source: Box::new(source),
        };
        assert_eq!(error.to_string(), "the row stream failed after 3 rows");
        assert_eq!(error.source().unwrap().to_string(), "connection reset");
    }

    #[test]
    fn each_rejection_is_its_index_in_all() {
        for (index, reason) in CursorRejection::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, index, "{reason:?}");
        }
    }

    #[test]
    fn client_errors_are_told_apart() {
        let rejected = Error::InvalidCursor {
            reason: CursorRejection::Expired,
        };
        assert!(rejected.is_client_error());
        assert_eq!(rejected.to_string(), "invalid cursor: it has expired");
        assert!(!Error::config("chunk_size", 0, "must be at least 1").is_client_error());
    }
}
