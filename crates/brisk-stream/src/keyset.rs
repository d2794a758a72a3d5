//! Keyset pagination: the predicate and order for any number of sort columns, from a cursor.

use std::{
    borrow::Cow,
    fmt::{self, Write as _},
    sync::Arc,
};

use brisk_metrics::{Counter, Recorder};
use serde::{Deserialize, Serialize};

use crate::{
    cursor::{Cursor, Cursors, Direction, Scope},
    error::{CursorRejection, Error, Result},
};

/// A value of a sort key, as a cursor carries it and as it is bound into the query: BIGINT,
/// DOUBLE PRECISION, TEXT or BOOLEAN (a column of another type, such as a timestamp, gets a
/// [cast](KeysetBuilder::cast)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyValue {
    /// SQL NULL (only in a [nullable](KeysetBuilder::nullable_column) column).
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer of any width.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Text (also dates and times in text form, with a cast).
    Text(String),
}

impl From<i64> for KeyValue {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<i32> for KeyValue {
    fn from(value: i32) -> Self {
        Self::Int(value.into())
    }
}

impl From<f64> for KeyValue {
    fn from(value: f64) -> Self {
        Self::Float(value)
    }
}

impl From<bool> for KeyValue {
    fn from(value: bool) -> Self {
        Self::Bool(value)
    }
}

impl From<String> for KeyValue {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<&str> for KeyValue {
    fn from(value: &str) -> Self {
        Self::Text(value.to_owned())
    }
}

impl<T: Into<KeyValue>> From<Option<T>> for KeyValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Null, Into::into)
    }
}

/// A sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest first.
    Desc,
}

/// Where NULLs sort in a nullable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nulls {
    /// Before every value.
    First,
    /// After every value.
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyColumn {
    name: String,
    order: SortOrder,
    /// `None` for a NOT NULL column.
    nulls: Option<Nulls>,
    cast: Option<String>,
}

impl KeyColumn {
    /// This column's order when paging backwards.
    fn reversed(&self) -> (SortOrder, Option<Nulls>) {
        let order = match self.order {
            SortOrder::Asc => SortOrder::Desc,
            SortOrder::Desc => SortOrder::Asc,
        };
        let nulls = self.nulls.map(|nulls| match nulls {
            Nulls::First => Nulls::Last,
            Nulls::Last => Nulls::First,
        });
        (order, nulls)
    }
}

/// The sort of a keyset-paged listing: its columns in order, the last of them unique, and the
/// bounds on a page's size.
///
/// From a [`Cursor`] it makes a [`Plan`]: the `WHERE` predicate that selects the rows after
/// (or before) the cursor's row, the `ORDER BY`, and the number of rows to fetch; from the rows
/// fetched, the plan makes the [`Page`] with its `next` and `prev` cursors. Every page costs
/// the same however deep it is (with an index on the sort columns), unlike `OFFSET`, which
/// reads and throws away every row before the page.
///
/// - When every column is NOT NULL and all sort the same way, the predicate is a row-value
///   comparison, `(a, b, id) > ($1, $2, $3)`, which PostgreSQL and SQLite answer from an index
///   on `(a, b, id)`.
/// - Otherwise (mixed directions, nullable columns) it is the expanded form,
///   `a > $1 OR (a = $1 AND (b < $2 OR (b = $2 AND id > $3)))`, with NULLs placed where the
///   column's [`Nulls`] puts them, and `ORDER BY` says `NULLS FIRST`/`NULLS LAST` explicitly, so
///   both databases sort the same way.
/// - A page before a cursor runs the reversed order and predicate, and is turned back.
///
/// Column names and casts come from code, not from clients: they are checked to be plain
/// identifiers (`name`, `table.name`) and type names.
///
/// ```
/// use brisk_stream::{KeyValue, Keyset, Nulls, SortOrder};
///
/// let keyset = Keyset::builder()
///     .column("created_at", SortOrder::Desc)
///     .nullable_column("shipped_at", SortOrder::Asc, Nulls::Last)
///     .unique_column("id", SortOrder::Desc)
///     .build()?;
/// let plan = keyset.first_page(Some(50))?;
/// assert_eq!(plan.order_by(), "created_at DESC, shipped_at ASC NULLS LAST, id DESC");
/// assert_eq!(plan.fetch(), 51); // one more than the page, to learn whether there is another
/// # Ok::<(), brisk_stream::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Keyset {
    pub(crate) columns: Arc<[KeyColumn]>,
    max_limit: usize,
    default_limit: usize,
    scope: Scope,
    pub(crate) pages: Counter,
}

