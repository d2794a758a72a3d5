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
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Writing to the source behind the cache (a database) failed; the cache was not changed.
    #[error("writing key {key} to its source failed")]
    Write {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The source's own error.
        source: E,
    },
    /// A write-behind queue was shut down: the value was neither cached nor queued.
    #[error("the write-behind queue is shut down: key {key} was not queued")]
    Closed {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
    },
    /// A write-behind put found no room in its queue (nor, under a racing put of the same key,
    /// its turn) within its [`enqueue_timeout`](crate::WriteBehindBuilder::enqueue_timeout):
    /// the value was neither cached nor queued (back-pressure: the source is slow or down).
    #[error(
        "the write-behind queue of {capacity} rows stayed full for {waited:?}: key {key} was not queued"
    )]
    QueueFull {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The queue's capacity.
        capacity: usize,
        /// How long the put waited for room.
        waited: std::time::Duration,
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
    /// The load ran past the tiered cache's
    /// [`load_hard_timeout`](crate::TieredBuilder::load_hard_timeout) and no stale value could
    /// answer; the load goes on in the background and stores its value when it returns.
    #[error("the load of key {key} ran past its hard timeout of {after:?}")]
    LoadTimeout {
        /// The key, as `Debug` text (strings in quotes).
        key: String,
        /// The hard timeout.
        after: std::time::Duration,
    },
    /// The Redis level's circuit breaker is open after a run of failed calls: this call was
    /// not sent. It lets a probe through after a pause and closes when Redis answers.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("redis {op} of {key} not sent: the circuit breaker is open after repeated failures")]
    CircuitOpen {
        /// The command.
        op: &'static str,
        /// The cache key (without prefix and namespace), or a count of keys.
        key: String,
    },
    /// A Redis command failed (the server refused it, or the connection broke).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[error("redis {op} of {key} failed")]
    Redis {
        /// The command: `GET`, `MGET`, `SET`, `DEL`, `INCR`, or `pipeline`.
        op: &'static str,
        /// The cache key (without prefix and namespace), or a count of keys.
        key: String,
        /// The client's error.
        source: ::redis::RedisError,
    },
    /// A call to a remote level took longer than its timeout; whether a write took effect
    /// is unknown.
    #[error("{op} of {key} timed out after {after:?}")]
    Timeout {
        /// The command.
        op: &'static str,
        /// The cache key, or a count of keys.
        key: String,
        /// The timeout that ran out.
        after: std::time::Duration,
    },
    /// A value is larger, encoded and compressed, than the level's
    /// `max_value_size`; it was not stored.
    #[error("the value for key {key} is {size} bytes encoded, over the limit of {limit}")]
    ValueTooLarge {
        /// The cache key.
        key: String,
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A value could not be encoded for a remote level (its `Serialize` failed).
    #[error("encoding the value for key {key} failed: {message}")]
    Encode {
        /// The cache key.
        key: String,
        /// The serializer's message.
        message: String,
    },
    /// A stored value could not be decoded: written by another version of the value type or
    /// of brisk-cache, or corrupted. Bump the namespace when the type changes.
    #[error("decoding the stored value for key {key} failed: {message}")]
    Decode {
        /// The cache key.
        key: String,
        /// What was wrong.
        message: String,
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
    /// The same error with the loader's error mapped by `f`.
    pub(crate) fn map_load<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Error::Config {
                setting,
                value,
                reason,
            } => Error::Config {
                setting,
                value,
                reason,
            },
            Error::Load { key, source } => Error::Load {
                key,
                source: f(source),
            },
            Error::Write { key, source } => Error::Write {
                key,
                source: f(source),
            },
            Error::Closed { key } => Error::Closed { key },
            Error::QueueFull {
                key,
                capacity,
                waited,
            } => Error::QueueFull {
                key,
                capacity,
                waited,
            },
            Error::LoadPanicked { key, message } => Error::LoadPanicked { key, message },
            Error::LoadWaitTimeout { key, waited } => Error::LoadWaitTimeout { key, waited },
            Error::LoadTimeout { key, after } => Error::LoadTimeout { key, after },
            #[cfg(feature = "redis")]
            Error::Redis { op, key, source } => Error::Redis { op, key, source },
            #[cfg(feature = "redis")]
            Error::CircuitOpen { op, key } => Error::CircuitOpen { op, key },
            Error::Timeout { op, key, after } => Error::Timeout { op, key, after },
            Error::ValueTooLarge { key, size, limit } => Error::ValueTooLarge { key, size, limit },
            Error::Encode { key, message } => Error::Encode { key, message },
            Error::Decode { key, message } => Error::Decode { key, message },
            Error::Flight { key, message } => Error::Flight { key, message },
        }
    }

    /// The loader's own error, when that is what this is.
    pub fn load_error(&self) -> Option<&E> {
        match self {
            Error::Load { source, .. } => Some(source),
            _ => None,
        }
    }
}
