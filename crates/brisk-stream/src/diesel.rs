//! diesel and diesel-async: a [`Plan`]'s predicate and order in the query builder, and its
//! values bound to raw SQL.
//!
//! ```
//! use brisk_stream::{Keyset, SortOrder, diesel::{filter, order}};
//! use diesel::prelude::*;
//!
//! diesel::table! {
//!     orders (id) {
//!         id -> BigInt,
//!         created_at -> BigInt,
//!         total_cents -> BigInt,
//!     }
//! }
//!
//! let keyset = Keyset::builder()
//!     .column("created_at", SortOrder::Desc)
//!     .unique_column("id", SortOrder::Desc)
//!     .build()?;
//! let plan = keyset.plan(Some(brisk_stream::Cursor::after(vec![1_700_000_000_i64.into(), 42_i64.into()])), Some(20))?;
//! let query = orders::table
//!     .filter(filter(&plan))
//!     .order(order(&plan))
//!     .limit(plan.fetch())
//!     .select((orders::id, orders::created_at));
//! let sql = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string();
//! assert!(sql.contains("WHERE ((created_at, id) < (?, ?)) ORDER BY created_at DESC, id DESC LIMIT ?"), "{sql}");
//! # Ok::<(), brisk_stream::Error>(())
//! ```

use diesel::{
    backend::Backend,
    expression::{
        AppearsOnTable, Expression, SelectableExpression, SqlLiteral, ValidGrouping, is_aggregate,
    },
    query_builder::{AstPass, BoxedSqlQuery, QueryFragment, QueryId},
    serialize::ToSql,
    sql_types::{BigInt, Bool, Double, HasSqlType, Nullable, Text},
};

use crate::keyset::{KeyValue, Piece, Plan};

/// The plan's `WHERE` condition for the query builder (`.filter(filter(&plan))`); `1 = 1` on a
/// first page. Values are bound parameters, never spliced into the text.
pub fn filter(plan: &Plan) -> KeysetFilter {
    KeysetFilter {
        pieces: plan.pieces.clone(),
    }
}

/// The plan's `ORDER BY` for the query builder (`.order(order(&plan))`).
pub fn order(plan: &Plan) -> SqlLiteral<Bool> {
    diesel::dsl::sql::<Bool>(plan.order_by())
}

/// Binds `values` (from [`Plan::sql_where`]) to a boxed raw query, in order.
pub fn bind_all<'f, DB, Query>(
    mut query: BoxedSqlQuery<'f, DB, Query>,
    values: Vec<KeyValue>,
) -> BoxedSqlQuery<'f, DB, Query>
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Double> + HasSqlType<Text> + HasSqlType<Bool>,
    i64: ToSql<BigInt, DB>,
    f64: ToSql<Double, DB>,
    String: ToSql<Text, DB>,
    bool: ToSql<Bool, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
{
    for value in values {
        query = match value {
            KeyValue::Null => query.bind::<Nullable<BigInt>, _>(None::<i64>),
            KeyValue::Bool(value) => query.bind::<Bool, _>(value),
            KeyValue::Int(value) => query.bind::<BigInt, _>(value),
            KeyValue::Float(value) => query.bind::<Double, _>(value),
            KeyValue::Text(value) => query.bind::<Text, _>(value),
        };
    }
    query
}

/// A keyset predicate as a diesel expression; from [`filter`].
#[derive(Debug, Clone)]
pub struct KeysetFilter {
    pieces: Vec<Piece>,
}

impl Expression for KeysetFilter {
    type SqlType = Bool;
}

impl<QS> AppearsOnTable<QS> for KeysetFilter {}

impl<QS> SelectableExpression<QS> for KeysetFilter {}

