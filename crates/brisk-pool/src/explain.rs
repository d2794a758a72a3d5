//! The plan of a slow PostgreSQL statement, logged beside it, as PostgreSQL's `auto_explain`
//! does, without the server extension and without the statement's parameters.
//!
//! The plan is PostgreSQL's generic plan (`plan_cache_mode = force_generic_plan`, then
//! `PREPARE` and `EXPLAIN EXECUTE` with `NULL` arguments), so parameters show as `$1` and no
//! value is planned with or logged. Statements with literals written into their text are not
//! explained: their plan would show the literals.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::diesel::Tls;

/// How long one plan (connecting included) may take.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A statement is explained at most once per this interval.
const EXPLAIN_INTERVAL: Duration = Duration::from_secs(600);

/// Explains slow statements on a connection of its own, one at a time.
pub(crate) struct Explainer {
    /// The pool's connection settings, parsed (never shown: they hold the password).
    config: tokio_postgres::Config,
    tls: Tls,
    /// An explanation is running; slow statements meanwhile are not explained.
    busy: AtomicBool,
    /// The connection explanations run on, opened at the first and reopened after a failure.
    client: tokio::sync::Mutex<Option<Client>>,
    /// When each statement label was last explained; bounded by the tracking's
    /// `max_statements` (plus `other`), as the labels are.
    explained: Mutex<HashMap<String, Instant>>,
}

/// An explanation's place: dropped with its task, it lets the next one run.
struct Busy(Arc<Explainer>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

impl Explainer {
    pub(crate) fn new(config: tokio_postgres::Config, tls: Tls) -> Self {
        Self {
            config,
            tls,
            busy: AtomicBool::new(false),
            client: tokio::sync::Mutex::new(None),
            explained: Mutex::new(HashMap::new()),
        }
    }

    /// Starts explaining `sql` (labelled `label`) in the background, unless it cannot be
    /// explained without its values, was explained recently, another explanation is running,
    /// or no tokio runtime is here.
    pub(crate) fn explain(self: &Arc<Self>, name: &str, label: &str, sql: &str) {
        let Some(parameters) = explainable(sql) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut explained = self
                .explained
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if explained
                .get(label)
                .is_some_and(|at| at.elapsed() < EXPLAIN_INTERVAL)
            {
                return;
            }
            if self.busy.swap(true, Ordering::AcqRel) {
                return;
            }
            explained.insert(label.to_owned(), Instant::now());
        }
        let (explainer, name, label, sql) = (
            Arc::clone(self),
            name.to_owned(),
            label.to_owned(),
            sql.to_owned(),
        );
        // Frees the place however the task ends, even dropped before its first poll (its
        // runtime shut down): otherwise no statement would be explained again.
        let busy = Busy(Arc::clone(self));
        runtime.spawn(async move {
            let _busy = busy;
            let plan =
                tokio::time::timeout(EXPLAIN_TIMEOUT, explainer.plan(&sql, parameters)).await;
            match plan {
                Ok(Ok(plan)) => tracing::warn!(
                    target: "brisk_pool::slow_query",
                    name = %name,
                    statement = %label,
                    plan = %plan,
                    "slow query plan"
                ),
                Ok(Err(error)) => tracing::debug!(
                    target: "brisk_pool::slow_query",
                    name = %name,
                    statement = %label,
                    error = %error,
                    "no plan for the slow query"
                ),
                Err(_) => tracing::debug!(
                    target: "brisk_pool::slow_query",
                    name = %name,
                    statement = %label,
                    "no plan for the slow query: timed out"
                ),
            }
        });
    }

    /// The generic plan of `sql`, which has `parameters` placeholders.
    async fn plan(&self, sql: &str, parameters: usize) -> Result<String, tokio_postgres::Error> {
        let mut kept = self.client.lock().await;
        let session = match kept.take() {
            Some(session) if !session.is_closed() => session,
            _ => {
                let session = self.tls.client(&self.config).await?;
                session
                    .batch_execute("SET plan_cache_mode = force_generic_plan")
                    .await?;
                session
            }
        };
        let explain = if parameters == 0 {
            "EXPLAIN EXECUTE brisk_explain".to_owned()
        } else {
            format!(
                "EXPLAIN EXECUTE brisk_explain({})",
                vec!["NULL"; parameters].join(", ")
            )
        };
        session
            .batch_execute(&format!("PREPARE brisk_explain AS {sql}"))
            .await?;
        let rows = session.simple_query(&explain).await;
        session.batch_execute("DEALLOCATE brisk_explain").await?;
        let rows = rows?;
        // Kept for the next plan only when all went well: a failed step may leave the
        // prepared statement behind.
        *kept = Some(session);
        Ok(rows
            .iter()
            .filter_map(|message| match message {
                SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

/// The number of `$N` placeholders of `sql` if it can be explained without values: one
/// statement, no string or numeric literals in its text.
pub(crate) fn explainable(sql: &str) -> Option<usize> {
    let mut parameters = 0_usize;
    let mut chars = sql.char_indices().peekable();
    let mut previous_word = false;
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' | ';' => return None,
            '$' => {
                let mut number = String::new();
                while let Some((_, d)) = chars.next_if(|(_, d)| d.is_ascii_digit()) {
                    number.push(d);
                }
                // `$$` quoting or a bare `$`: not a placeholder.
                parameters = parameters.max(number.parse().ok()?);
                previous_word = true;
                continue;
            }
            '"' => {
                for (_, c) in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                }
            }
            '-' if chars.peek().is_some_and(|(_, c)| *c == '-') => return None,
            c if c.is_ascii_digit() && !previous_word => return None,
            _ => {}
        }
        previous_word = c.is_alphanumeric() || c == '_' || c == '"';
    }
    Some(parameters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explanation_dropped_before_it_ran_frees_its_place() {
        let explainer = Arc::new(Explainer::new(tokio_postgres::Config::new(), Tls::None));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The task is spawned and not yet run when `block_on` returns.
        runtime.block_on(async {
            explainer.explain(
                "main",
                "SELECT * FROM t WHERE id = ?",
                "SELECT * FROM t WHERE id = $1",
            );
        });
        assert!(
            explainer.busy.load(Ordering::Acquire),
            "an explanation holds the place"
        );
        drop(runtime);
        assert!(
            !explainer.busy.load(Ordering::Acquire),
            "its task went with the runtime, and the place with it"
        );
    }

    #[test]
    fn only_statements_without_values_in_their_text_are_explained() {
        assert_eq!(
            explainable("SELECT * FROM t WHERE id = $1 AND b = $2"),
            Some(2)
        );
        assert_eq!(explainable(r#"SELECT "col1", t2.x FROM t2"#), Some(0));
        assert_eq!(explainable("SELECT * FROM t WHERE id = 42"), None);
        assert_eq!(explainable("SELECT * FROM t WHERE name = 'alice'"), None);
        assert_eq!(explainable("SELECT 1; SELECT 2"), None);
        assert_eq!(explainable("SELECT $$text$$"), None);
        assert_eq!(explainable("SELECT * FROM t -- id = 42"), None);
        assert_eq!(explainable("SELECT * FROM t WHERE id = $10"), Some(10));
    }
}
