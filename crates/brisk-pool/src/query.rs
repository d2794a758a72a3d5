//! Per-statement query timing for diesel connections: a histogram per statement, an error
//! count, and a log line for each slow statement, installed by the connector on every
//! connection it makes.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use brisk_metrics::{Counter, Histogram, Key, Recorder, Unit};
use diesel::connection::{DebugQuery, Instrumentation, InstrumentationEvent};
// tokio's clock: the same as std's in an application, and one tests can pause.
use tokio::time::Instant;

#[cfg(feature = "postgres")]
pub(crate) use crate::explain::Explainer;
use crate::{
    error::{Error, Result},
    statement::statement_label,
};

/// Without PostgreSQL there is nothing to explain on.
#[cfg(not(feature = "postgres"))]
pub(crate) enum Explainer {}

#[cfg(not(feature = "postgres"))]
impl Explainer {
    fn explain(&self, _: &str, _: &str, _: &str) {
        match *self {}
    }
}

/// Tracks the statements that pooled diesel connections run. Give it to a connector
/// ([`PgConnector::track_queries`](crate::diesel::PgConnector::track_queries),
/// [`SqliteConnector::track_queries`](crate::diesel::SqliteConnector::track_queries)); each
/// connection the connector makes reports:
///
/// - `brisk_pool_query_seconds{name, statement}`: how long each statement took, from diesel's
///   start to its finish (sending, the server's work, reading the reply);
/// - `brisk_pool_query_errors_total{name, statement}`: statements that failed;
/// - `brisk_pool_slow_queries_total{name}`, and a `WARN` event (target
///   `brisk_pool::slow_query`, fields `name`, `statement`, `elapsed_ms`, `threshold_ms`) for
///   each statement that took at least [`slow_threshold`](QueryTrackingBuilder::slow_threshold).
///
/// `statement` is the statement's normalised text, never its parameters: bind values are not
/// read, and literals written into the SQL become `?` (`WHERE id = 42` and `WHERE id = 7`
/// are one statement), lists of them one `?`, rows of a multi-row `VALUES` one row, whitespace
/// and comments collapse, and the text stops at
/// [`max_statement_len`](QueryTrackingBuilder::max_statement_len) characters. A statement
/// that starts with a `/* name: load_user */` comment is labelled by that name instead. At
/// most [`max_statements`](QueryTrackingBuilder::max_statements) distinct labels are kept;
/// later ones are reported as `statement="other"`.
///
/// ```
/// # fn main() -> Result<(), brisk_pool::Error> {
/// use std::time::Duration;
/// use brisk_pool::diesel::QueryTracking;
///
/// let registry = brisk_metrics::Registry::new();
/// let tracking = QueryTracking::builder()
///     .metrics(&registry, "main")
///     .slow_threshold(Duration::from_millis(200))
///     .build()?;
/// # let _ = tracking;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct QueryTracking {
    shared: Arc<Shared>,
}

impl fmt::Debug for QueryTracking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryTracking")
            .field("name", &self.shared.name)
            .field("slow_threshold", &self.shared.slow_threshold)
            .field("max_statements", &self.shared.max_statements)
            .field("max_statement_len", &self.shared.max_statement_len)
            .finish_non_exhaustive()
    }
}

struct Shared {
    recorder: Option<Arc<dyn Recorder>>,
    name: String,
    slow_threshold: Option<Duration>,
    slow: Counter,
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    explain: bool,
    max_statements: usize,
    max_statement_len: usize,
    /// Per statement label, its handles; at most `max_statements` entries plus `other`.
    statements: Mutex<HashMap<String, Arc<Statement>>>,
}

/// One statement label and its series.
struct Statement {
    label: String,
    seconds: Histogram,
    errors: Counter,
}

/// The label of statements beyond `max_statements`.
const OTHER: &str = "other";

impl QueryTracking {
    /// Configures query tracking.
    pub fn builder() -> QueryTrackingBuilder {
        QueryTrackingBuilder {
            recorder: None,
            name: "default".to_owned(),
            slow_threshold: Some(Duration::from_secs(1)),
            explain: false,
            max_statements: 200,
            max_statement_len: 200,
        }
    }