/// Configures a [`Keyset`]; from [`Keyset::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct KeysetBuilder {
    columns: Vec<KeyColumn>,
    unique: bool,
    max_limit: usize,
    default_limit: usize,
    problem: Option<Error>,
    pages: Counter,
}

/// A page size setting's checks, shared by keyset and offset paging.
fn check_limits(default_limit: usize, max_limit: usize) -> Result<()> {
    if max_limit == 0 {
        return Err(Error::config(
            "max_limit",
            0,
            "a page must be allowed a row",
        ));
    }
    if default_limit == 0 || default_limit > max_limit {
        return Err(Error::config(
            "default_limit",
            default_limit,
            "must be from 1 to max_limit",
        ));
    }
    Ok(())
}

/// Whether `key` can be a position in a sort by `columns`: one value per column, NULL only in
/// a nullable one; the reason it cannot, otherwise.
fn fit(columns: &[KeyColumn], key: &[KeyValue]) -> Result<(), &'static str> {
    if key.len() != columns.len() {
        return Err(
            "does not fit the keyset: it has another number of values than the sort has columns",
        );
    }
    if columns
        .iter()
        .zip(key)
        .any(|(column, value)| column.nulls.is_none() && *value == KeyValue::Null)
    {
        return Err("does not fit the keyset: it is NULL in a NOT NULL column");
    }
    Ok(())
}

/// Whether `key`, from a row of a page that started after (or before) `from`, can be the
/// position of the page beside it; [`Error::SortKey`] otherwise.
pub(crate) fn check_key(
    columns: &[KeyColumn],
    from: Option<&[KeyValue]>,
    key: &[KeyValue],
) -> Result<()> {
    fit(columns, key).map_err(|reason| Error::SortKey { reason })?;
    if from == Some(key) {
        // The predicate excludes the row at `from`: a key equal to it did not come from the
        // row, and a cursor made of it would fetch the same page again, forever.
        return Err(Error::SortKey {
            reason: "does not move past the position its page started from (the same page would come back forever)",
        });
    }
    Ok(())
}

/// Whether `text` is a plain SQL identifier, optionally qualified (`table.column`).
fn is_identifier(text: &str) -> bool {
    text.split('.').all(is_plain_identifier)
}

