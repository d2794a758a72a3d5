use std::{convert::Infallible, time::Duration};

/// What a single-flight call can fail with.
///
/// `E` is the error type of the work itself. Every caller of a shared execution receives the
/// same error: the one that ran it gets the original, the others a clone.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// The work returned an error.
    #[error("the work for key {key} failed: {source}")]
    Work {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The work's own error.
        source: E,
    },
    /// The work panicked. The panic was caught, so the group stays usable and every waiter
    /// learns of it.
    #[error("the work for key {key} panicked: {message}")]
    Panicked {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The panic payload when it was a string, else a placeholder.
        message: String,
    },
    /// This caller waited longer than its wait timeout for another caller's execution. The
    /// execution itself goes on for the others.
    #[error("gave up waiting for the work for key {key} after {waited:?}")]
    WaitTimeout {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The execution ran in another instance and failed there; its error arrives as text.
    #[error("the work for key {key} failed in another instance: {message}")]
    Remote {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The leader's error, as its `Display` text.
        message: String,
    },
    /// Coordinating through Redis failed.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("redis {op} for key {key} failed: {source}")]
    Redis {
        /// What brisk-dedup was doing: "acquire lease" or "poll lease".
        op: &'static str,
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The client's error.
        source: redis::RedisError,
    },
    /// The result store (where the leader leaves the result for other instances) failed.
    #[error("result store {op} for key {key} failed: {message}")]
    Store {
        /// "save" or "load".
        op: &'static str,
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The store's error, as text.
        message: String,
    },
}

impl<E> Error<E> {
    /// The work's own error, when that is what this is.
    pub fn work_error(&self) -> Option<&E> {
        match self {
            Error::Work { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Turns this into the work's own error, or gives `self` back.
    pub fn into_work_error(self) -> Result<E, Self> {
        match self {
            Error::Work { source, .. } => Ok(source),
            other => Err(other),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
