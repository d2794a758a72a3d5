use std::{convert::Infallible, fmt, sync::Arc};

/// What a load or a write can fail with.
///
/// `E` is the error type of the batch function ([`BatchLoad::Error`](crate::BatchLoad::Error)
/// or [`BatchWrite::Error`](crate::BatchWrite::Error)). One batch serves many callers, so its
/// error is shared: every caller of a failed batch receives the same `Arc<E>`.
///
/// `E` need not implement `std::error::Error` (`String` and `anyhow::Error` do not), so it is
/// written into the message rather than returned by `source()`: each cause is printed once,
/// and `Error<E>` is a `std::error::Error` (usable with `?` into anyhow) for any `E` that is
/// `Display + Debug`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// A builder setting out of range, refused by `build()`.
    #[error("invalid batch setting {setting}={value}: {reason}")]
    Config {
        /// The builder method, as the user wrote it.
        setting: &'static str,
        /// The rejected value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// The batch function failed for the whole batch; every key (or item) in it gets this.
    /// A loader does not cache it: the next load of these keys tries again.
    #[error("the batch function failed for a batch of {size}: {error}")]
    Batch {
        /// How many keys or items the batch held.
        size: usize,
        /// The batch function's error (in the message, not a `source()`: see the type's docs).
        error: Arc<E>,
    },
    /// The batch function failed for this one key, and may have succeeded for the others.
    /// A loader does not cache it.
    #[error("loading key {key} failed: {error}")]
    Key {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The error the batch function returned for this key (in the message).
        error: Arc<E>,
    },
    /// The batch function panicked. The panic was caught in the batch's own task, so the loader
    /// or batcher stays usable, and every caller of that batch learns of it.
    #[error("the batch function panicked on a batch of {size}: {message}")]
    Panicked {
        /// How many keys or items the batch held.
        size: usize,
        /// The panic payload when it was a string, else a placeholder.
        message: String,
    },
    /// The write batcher was shut down (or its worker stopped with the runtime) before this
    /// item was queued, so it was not written.
    #[error("the write batcher is shut down; the item was not queued or written")]
    Closed,
    /// The write batcher's queue had no room for the item, which was not queued
    /// ([`WriteBatcher::try_reserve`](crate::WriteBatcher::try_reserve)).
    #[error("the write batcher's queue of {capacity} items is full; the item was not queued")]
    QueueFull {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The task running the batch went away (its runtime shut down) before it reported; for a
    /// write, whether the item was written is unknown. A loader's later loads of the batch's
    /// keys start a new batch.
    #[error("the task running the batch stopped (its runtime shut down) before reporting a result")]
    Abandoned,
    /// The batch function returned a different number of outputs than it was given items.
    #[error("the write function returned {got} outputs for {expected} items")]
    OutputCount {
        /// Items in the batch.
        expected: usize,
        /// Outputs returned.
        got: usize,
    },
}

// Manual, so that `E` need not be `Clone`: the error is shared.
impl<E> Clone for Error<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Config {
                setting,
                value,
                reason,
            } => Self::Config {
                setting,
                value: value.clone(),
                reason,
            },
            Self::Batch { size, error } => Self::Batch {
                size: *size,
                error: Arc::clone(error),
            },
            Self::Key { key, error } => Self::Key {
                key: key.clone(),
                error: Arc::clone(error),
            },
            Self::Panicked { size, message } => Self::Panicked {
                size: *size,
                message: message.clone(),
            },
            Self::Closed => Self::Closed,
            Self::QueueFull { capacity } => Self::QueueFull {
                capacity: *capacity,
            },
            Self::Abandoned => Self::Abandoned,
            Self::OutputCount { expected, got } => Self::OutputCount {
                expected: *expected,
                got: *got,
            },
        }
    }
}

impl<E> Error<E> {
    /// The batch function's own error (for the whole batch or for this key), when that is what
    /// this is.
    pub fn source_error(&self) -> Option<&E> {
        match self {
            Self::Batch { error, .. } | Self::Key { error, .. } => Some(error),
            _ => None,
        }
    }

    pub(crate) fn config(
        setting: &'static str,
        value: impl fmt::Display,
        reason: &'static str,
    ) -> Self {
        Self::Config {
            setting,
            value: value.to_string(),
            reason,
        }
    }

    pub(crate) fn key(key: &impl fmt::Debug, error: Arc<E>) -> Self {
        Self::Key {
            key: format!("{key:?}"),
            error,
        }
    }

    pub(crate) fn panicked(size: usize, payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".to_owned());
        Self::Panicked { size, message }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_cause_is_printed_once_whatever_the_error_type() {
        // `String` is not a `std::error::Error`, yet `Error<String>` is one, for `?` into anyhow.
        let error: Error<String> = Error::Batch {
            size: 3,
            error: Arc::new("connection reset".to_owned()),
        };
        let as_std: &(dyn std::error::Error + 'static) = &error;
        assert_eq!(
            as_std.to_string(),
            "the batch function failed for a batch of 3: connection reset"
        );
        assert!(
            error.source().is_none(),
            "in the message, so not also a source"
        );
        let error: Error<std::io::Error> =
            Error::key(&7, Arc::new(std::io::Error::other("forbidden")));
        assert_eq!(error.to_string(), "loading key 7 failed: forbidden");
        assert!(error.source().is_none());
    }
}