/// Whether `part` is one unquoted SQL identifier: a letter or `_`, then letters, digits, `_`.
pub(crate) fn is_plain_identifier(part: &str) -> bool {
    let mut bytes = part.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `text` is a plain SQL type name (`timestamptz`, `timestamp with time zone`,
/// `numeric(10, 2)`).
fn is_type_name(text: &str) -> bool {
    !text.trim().is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" _(),".contains(&b))
}

impl KeysetBuilder {
    fn push(
        mut self,
        name: &str,
        order: SortOrder,
        nulls: Option<Nulls>,
        setting: &'static str,
    ) -> Self {
        if self.problem.is_none() {
            if self.unique {
                self.problem = Some(Error::config(
                    setting,
                    name,
                    "the unique column must be the last sort column",
                ));
            } else if !is_identifier(name) {
                self.problem = Some(Error::config(setting, name, "not a plain SQL identifier"));
            } else if self.columns.iter().any(|c| c.name == name) {
                self.problem = Some(Error::config(
                    setting,
                    name,
                    "this column is already in the sort",
                ));
            }
        }
        self.columns.push(KeyColumn {
            name: name.to_owned(),
            order,
            nulls,
            cast: None,
        });
        self
    }

    /// A NOT NULL sort column.
    pub fn column(self, name: &str, order: SortOrder) -> Self {
        self.push(name, order, None, "column")
    }

    /// A sort column that may hold NULL, sorted where `nulls` says.
    pub fn nullable_column(self, name: &str, order: SortOrder, nulls: Nulls) -> Self {
        self.push(name, order, Some(nulls), "nullable_column")
    }

    /// The last sort column: NOT NULL and unique (usually the primary key), so that rows with
    /// equal values in the other columns still have one order and none is skipped. Required.
    pub fn unique_column(mut self, name: &str, order: SortOrder) -> Self {
        self = self.push(name, order, None, "unique_column");
        self.unique = true;
        self
    }

    /// Binds the last column's key values as `CAST(value AS <sql_type>)`, for a column that is
    /// not BIGINT, DOUBLE PRECISION, TEXT or BOOLEAN (say `timestamptz`, with the key value as
    /// text).
    pub fn cast(mut self, sql_type: &str) -> Self {
        if self.problem.is_none() && !is_type_name(sql_type) {
            self.problem = Some(Error::config("cast", sql_type, "not a plain SQL type name"));
        }
        match self.columns.last_mut() {
            Some(column) => column.cast = Some(sql_type.to_owned()),
            None => {
                self.problem.get_or_insert(Error::config(
                    "cast",
                    sql_type,
                    "a cast applies to the column before it; there is none",
                ));
            }
        }
        self
    }

    /// The most rows a page may have; a client asking for more gets this many. Default 100.
    pub fn max_limit(mut self, rows: usize) -> Self {
        self.max_limit = rows;
        self
    }

    /// The rows in a page when the client does not say. Default 20.
    pub fn default_limit(mut self, rows: usize) -> Self {
        self.default_limit = rows;
        self
    }

    /// Counts pages served (`brisk_stream_pages_total`, by [`Plan::page`] and each page of a
    /// [`KeysetStream`](crate::KeysetStream)), labelled `name="<name>"`.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.pages = crate::metrics::counter(recorder, "brisk_stream_pages_total", name, None);
        self
    }

    /// The keyset, or [`Error::Config`] for a column that is not an identifier, a unique column
    /// missing or not last, or limits of 0 or a default above the maximum.
    pub fn build(self) -> Result<Keyset> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        if !self.unique {
            return Err(Error::config(
                "unique_column",
                "none",
                "the sort must end with a unique column, or rows with equal keys are skipped",
            ));
        }
        check_limits(self.default_limit, self.max_limit)?;
        let mut description = String::from("keyset:");
        for column in &self.columns {
            let _ = write!(
                description,
                " {} {:?} {:?} {:?};",
                column.name, column.order, column.nulls, column.cast
            );
        }
        Ok(Keyset {
            scope: Scope::new(&description),
            columns: self.columns.into(),
            max_limit: self.max_limit,
            default_limit: self.default_limit,
            pages: self.pages,
        })
    }
}

impl Keyset {
    /// Configures a keyset: sort columns in order, ending with a
    /// [unique](KeysetBuilder::unique_column) one.
    pub fn builder() -> KeysetBuilder {
        KeysetBuilder {
            columns: Vec::new(),
            unique: false,
            max_limit: 100,
            default_limit: 20,
            problem: None,
            pages: Counter::noop(),
        }
    }

    /// The scope of this sort: cursors are bound to it. Narrow it with the listing's filter
    /// ([`Scope::filter`]) before encoding or decoding cursors.
    pub fn scope(&self) -> Scope {
        self.scope.clone()
    }

    /// The page size for a client's `requested` limit: the default when absent, and within
    /// 1 ..= `max_limit` otherwise.
    pub fn limit(&self, requested: Option<usize>) -> usize {
        requested.map_or(self.default_limit, |rows| rows.clamp(1, self.max_limit))
    }

    /// The plan of the first page.
    pub fn first_page(&self, limit: Option<usize>) -> Result<Plan> {
        self.plan(None, limit)
    }

