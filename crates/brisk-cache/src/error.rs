//! The crate's error type.

use std::convert::Infallible;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a cache operation or its configuration can fail with.
///
/// `E` is the error type of a loader (see
/// [`MemoryCache::try_get_with`](crate::MemoryCache::try_get_with)); operations without a
/// loader use the default, [`Infallible`]. Every caller that shared one load receives the same
/// error: the loader's own for the caller that ran it, clones for the others.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// A builder setting is invalid.
    #[error("invalid cache setting {setting}={value}: {reason}")]
    Config {
        /// The builder method, as the user wrote it.
        setting: &'static str,
        /// The rejected value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// The loader returned an error; nothing was cached.
    #[error("loading the value for key {key} failed")]
    Load {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The loader's own error.
        source: E,
    },
    /// The loader panicked; the panic was caught, nothing was cached and the cache stays
    /// usable.
    #[error("the loader for key {key} panicked: {message}")]
    LoadPanicked {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The panic payload when it was a string, else a placeholder.
        message: String,
    },
    /// A caller waited longer than the cache's
    /// [`load_wait_timeout`](crate::MemoryCacheBuilder::load_wait_timeout) for a load that
    /// another caller runs; that load goes on for the others.
    #[error("gave up waiting for the load of key {key} after {waited:?}")]
    LoadWaitTimeout {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// How long the caller waited.
        waited: std::time::Duration,
    },
    /// Single-flight failed for a reason other than the loader's own, described in
    /// `message`. Loads inside one process end in one of the variants above; this one is for
    /// loads shared across processes.
    #[error("the shared load of key {key} failed: {message}")]
    Flight {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// What went wrong.
        message: String,
    },
}

impl<E> Error<E> {
    /// The loader's own error, when that is what this is.
    pub fn load_error(&self) -> Option<&E> {
        match self {
            Error::Load { source, .. } => Some(source),
            _ => None,
        }
    }
}
