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
