use std::path::PathBuf;

/// Everything brisk-metrics can refuse: bad names, bad configuration, bad budget files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric name outside Prometheus' `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    #[error(
        "invalid metric name {0:?}: use letters, digits, `_` and `:`, not starting with a digit"
    )]
    InvalidMetricName(String),
    /// A label name outside `[a-zA-Z_][a-zA-Z0-9_]*`, starting with `__`, or reserved.
    #[error(
        "invalid label name {name:?} on metric {metric:?}: use letters, digits and `_`, not starting with a digit or `__`, and not `le` or `quantile`"
    )]
    InvalidLabelName {
        /// The metric the label was for.
        metric: String,
        /// The rejected label name.
        name: String,
    },
    /// The same label name given twice for one series.
    #[error("label {name:?} given twice on metric {metric:?}")]
    DuplicateLabel {
        /// The metric the label was for.
        metric: String,
        /// The repeated label name.
        name: String,
    },
    /// A builder setting out of range, refused by `build()`: histogram ranges or precision
    /// hdrhistogram cannot represent, bucket bounds that are empty, not finite or not
    /// increasing, a label-set cap or a stripe count of zero.
    #[error("invalid metrics setting {setting}={value}: {reason}")]
    Config {
        /// The builder method, as the user wrote it.
        setting: &'static str,
        /// The rejected value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// The process' figures could not be read (`/proc` missing, unreadable or not as
    /// expected).
    #[error("reading process figures from {file}")]
    ProcessStats {
        /// The file or directory.
        file: &'static str,
        /// What went wrong (`Unsupported` without `/proc`, `InvalidData` for an unexpected
        /// format).
        #[source]
        source: std::io::Error,
    },
    /// A budget file that could not be read.
    #[error("reading budget file {path}")]
    BudgetIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A budget file that is not valid: the message names the line.
    #[error("{origin}:{line}:{column}: {message}")]
    BudgetSyntax {
        /// The file name, or `<budgets>` for text.
        origin: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// A boxed error that can cross threads: the one alias every brisk crate uses (and
/// re-exports) where a caller's error type is erased, such as a body or a connect hook.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with brisk-metrics' [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn display_names_the_failure_and_source_gives_the_cause() {
        let error = Error::BudgetIo {
            path: PathBuf::from("budgets.toml"),
            source: std::io::Error::other("permission denied"),
        };
        assert_eq!(error.to_string(), "reading budget file budgets.toml");
        assert_eq!(error.source().unwrap().to_string(), "permission denied");
    }
}