    /// The plan of the page a client's `cursor` text points at (the first page when there is
    /// none), decoded with `cursors` in `scope` (this keyset's [scope](Self::scope), narrowed
    /// by the listing's filter).
    pub fn page_at(
        &self,
        cursors: &Cursors,
        scope: &Scope,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Plan> {
        let cursor = cursor
            .map(|text| cursors.decode::<Vec<KeyValue>>(scope, text))
            .transpose()?;
        self.plan(cursor, limit)
    }

    /// The plan of the page after or before `cursor` (the first page when there is none).
    /// A key that does not fit this sort (another number of values, or NULL in a NOT NULL
    /// column) is [`Error::InvalidCursor`] with reason `wrong_query`.
    pub fn plan(
        &self,
        cursor: Option<Cursor<Vec<KeyValue>>>,
        limit: Option<usize>,
    ) -> Result<Plan> {
        self.plan_exact(cursor, self.limit(limit))
    }

    /// [`plan`](Self::plan) with a page size from code, not bounded by `max_limit`.
    pub(crate) fn plan_exact(
        &self,
        cursor: Option<Cursor<Vec<KeyValue>>>,
        limit: usize,
    ) -> Result<Plan> {
        let limit = limit.max(1);
        let direction = cursor.as_ref().map_or(Direction::After, |c| c.direction);
        let mut plan = Plan {
            pieces: Vec::new(),
            order_by: String::new(),
            limit,
            direction,
            from: None,
            columns: self.columns.clone(),
            pages: self.pages.clone(),
        };
        let backward = direction == Direction::Before;
        for (index, column) in self.columns.iter().enumerate() {
            let (order, nulls) = if backward {
                column.reversed()
            } else {
                (column.order, column.nulls)
            };
            if index > 0 {
                plan.order_by.push_str(", ");
            }
            plan.order_by.push_str(&column.name);
            plan.order_by.push_str(match order {
                SortOrder::Asc => " ASC",
                SortOrder::Desc => " DESC",
            });
            match nulls {
                Some(Nulls::First) => plan.order_by.push_str(" NULLS FIRST"),
                Some(Nulls::Last) => plan.order_by.push_str(" NULLS LAST"),
                None => {}
            }
        }
        if let Some(cursor) = cursor {
            if fit(&self.columns, &cursor.key).is_err() {
                return Err(Error::InvalidCursor {
                    reason: CursorRejection::WrongQuery,
                });
            }
            plan.pieces = self.predicate(&cursor.key, backward);
            plan.from = Some(cursor.key);
        }
        Ok(plan)
    }

    /// `WHERE` pieces selecting the rows strictly after `key` in the sort (strictly before it
    /// when `backward`).
    fn predicate(&self, key: &[KeyValue], backward: bool) -> Vec<Piece> {
        let columns: Vec<(&KeyColumn, SortOrder, Option<Nulls>)> = self
            .columns
            .iter()
            .map(|column| {
                let (order, nulls) = if backward {
                    column.reversed()
                } else {
                    (column.order, column.nulls)
                };
                (column, order, nulls)
            })
            .collect();
        let mut out = Vec::new();
        let same_order = columns.iter().all(|(_, order, _)| *order == columns[0].1);
        let not_null = columns.iter().all(|(_, _, nulls)| nulls.is_none());
        if same_order && not_null && columns.len() > 1 {
            // (a, b, id) > ($1, $2, $3)
            out.push(Piece::Sql("(".into()));
            for (index, (column, _, _)) in columns.iter().enumerate() {
                if index > 0 {
                    out.push(Piece::Sql(", ".into()));
                }
                out.push(Piece::Sql(column.name.clone().into()));
            }
            out.push(Piece::Sql(match columns[0].1 {
                SortOrder::Asc => ") > (".into(),
                SortOrder::Desc => ") < (".into(),
            }));
            for (index, ((column, _, _), value)) in columns.iter().zip(key).enumerate() {
                if index > 0 {
                    out.push(Piece::Sql(", ".into()));
                }
                push_value(&mut out, column, value);
            }
            out.push(Piece::Sql(")".into()));
            return out;
        }
        // The expanded form, nested: after(c1) OR (c1 = k1 AND (after(c2) OR (...))).
        // A leading non-null column also gets `c1 >= k1 AND (...)`, which lets a planner use
        // an index range on it.
        let (first, first_order, first_nulls) = columns[0];
        if first_nulls.is_none() {
            out.push(Piece::Sql(first.name.clone().into()));
            out.push(Piece::Sql(match first_order {
                SortOrder::Asc => " >= ".into(),
                SortOrder::Desc => " <= ".into(),
            }));
            push_value(&mut out, first, &key[0]);
            out.push(Piece::Sql(" AND ".into()));
        }
        let mut open = 0;
        for (index, ((column, order, nulls), value)) in columns.iter().zip(key).enumerate() {
            let last = index + 1 == columns.len();
            out.push(Piece::Sql("(".into()));
            open += 1;
            let after = after_value(&mut out, column, *order, *nulls, value);
            if last {
                if !after {
                    out.push(Piece::Sql("1 = 0".into()));
                }
                break;
            }
            if after {
                out.push(Piece::Sql(" OR ".into()));
            }
            out.push(Piece::Sql("(".into()));
            open += 1;
            equal_value(&mut out, column, value);
            out.push(Piece::Sql(" AND ".into()));
        }
        for _ in 0..open {
            out.push(Piece::Sql(")".into()));
        }
        out
    }
}

/// Appends the bound `value` for `column` (with its cast).
fn push_value(out: &mut Vec<Piece>, column: &KeyColumn, value: &KeyValue) {
    match &column.cast {
        Some(sql_type) => {
            out.push(Piece::Sql("CAST(".into()));
            out.push(Piece::Bind(value.clone()));
            out.push(Piece::owned(format!(" AS {sql_type})")));
        }
        None => out.push(Piece::Bind(value.clone())),
    }
}

/// Appends "the column's value comes after `value`"; returns false, appending nothing, when
/// nothing can come after it (a NULL sorted last).
fn after_value(
    out: &mut Vec<Piece>,
    column: &KeyColumn,
    order: SortOrder,
    nulls: Option<Nulls>,
    value: &KeyValue,
) -> bool {
    let greater = match order {
        SortOrder::Asc => " > ",
        SortOrder::Desc => " < ",
    };
    match (value, nulls) {
        // After NULL: the values, when NULLs come first; nothing, when they come last.
        (KeyValue::Null, Some(Nulls::First)) => {
            out.push(Piece::owned(format!("{} IS NOT NULL", column.name)));
            true
        }
        (KeyValue::Null, _) => false,
        // After a value: the greater values, then the NULLs when they come last.
        (_, Some(Nulls::Last)) => {
            out.push(Piece::owned(format!("({}{greater}", column.name)));
            push_value(out, column, value);
            out.push(Piece::owned(format!(" OR {} IS NULL)", column.name)));
            true
        }
        _ => {
            out.push(Piece::owned(format!("{}{greater}", column.name)));
            push_value(out, column, value);
            true
        }
    }
}

/// Appends "the column's value equals `value`" (NULL-safe).
fn equal_value(out: &mut Vec<Piece>, column: &KeyColumn, value: &KeyValue) {
    if *value == KeyValue::Null {
        out.push(Piece::owned(format!("{} IS NULL", column.name)));
    } else {
        out.push(Piece::owned(format!("{} = ", column.name)));
        push_value(out, column, value);
    }
}

/// A part of a predicate: SQL text from the keyset (never from a client), or a bound value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Sql(Cow<'static, str>),
    Bind(KeyValue),
}

