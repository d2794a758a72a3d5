use std::{convert::Infallible, time::Duration};

/// What a single-flight call can fail with.
///
/// `E` is the error type of the work itself. Every caller of a shared execution receives the
/// same error: the one that ran it gets the original, the others a clone.
///
/// `E` need not implement `std::error::Error` (`String` and `anyhow::Error` do not), so it is
/// written into the message rather than returned by `source()`: each cause is printed once,
/// and `Error<E>` is a `std::error::Error` for any `E` that is `Display + Debug`. The Redis
/// client's error, a `std::error::Error`, is the `source()` of [`Error::Redis`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// A builder setting out of range, refused by `build()`.
    #[error("invalid dedup setting {setting}={value}: {reason}")]
    Config {
        /// The builder method, as the user wrote it.
        setting: &'static str,
        /// The rejected value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// The work returned an error.
    #[error("the work for key {key} failed: {error}")]
    Work {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The work's own error (in the message, not a `source()`: see the type's docs).
        error: E,
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
    #[error("redis {op} for key {key} failed")]
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
    pub(crate) fn config(
        setting: &'static str,
        value: impl std::fmt::Debug,
        reason: &'static str,
    ) -> Self {
        Self::Config {
            setting,
            value: format!("{value:?}"),
            reason,
        }
    }

    /// The work's own error, when that is what this is.
    pub fn work_error(&self) -> Option<&E> {
        match self {
            Error::Work { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Turns this into the work's own error, or gives `self` back.
    pub fn into_work_error(self) -> Result<E, Self> {
        match self {
            Error::Work { error, .. } => Ok(error),
            other => Err(other),
        }
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
        let error: Error<String> = Error::Work {
            key: "\"k\"".to_owned(),
            error: "db down".to_owned(),
        };
        let as_std: &(dyn std::error::Error + 'static) = &error;
        assert_eq!(as_std.to_string(), "the work for key \"k\" failed: db down");
        assert!(
            error.source().is_none(),
            "in the message, so not also a source"
        );
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_error_is_the_source_not_the_message() {
        let error: Error<String> = Error::Redis {
            op: "acquire lease",
            key: "\"k\"".to_owned(),
            source: redis::RedisError::from(std::io::Error::other("connection reset")),
        };
        assert_eq!(
            error.to_string(),
            "redis acquire lease for key \"k\" failed"
        );
        assert!(
            error
                .source()
                .unwrap()
                .to_string()
                .contains("connection reset")
        );
    }
}