    /// The instrumentation one connection gets; `explainer` explains its slow statements.
    pub(crate) fn instrumentation(
        &self,
        explainer: Option<Arc<Explainer>>,
    ) -> QueryInstrumentation {
        QueryInstrumentation {
            shared: Arc::clone(&self.shared),
            started: VecDeque::new(),
            known: HashMap::new(),
            explainer,
        }
    }

    /// The tracking as a diesel instrumentation that passes every event on to `inner`, for
    /// connections that have an instrumentation of their own (diesel allows one): install it
    /// where you install `inner`, typically in an
    /// [`on_connect`](crate::PoolBuilder::on_connect) hook, instead of the connector's
    /// `track_queries` (whose instrumentation such a hook would replace). Slow statements are
    /// logged; their plans ([`explain_slow_queries`](QueryTrackingBuilder::explain_slow_queries))
    /// need the connector's `track_queries`.
    pub fn instrumentation_around<I: Instrumentation>(
        &self,
        inner: I,
    ) -> impl Instrumentation + use<I> {
        Around {
            tracking: self.instrumentation(None),
            inner,
        }
    }

    /// Whether slow statements' plans are wanted ([`QueryTrackingBuilder::explain_slow_queries`]).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn explains(&self) -> bool {
        self.shared.explain
    }
}

impl Shared {
    /// The statement labelled `label`, or `other` once `max_statements` labels exist.
    fn statement(&self, label: &str) -> Arc<Statement> {
        let mut statements = self
            .statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(statement) = statements.get(label) {
            return Arc::clone(statement);
        }
        let label = if statements.len() < self.max_statements {
            label
        } else {
            OTHER
        };
        Arc::clone(
            statements
                .entry(label.to_owned())
                .or_insert_with(|| Arc::new(self.new_statement(label))),
        )
    }

    fn new_statement(&self, label: &str) -> Statement {
        let key = |metric: &'static str| {
            Key::new(metric)
                .and_then(|key| key.with_label("name", self.name.clone()))
                .and_then(|key| key.with_label("statement", label.to_owned()))
        };
        let (seconds, errors) = match (
            &self.recorder,
            key("brisk_pool_query_seconds"),
            key("brisk_pool_query_errors_total"),
        ) {
            (Some(recorder), Ok(seconds), Ok(errors)) => (
                recorder.histogram(&seconds, Unit::Seconds),
                recorder.counter(&errors),
            ),
            _ => (Histogram::noop(Unit::Seconds), Counter::noop()),
        };
        Statement {
            label: label.to_owned(),
            seconds,
            errors,
        }
    }

    /// Records a finished statement; whether it was slow.
    fn finished(&self, statement: &Statement, elapsed: Duration, failed: bool) -> bool {
        statement.seconds.record_duration(elapsed);
        if failed {
            statement.errors.increment();
        }
        if let Some(threshold) = self.slow_threshold.filter(|t| elapsed >= *t) {
            self.slow.increment();
            tracing::warn!(
                target: "brisk_pool::slow_query",
                name = %self.name,
                statement = %statement.label,
                elapsed_ms = elapsed.as_secs_f64() * 1e3,
                threshold_ms = threshold.as_secs_f64() * 1e3,
                "slow query"
            );
            return true;
        }
        false
    }
}

/// Configures a [`QueryTracking`]; from [`QueryTracking::builder`].
#[must_use = "call `build()` to get the tracking"]
pub struct QueryTrackingBuilder {
    recorder: Option<Arc<dyn Recorder>>,
    name: String,
    slow_threshold: Option<Duration>,
    explain: bool,
    max_statements: usize,
    max_statement_len: usize,
}

impl fmt::Debug for QueryTrackingBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryTrackingBuilder")
            .field("name", &self.name)
            .field("slow_threshold", &self.slow_threshold)
            .field("max_statements", &self.max_statements)
            .field("max_statement_len", &self.max_statement_len)
            .finish_non_exhaustive()
    }
}