impl Piece {
    /// SQL text made for this key (a column name in it); fixed text is `Sql("…".into())`.
    fn owned(text: String) -> Self {
        Self::Sql(Cow::Owned(text))
    }
}

/// How a query's bound values are written in SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// `$1`, `$2`, … (PostgreSQL).
    Dollar,
    /// `?` (SQLite, MySQL).
    Question,
}

/// One page's query: its predicate, order and row count; and, from the rows it fetched, the
/// [`Page`]. From [`Keyset::plan`].
#[derive(Debug, Clone)]
pub struct Plan {
    pub(crate) pieces: Vec<Piece>,
    order_by: String,
    limit: usize,
    direction: Direction,
    /// The key of the cursor the page was reached through, if any (so rows may precede it).
    from: Option<Vec<KeyValue>>,
    /// The keyset's columns, to check the keys of the next and previous cursors.
    columns: Arc<[KeyColumn]>,
    pages: Counter,
}

impl Plan {
    /// The `ORDER BY` list (without the keywords).
    pub fn order_by(&self) -> &str {
        &self.order_by
    }

    /// How many rows to fetch: the page size plus one, which tells whether there is more.
    pub fn fetch(&self) -> i64 {
        i64::try_from(self.limit).map_or(i64::MAX, |limit| limit.saturating_add(1))
    }

