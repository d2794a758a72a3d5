//! Per-statement query timing for diesel connections: a histogram per statement, an error
//! count, and a log line for each slow statement, installed by the connector on every
//! connection it makes.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use brisk_metrics::{Counter, Histogram, Key, Recorder, Unit};
use diesel::connection::{Instrumentation, InstrumentationEvent};

use crate::error::{Error, Result};
#[cfg(feature = "postgres")]
pub(crate) use crate::explain::Explainer;

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
            return Err(config_error(
                "slow_threshold",
                "0s",
                "more than zero (no_slow_log() turns the log off)",
            ));
        }
        if self.max_statements == 0 {
            return Err(config_error("max_statements", "0", "at least 1"));
        }
        if self.max_statement_len == 0 {
            return Err(config_error("max_statement_len", "0", "at least 1"));
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

fn config_error(setting: &str, value: &str, reason: &'static str) -> Error {
    Error::Config {
        setting: setting.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

/// The diesel instrumentation on one connection.
pub(crate) struct QueryInstrumentation {
    shared: Arc<Shared>,
    /// Statements started and not finished, oldest first, by the hash of their SQL
    /// (pipelined statements may be in flight together). Bounded: a statement whose future
    /// was dropped never finishes.
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

impl Instrumentation for QueryInstrumentation {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        match event {
            InstrumentationEvent::StartQuery { query, .. } => {
                if self.started.len() == MAX_IN_FLIGHT {
                    self.started.pop_front();
                }
                self.started.push_back((sql_hash(query), Instant::now()));
            }
            InstrumentationEvent::FinishQuery { query, error, .. } => {
                // diesel-async's finish shows the SQL alone, its start the binds too: the
                // hash covers the SQL only.
                let hash = sql_hash(query);
                let Some(at) = self.started.iter().position(|(h, _)| *h == hash) else {
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
                        let label = statement_label(&text, self.shared.max_statement_len);
                        let statement = self.shared.statement(&label);
                        if self.known.len() < MAX_KNOWN {
                            self.known.insert(hash, Arc::clone(&statement));
                        }
                        statement
                    }
                };
                let slow = self.shared.finished(&statement, elapsed, error.is_some());
                if let (true, Some(explainer)) = (slow, &self.explainer) {
                    let text = query.to_string();
                    let sql = &text[..sql_len(&text)];
                    explainer.explain(&self.shared.name, &statement.label, sql);
                }
            }
            _ => {}
        }
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

/// The label of a statement as diesel shows it (`<sql> -- binds: [...]`): its
/// `/* name: ... */`, or its normalised SQL, at most `max` characters.
pub(crate) fn statement_label(text: &str, max: usize) -> String {
    let sql = &text[..sql_len(text)];
    if let Some(name) = given_name(sql) {
        return truncate(name.to_owned(), max);
    }
    normalise(sql, max)
}

/// The name in a leading `/* name: load_user */` comment, if it is a plain identifier.
fn given_name(sql: &str) -> Option<&str> {
    let rest = sql.trim_start().strip_prefix("/*")?;
    let (comment, _) = rest.split_once("*/")?;
    let name = comment.trim().strip_prefix("name:")?.trim();
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
    plain.then_some(name)
}

fn truncate(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// SQL with literals replaced by `?`, lists of them by one, rows of a multi-row `VALUES` by
/// one, comments dropped and whitespace collapsed; at most `max` characters (then `…`).
fn normalise(sql: &str, max: usize) -> String {
    let mut out = String::with_capacity(sql.len().min(max + 4));
    let mut chars = sql.chars().peekable();
    let mut count = 0;
    let mut space = false;
    while let Some(c) = chars.next() {
        if count >= max {
            // More text follows: cut (a quoted identifier may have gone past `max`) and mark.
            let mut out = truncate(out, max);
            if !out.ends_with('…') {
                out.push('…');
            }
            return out;
        }
        let piece: Piece = match c {
            '\'' => {
                // A string literal; '' is a quote inside it.
                while let Some(c) = chars.next() {
                    if c == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
                Piece::Literal
            }
            '$' if chars.peek().is_some_and(char::is_ascii_digit) => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                Piece::Literal
            }
            c if c.is_ascii_digit() && (space || !out.ends_with(is_word)) => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                {
                    chars.next();
                }
                Piece::Literal
            }
            '-' if chars.peek() == Some(&'-') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                Piece::Space
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
                Piece::Space
            }
            // SQLite's and MySQL's placeholder.
            '?' => Piece::Literal,
            c if c.is_whitespace() => Piece::Space,
            '"' => {
                // A quoted identifier, kept as written.
                let mut ident = String::from('"');
                for c in chars.by_ref() {
                    ident.push(c);
                    if c == '"' {
                        break;
                    }
                }
                Piece::Text(ident)
            }
            c => Piece::Char(c),
        };
        match piece {
            Piece::Space => space = !out.is_empty(),
            piece => {
                if space {
                    out.push(' ');
                    count += 1;
                    space = false;
                }
                match piece {
                    Piece::Literal => {
                        // `?, ?` is one `?`.
                        if out.ends_with("?, ") {
                            out.truncate(out.len() - 2);
                            count -= 2;
                        } else if out.ends_with("?,") {
                            out.truncate(out.len() - 1);
                            count -= 1;
                        } else {
                            out.push('?');
                            count += 1;
                        }
                    }
                    Piece::Text(text) => {
                        count += text.chars().count();
                        out.push_str(&text);
                    }
                    Piece::Char(c) => {
                        out.push(c);
                        count += 1;
                        // `(?), (?)` is one row.
                        if c == ')' && out.ends_with("(?), (?)") {
                            out.truncate(out.len() - ", (?)".len());
                            count -= ", (?)".len();
                        } else if c == ')' && out.ends_with("(?),(?)") {
                            out.truncate(out.len() - ",(?)".len());
                            count -= ",(?)".len();
                        }
                    }
                    Piece::Space => {}
                }
            }
        }
    }
    truncate(out, max)
}

enum Piece {
    Literal,
    Space,
    Text(String),
    Char(char),
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn label(text: &str) -> String {
        statement_label(text, 200)
    }

    #[test]
    fn literals_lists_rows_and_binds_fold_into_one_statement() {
        assert_eq!(
            label(r#"SELECT "users"."id" FROM "users" WHERE "users"."id" = $1 -- binds: [42]"#),
            r#"SELECT "users"."id" FROM "users" WHERE "users"."id" = ?"#
        );
        assert_eq!(
            label("select * from t where id = 42 and name = 'O''Brien'"),
            label("select  *\n from t where id = 7 and name = 'x'"),
        );
        assert_eq!(
            label("SELECT * FROM t WHERE id IN ($1, $2, $3) -- binds: [1, 2, 3]"),
            "SELECT * FROM t WHERE id IN (?)"
        );
        assert_eq!(
            label("SELECT * FROM t WHERE id IN (1,2,3,4)"),
            "SELECT * FROM t WHERE id IN (?)"
        );
        assert_eq!(
            label(
                "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) -- binds: [1, 2, 3, 4, 5, 6]"
            ),
            "INSERT INTO t (a, b) VALUES (?)"
        );
        assert_eq!(
            label("SELECT col2, t1.x FROM t1 -- trailing\n /* note */ LIMIT 10"),
            "SELECT col2, t1.x FROM t1 LIMIT ?"
        );
        assert_eq!(label("SELECT 1"), "SELECT ?");
        assert_eq!(
            label("INSERT INTO t (id, name) VALUES (?, ?) -- binds: [1, \"a\"]"),
            "INSERT INTO t (id, name) VALUES (?)"
        );
        assert_eq!(label("SELECT 1.5e3"), "SELECT ?");
    }

    #[test]
    fn a_name_comment_is_the_label_and_long_text_is_cut() {
        assert_eq!(
            label("/* name: load_user */ SELECT * FROM users WHERE id = $1 -- binds: [1]"),
            "load_user"
        );
        // Not a plain name: the SQL is the label.
        assert_eq!(label("/* name: a b */ SELECT 1"), "SELECT ?");
        let long = format!("SELECT {} FROM t", "column_name, ".repeat(50));
        let cut = statement_label(&long, 40);
        assert_eq!(cut.chars().count(), 41);
        assert!(cut.ends_with('…'));
    }

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

    proptest! {
        #[test]
        fn any_text_gives_a_bounded_label(
            text in "(?s).{0,600}",
            max in 1..300_usize,
        ) {
            let out = statement_label(&text, max);
            prop_assert!(out.chars().count() <= max + 1, "{out:?}");
        }

        #[test]
        fn numbers_and_strings_never_reach_the_label(
            n in any::<u64>(),
            s in "[a-z0-9 ]{0,20}",
        ) {
            let sql = format!("SELECT * FROM t WHERE a = {n} AND b = '{s}' AND c = ${n}");
            let out = label(&sql);
            prop_assert_eq!(out, "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?");
        }
    }
}
