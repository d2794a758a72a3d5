use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

/// A connect error, boxed so that one [`Error`] type serves every connection kind (the one
/// alias of every brisk crate, from brisk-metrics).
pub use brisk_metrics::BoxError;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a pool operation can fail with.
///
/// Every variant names the pool's target (the server, without credentials), so a log line says
/// which of several pools failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection became available within the acquire timeout. When connects were failing
    /// at the time, the last connect error says why (the database is down, the password is
    /// wrong, ...), instead of a bare "timed out".
    #[error("no connection to {target} within {waited:?}{}", LastError(.last_connect_error))]
    Timeout {
        /// The pool's target.
        target: Arc<str>,
        /// The acquire timeout that ran out.
        waited: Duration,
        /// The most recent connect error, if a connect failed during this wait or connects
        /// are failing now (so a wait that outlived an outage still says why it waited).
        last_connect_error: Option<Arc<BoxError>>,
    },
    /// Connecting failed while building the pool (its warm-up), or the connect hook failed.
    #[error("connecting to {target} failed")]
    Connect {
        /// The pool's target.
        target: Arc<str>,
        /// The connector's own error, or [`ConnectTimedOut`].
        source: Arc<BoxError>,
    },
    /// The pool's circuit breaker is open ([`PoolBuilder::circuit_breaker`](crate::PoolBuilder::circuit_breaker)):
    /// connects failed that many times in a row, so the checkout failed at once instead of
    /// waiting out the acquire timeout. A service can answer 503 with `Retry-After:
    /// retry_after` rounded up to whole seconds.
    #[error("{target} is unavailable: connects keep failing (next probe in {retry_after:?})")]
    Unavailable {
        /// The pool's target.
        target: Arc<str>,
        /// The most recent connect error (the source of this error).
        #[source]
        last_connect_error: Arc<BoxError>,
        /// How long until the next probe connects; zero while one is under way. A checkout can
        /// succeed no sooner than that probe.
        retry_after: Duration,
    },
    /// The pool was closed with [`Pool::close`](crate::Pool::close).
    #[error("the pool for {target} is closed")]
    Closed {
        /// The pool's target.
        target: Arc<str>,
    },
    /// A setting from a URL, the environment or the builder is invalid.
    #[error("invalid pool setting {setting}={value:?}: {reason}")]
    Config {
        /// The setting's name as it was given (`pool_max_size`, `DATABASE_POOL_MAX_SIZE`, ...).
        setting: String,
        /// The rejected value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
}

impl Error {
    /// [`Error::Config`] for `setting`, rejecting `value` for `reason`.
    pub(crate) fn config(
        setting: impl Into<String>,
        value: impl Into<String>,
        reason: &'static str,
    ) -> Self {
        Self::Config {
            setting: setting.into(),
            value: value.into(),
            reason,
        }
    }
}

/// A connect attempt took longer than the connect timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connect timed out after {0:?}")]
pub struct ConnectTimedOut(pub Duration);

/// A connect attempt panicked; the attempt fails with this error (the cause of
/// [`Error::Connect`], or the last connect error of a timeout or an open breaker) and the
/// pool goes on connecting. The panic's message is not kept: a driver's may quote the
/// connection string (the panic hook has already printed it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectPanicked {
    /// In [`Connect::connect`](crate::Connect::connect).
    #[error("the connector panicked while connecting")]
    Connect,
    /// In the `on_connect` hook ([`PoolBuilder::on_connect`](crate::PoolBuilder::on_connect)).
    #[error("the on_connect hook panicked")]
    Hook,
    /// In [`Connect::ready`](crate::Connect::ready).
    #[error("Connect::ready panicked")]
    Ready,
}

/// Formats `; last connect error: ...` when there is one.
struct LastError<'a>(&'a Option<Arc<BoxError>>);

impl fmt::Display for LastError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(error) => write!(f, "; last connect error: {}", Chain(&***error)),
            None => Ok(()),
        }
    }
}

/// An error and its sources, `outer: inner: innermost`: drivers often say only "error
/// connecting to server" at the top and keep the reason in a source.
struct Chain<'a>(&'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_error_is_its_source_not_repeated_in_the_message() {
        let error = Error::Connect {
            target: "postgres://app@127.0.0.1:5999/app".into(),
            source: Arc::new("connection refused".into()),
        };
        assert_eq!(
            error.to_string(),
            "connecting to postgres://app@127.0.0.1:5999/app failed"
        );
        assert_eq!(error.source().unwrap().to_string(), "connection refused");
    }

    #[test]
    fn timeout_names_the_last_connect_error() {
        let error = Error::Timeout {
            target: "postgres://app@127.0.0.1:5999/app".into(),
            waited: Duration::from_millis(250),
            last_connect_error: Some(Arc::new("connection refused".into())),
        };
        assert_eq!(
            error.to_string(),
            "no connection to postgres://app@127.0.0.1:5999/app within 250ms; \
             last connect error: connection refused"
        );
        let error = Error::Timeout {
            target: "redis://127.0.0.1:6399".into(),
            waited: Duration::from_secs(1),
            last_connect_error: None,
        };
        assert_eq!(
            error.to_string(),
            "no connection to redis://127.0.0.1:6399 within 1s"
        );
    }
}