    /// The page size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Which way this page goes from its cursor.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The `WHERE` condition as SQL text with placeholders numbered from `first` (for
    /// `Placeholders::Dollar`), and the values to bind in order; `("1 = 1", [])` for a first
    /// page. For raw SQL (`diesel::sql_query`, `sqlx`); the query builder takes
    /// [`filter`](crate::diesel) instead.
    pub fn sql_where(&self, placeholders: Placeholders, first: usize) -> (String, Vec<KeyValue>) {
        if self.pieces.is_empty() {
            return ("1 = 1".to_owned(), Vec::new());
        }
        let mut sql = String::from("(");
        let mut values = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Sql(text) => sql.push_str(text),
                Piece::Bind(value) => {
                    match placeholders {
                        Placeholders::Dollar => {
                            let _ = write!(sql, "${}", first + values.len());
                        }
                        Placeholders::Question => sql.push('?'),
                    }
                    values.push(value.clone());
                }
            }
        }
        sql.push(')');
        (sql, values)
    }

    /// The page from the `rows` this plan's query returned (in its order, at most
    /// [`fetch`](Self::fetch) of them), with `key` giving each row's sort key, in the
    /// keyset's column order. Cursors are encoded with `cursors` in `scope`.
    ///
    /// `has_more` says whether there are rows beyond the page in the direction it was fetched
    /// (forward for a first page or a `next` cursor, backward for a `prev` one). `next` is set
    /// when rows follow the page; `prev` when rows may precede it (any page reached through a
    /// cursor).
    ///
    /// A key that cannot be a position in this sort (another number of values than sort
    /// columns, NULL in a NOT NULL column, or the key of the cursor this page started from) is
    /// [`Error::SortKey`]: a bug in `key`, reported rather than turned into a cursor that would
    /// be refused or would fetch the same page again.
    pub fn page<T>(
        &self,
        mut rows: Vec<T>,
        key: impl Fn(&T) -> Vec<KeyValue>,
        cursors: &Cursors,
        scope: &Scope,
    ) -> Result<Page<T>> {
        self.pages.increment();
        let has_more = rows.len() > self.limit;
        rows.truncate(self.limit);
        let backward = self.direction == Direction::Before;
        if backward {
            rows.reverse();
        }
        let cursor = |row: Option<&T>, make: fn(Vec<KeyValue>) -> Cursor<Vec<KeyValue>>| {
            row.map(|row| {
                let key = key(row);
                check_key(&self.columns, self.from.as_deref(), &key)?;
                cursors.encode(scope, &make(key))
            })
            .transpose()
        };
        let (next, prev) = if backward {
            (
                cursor(rows.last(), Cursor::after)?,
                if has_more {
                    cursor(rows.first(), Cursor::before)?
                } else {
                    None
                },
            )
        } else {
            (
                if has_more {
                    cursor(rows.last(), Cursor::after)?
                } else {
                    None
                },
                if self.from.is_some() {
                    cursor(rows.first(), Cursor::before)?
                } else {
                    None
                },
            )
        };
        Ok(Page {
            items: rows,
            next,
            prev,
            has_more,
        })
    }
}

/// One page of a keyset-paged listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The rows, in the listing's order.
    pub items: Vec<T>,
    /// The cursor of the page after this one, if rows follow.
    pub next: Option<String>,
    /// The cursor of the page before this one, if rows may precede it.
    pub prev: Option<String>,
    /// Whether there were rows beyond this page in the direction it was fetched.
    pub has_more: bool,
}

impl fmt::Display for Placeholders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dollar => "$n",
            Self::Question => "?",
        })
    }
}

/// Offset pagination (`?page=3&limit=20`), for when a client must jump to page *n* or show a
/// total: every page reads and throws away the rows before it, so page *n* costs O(*n*) (see
/// docs/streaming.md for measured times), and rows inserted or deleted meanwhile shift the
/// pages. [`max_offset`](OffsetPagingBuilder::max_offset) refuses pages so deep that one
/// request would make the database read a large part of the table.
///
/// ```
/// use brisk_stream::OffsetPaging;
///
/// let paging = OffsetPaging::builder().max_limit(100).max_offset(10_000).build()?;
/// let plan = paging.page(Some(3), Some(20))?;
/// assert_eq!((plan.offset(), plan.fetch()), (40, 21));
/// let page = plan.page((41..=61).collect::<Vec<i64>>(), Some(500));
/// assert_eq!(page.items.len(), 20);
/// assert!(page.has_more);
/// assert!(paging.page(Some(1_000), Some(20)).is_err()); // offset 19 980: too deep
/// # Ok::<(), brisk_stream::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct OffsetPaging {
    default_limit: usize,
    max_limit: usize,
    max_offset: u64,
}