impl<GroupBy> ValidGrouping<GroupBy> for KeysetFilter {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for KeysetFilter {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for KeysetFilter
where
    DB: Backend + HasSqlType<BigInt> + HasSqlType<Double> + HasSqlType<Text> + HasSqlType<Bool>,
    i64: ToSql<BigInt, DB>,
    f64: ToSql<Double, DB>,
    String: ToSql<Text, DB>,
    bool: ToSql<Bool, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        if self.pieces.is_empty() {
            out.push_sql("1 = 1");
            return Ok(());
        }
        out.push_sql("(");
        for piece in &self.pieces {
            match piece {
                Piece::Sql(text) => out.push_sql(text),
                Piece::Bind(KeyValue::Null) => out.push_sql("NULL"),
                Piece::Bind(KeyValue::Bool(value)) => out.push_bind_param::<Bool, _>(value)?,
                Piece::Bind(KeyValue::Int(value)) => out.push_bind_param::<BigInt, _>(value)?,
                Piece::Bind(KeyValue::Float(value)) => out.push_bind_param::<Double, _>(value)?,
                Piece::Bind(KeyValue::Text(value)) => out.push_bind_param::<Text, _>(value)?,
            }
        }
        out.push_sql(")");
        Ok(())
    }
}

/// One query streamed whole from an owned connection, as a `'static` stream an HTTP body can
/// hold: diesel-async's `load_stream`, whose stream borrows its connection, made to own it.
///
/// The query runs on a task of its own, which decodes rows while the consumer encodes and
/// sends the earlier ones, and hands them over in batches of what is ready (at most 256 rows,
/// at most two batches ahead): a slow consumer holds the query back rather than growing a
/// buffer. Dropping the stream aborts the task and drops the connection (back to its pool, for
/// a pooled one). An error ends the stream after the rows before it.
///
/// Unlike [`Keyset::stream`](crate::Keyset::stream), this holds one connection (and, on
/// PostgreSQL, one snapshot) for the whole export; it is the fastest way through a table when
/// that is acceptable. Needs feature `diesel-async`.
#[cfg(feature = "diesel-async")]
#[cfg_attr(docsrs, doc(cfg(feature = "diesel-async")))]
pub fn stream_query<C, Q, U>(connection: C, query: Q) -> QueryStream<U>
where
    C: std::ops::DerefMut + Send + 'static,
    C::Target: diesel_async::AsyncConnectionCore + Send + Sized,
    Q: diesel_async::methods::LoadQuery<'static, C::Target, U> + Send + 'static,
    U: Send + 'static,
{
    use futures_util::StreamExt as _;

    let (sender, receiver) = tokio::sync::mpsc::channel::<diesel::QueryResult<Vec<U>>>(2);
    let task = tokio::spawn(async move {
        let mut connection = connection;
        let rows = match query.internal_load(&mut *connection).await {
            Ok(rows) => rows,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        let mut batches = std::pin::pin!(rows.ready_chunks(QUERY_BATCH));
        while let Some(batch) = batches.next().await {
            let mut rows = Vec::with_capacity(batch.len());
            let mut failure = None;
            for row in batch {
                match row {
                    Ok(row) => rows.push(row),
                    Err(error) => {
                        failure = Some(error);
                        break;
                    }
                }
            }
            if !rows.is_empty() && sender.send(Ok(rows)).await.is_err() {
                return;
            }
            if let Some(error) = failure {
                let _ = sender.send(Err(error)).await;
                return;
            }
        }
    });
    QueryStream {
        receiver,
        batch: Vec::new().into_iter(),
        task,
    }
}

/// The most rows handed over at once by [`stream_query`].
#[cfg(feature = "diesel-async")]
const QUERY_BATCH: usize = 256;

/// The rows of one query; from [`stream_query`].
#[cfg(feature = "diesel-async")]
#[cfg_attr(docsrs, doc(cfg(feature = "diesel-async")))]
#[must_use = "streams do nothing unless polled"]
#[derive(Debug)]
pub struct QueryStream<U> {
    receiver: tokio::sync::mpsc::Receiver<diesel::QueryResult<Vec<U>>>,
    batch: std::vec::IntoIter<U>,
    task: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "diesel-async")]
impl<U> Drop for QueryStream<U> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(feature = "diesel-async")]
impl<U: Unpin> futures_core::Stream for QueryStream<U> {
    type Item = diesel::QueryResult<U>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Some(row) = this.batch.next() {
                return Poll::Ready(Some(Ok(row)));
            }
            match std::task::ready!(this.receiver.poll_recv(cx)) {
                Some(Ok(batch)) => this.batch = batch.into_iter(),
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => return Poll::Ready(None),
            }
        }
    }
}