impl QueryTrackingBuilder {
    /// Where the per-statement metrics go (kept: statements are found as they run), labelled
    /// `name="<name>"`. Without it, only slow statements are logged.
    pub fn metrics<R: Recorder + Clone + 'static>(mut self, recorder: &R, name: &str) -> Self {
        self.recorder = Some(Arc::new(recorder.clone()));
        self.name = name.to_owned();
        self
    }

    /// Statements that take at least this long are logged (`WARN`, target
    /// `brisk_pool::slow_query`) and counted. Default: 1 s.
    pub fn slow_threshold(mut self, threshold: Duration) -> Self {
        self.slow_threshold = Some(threshold);
        self
    }

    /// PostgreSQL: logs the plan of each slow statement after it (`WARN`, target
    /// `brisk_pool::slow_query`, message `slow query plan`, field `plan`), as `auto_explain`
    /// does, without the extension. The plan is PostgreSQL's generic plan, made on a
    /// connection of its own (`plan_cache_mode = force_generic_plan`, `PREPARE`, `EXPLAIN
    /// EXECUTE` with `NULL`s), so parameters show as `$1` and no value is planned with or
    /// logged; statements with literals in their text, or several statements, are not
    /// explained. One plan at a time, each statement at most every 10 minutes. SQLite
    /// connections ignore it. Default: off.
    pub fn explain_slow_queries(mut self) -> Self {
        self.explain = true;
        self
    }

    /// Logs no slow statements.
    pub fn no_slow_log(mut self) -> Self {
        self.slow_threshold = None;
        self
    }

    /// At most this many distinct statement labels; later statements are reported as
    /// `statement="other"`. Default: 200.
    pub fn max_statements(mut self, max: usize) -> Self {
        self.max_statements = max;
        self
    }

    /// A statement's label stops after this many characters (and ends in `…`). Default: 200.
    pub fn max_statement_len(mut self, max: usize) -> Self {
        self.max_statement_len = max;
        self
    }

    /// The tracking, for connectors to install.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero `slow_threshold`, `max_statements` or
    /// `max_statement_len`.
    pub fn build(self) -> Result<QueryTracking> {
        if self.slow_threshold == Some(Duration::ZERO) {
            return Err(Error::config(
                "slow_threshold",
                "0s",
                "more than zero (no_slow_log() turns the log off)",
            ));
        }
        if self.max_statements == 0 {
            return Err(Error::config("max_statements", "0", "at least 1"));
        }
        if self.max_statement_len == 0 {
            return Err(Error::config("max_statement_len", "0", "at least 1"));
        }
        let slow = match (&self.recorder, Key::new("brisk_pool_slow_queries_total")) {
            (Some(recorder), Ok(key)) => key
                .with_label("name", self.name.clone())
                .map_or_else(|_| Counter::noop(), |key| recorder.counter(&key)),
            _ => Counter::noop(),
        };
        if let Some(recorder) = &self.recorder {
            brisk_metrics::describe(&**recorder, crate::METRICS);
        }
        Ok(QueryTracking {
            shared: Arc::new(Shared {
                recorder: self.recorder,
                name: self.name,
                slow_threshold: self.slow_threshold,
                slow,
                explain: self.explain,
                max_statements: self.max_statements,
                max_statement_len: self.max_statement_len,
                statements: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// The diesel instrumentation on one connection.
pub(crate) struct QueryInstrumentation {
    shared: Arc<Shared>,
    /// Statements started and not finished, oldest first, by the hash of their SQL
    /// (pipelined statements may be in flight together). A statement whose future was
    /// dropped never finishes: its start stays here, unclaimed, until newer starts push it
    /// out (bounded by `MAX_IN_FLIGHT`, oldest dropped first).
    started: VecDeque<(u64, Instant)>,
    /// The statements this connection has run, by the hash of their SQL, so a statement
    /// run again is neither formatted nor normalised again. Bounded by `MAX_KNOWN`.
    known: HashMap<u64, Arc<Statement>>,
    explainer: Option<Arc<Explainer>>,
}

/// Statements in flight on one connection that are remembered.
const MAX_IN_FLIGHT: usize = 64;
/// Distinct SQL texts one connection remembers the label of.
const MAX_KNOWN: usize = 256;

impl QueryInstrumentation {
    fn started(&mut self, query: &dyn DebugQuery) {
        if self.started.len() == MAX_IN_FLIGHT {
            self.started.pop_front();
        }
        self.started.push_back((sql_hash(query), Instant::now()));
    }

    fn finished(&mut self, query: &dyn DebugQuery, failed: bool) {
        // diesel-async's finish shows the SQL alone, its start the binds too: the hash covers
        // the SQL only.
        let hash = sql_hash(query);
        // The newest start of this SQL: a start that no finish will claim (its future was
        // dropped) is older than every live run of the SQL made after it, so it is never
        // taken while one of them is in flight, and a run never records the time since a
        // cancelled start. (Runs of one SQL in flight together may swap their starts; each
        // sample still lies within their shared span.)
        let Some(at) = self.started.iter().rposition(|(h, _)| *h == hash) else {
            return;
        };
        let Some((_, started)) = self.started.remove(at) else {
            return;
        };
        let elapsed = started.elapsed();
        let statement = match self.known.get(&hash) {
            Some(statement) => Arc::clone(statement),
            None => {
                let text = query.to_string();
                let sql = &text[..sql_len(&text)];
                let label = statement_label(sql, self.shared.max_statement_len);
                let statement = self.shared.statement(&label);
                if self.known.len() < MAX_KNOWN {
                    self.known.insert(hash, Arc::clone(&statement));
                }
                statement
            }
        };
        let slow = self.shared.finished(&statement, elapsed, failed);
        if let (true, Some(explainer)) = (slow, &self.explainer) {
            let text = query.to_string();
            let sql = &text[..sql_len(&text)];
            explainer.explain(&self.shared.name, &statement.label, sql);
        }
    }

    /// Hands the query events of `event` to the tracking.
    fn observe(&mut self, event: &InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => self.started(*query),
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                self.finished(*query, error.is_some());
            }
            _ => {}
        }
    }
}

impl Instrumentation for QueryInstrumentation {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        self.observe(&event);
    }
}

/// [`QueryTracking::instrumentation_around`]: the tracking first, then the connection's own
/// instrumentation.
struct Around<I> {
    tracking: QueryInstrumentation,
    inner: I,
}

impl<I: Instrumentation> Instrumentation for Around<I> {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        self.tracking.observe(&event);
        self.inner.on_connection_event(event);
    }
}

/// Hashes the SQL of a statement as diesel shows it (`<sql> -- binds: [...]`), without
/// allocating and without formatting the binds.
fn sql_hash(query: &dyn fmt::Display) -> u64 {
    struct SqlHasher(std::hash::DefaultHasher);
    impl fmt::Write for SqlHasher {
        fn write_str(&mut self, piece: &str) -> fmt::Result {
            if piece == BINDS {
                // Stop: the rest is the binds.
                return Err(fmt::Error);
            }
            std::hash::Hasher::write(&mut self.0, piece.as_bytes());
            Ok(())
        }
    }
    let mut hasher = SqlHasher(std::hash::DefaultHasher::new());
    // An error is the stop at the binds.
    let _ = fmt::write(&mut hasher, format_args!("{query}"));
    std::hash::Hasher::finish(&hasher.0)
}

/// What diesel writes between a statement's SQL and its binds.
const BINDS: &str = " -- binds: ";

/// The length of the SQL in diesel's `<sql> -- binds: [...]`.
fn sql_len(text: &str) -> usize {
    text.rfind(BINDS).unwrap_or(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shown as diesel shows a statement with binds.
    struct WithBinds(&'static str, Vec<i32>);

    impl fmt::Display for WithBinds {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} -- binds: {:?}", self.0, self.1)
        }
    }

    #[test]
    fn the_hash_covers_the_sql_and_not_the_binds() {
        let sql = "SELECT * FROM t WHERE id = $1";
        assert_eq!(sql_hash(&WithBinds(sql, vec![1])), sql_hash(&sql));
        assert_eq!(
            sql_hash(&WithBinds(sql, vec![1])),
            sql_hash(&WithBinds(sql, vec![2, 3]))
        );
        assert_ne!(sql_hash(&sql), sql_hash(&"SELECT * FROM u WHERE id = $1"));
    }
}