/// Configures [`OffsetPaging`]; from [`OffsetPaging::builder`].
#[derive(Debug, Clone, Copy)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct OffsetPagingBuilder {
    default_limit: usize,
    max_limit: usize,
    max_offset: u64,
}

impl OffsetPagingBuilder {
    /// The rows in a page when the client does not say. Default 20.
    pub fn default_limit(mut self, rows: usize) -> Self {
        self.default_limit = rows;
        self
    }

    /// The most rows a page may have; a client asking for more gets this many. Default 100.
    pub fn max_limit(mut self, rows: usize) -> Self {
        self.max_limit = rows;
        self
    }

    /// The deepest offset served; a deeper page is [`Error::InvalidPage`]. Default 10 000.
    pub fn max_offset(mut self, rows: u64) -> Self {
        self.max_offset = rows;
        self
    }

    /// The paging, or [`Error::Config`] for a zero limit or a default above the maximum.
    pub fn build(self) -> Result<OffsetPaging> {
        check_limits(self.default_limit, self.max_limit)?;
        Ok(OffsetPaging {
            default_limit: self.default_limit,
            max_limit: self.max_limit,
            max_offset: self.max_offset,
        })
    }
}

impl OffsetPaging {
    /// Configures offset paging.
    pub fn builder() -> OffsetPagingBuilder {
        OffsetPagingBuilder {
            default_limit: 20,
            max_limit: 100,
            max_offset: 10_000,
        }
    }

    /// The plan for a client's 1-based `page` (the first when absent) of `limit` rows (the
    /// default when absent, capped at `max_limit`). Page 0, or one starting beyond
    /// `max_offset`, is [`Error::InvalidPage`].
    pub fn page(&self, page: Option<u64>, limit: Option<usize>) -> Result<OffsetPlan> {
        let limit = limit.map_or(self.default_limit, |rows| rows.clamp(1, self.max_limit));
        let page = page.unwrap_or(1);
        if page == 0 {
            return Err(Error::InvalidPage {
                reason: "pages are numbered from 1",
            });
        }
        let offset = (page - 1).saturating_mul(limit as u64);
        if offset > self.max_offset {
            return Err(Error::InvalidPage {
                reason: "the page is deeper than this listing serves; page with a cursor",
            });
        }
        Ok(OffsetPlan {
            page,
            offset,
            limit,
        })
    }
}

/// One offset page's query; from [`OffsetPaging::page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPlan {
    page: u64,
    offset: u64,
    limit: usize,
}

impl OffsetPlan {
    /// The `OFFSET`.
    pub fn offset(&self) -> i64 {
        i64::try_from(self.offset).unwrap_or(i64::MAX)
    }

    /// The `LIMIT`: the page size plus one, which tells whether there is more.
    pub fn fetch(&self) -> i64 {
        i64::try_from(self.limit).map_or(i64::MAX, |limit| limit.saturating_add(1))
    }

    /// The page size.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The page from the `rows` the query returned, with the `total` row count if the
    /// listing counts (a `COUNT(*)` costs a scan of what it counts).
    pub fn page<T>(&self, mut rows: Vec<T>, total: Option<u64>) -> OffsetPage<T> {
        let has_more = rows.len() > self.limit;
        rows.truncate(self.limit);
        OffsetPage {
            items: rows,
            page: self.page,
            limit: self.limit,
            has_more,
            total,
        }
    }
}

/// One page of an offset-paged listing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OffsetPage<T> {
    /// The rows.
    pub items: Vec<T>,
    /// This page's number, from 1.
    pub page: u64,
    /// The page size.
    pub limit: usize,
    /// Whether a next page has rows.
    pub has_more: bool,
    /// All rows of the listing, when counted.
    pub total: Option<u64>,
}
