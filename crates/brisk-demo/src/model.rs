//! The response types and the queries both variants share: the variants differ in how they
//! reach the database and what they avoid asking it, never in what they answer.

use diesel::{
    QueryableByName,
    sql_types::{BigInt, Text},
};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};

pub(crate) type SqliteConnection = brisk_pool::diesel::AsyncSqliteConnection;
pub(crate) type PgConnection = diesel_async::AsyncPgConnection;
pub(crate) type DbResult<T> = Result<T, diesel::result::Error>;

/// A connection to either database the demo runs on: SQLite (the embedded default) or
/// PostgreSQL. Each query is written once, with `?` placeholders (numbered for PostgreSQL),
/// and run through the connection's own type.
pub(crate) enum Db<'a> {
    Sqlite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection),
}

impl Db<'_> {
    /// `text` with its placeholders in this database's form.
    fn sql(&self, text: &str) -> String {
        match self {
            Db::Sqlite(_) => text.to_owned(),
            Db::Pg(_) => {
                let mut out = String::with_capacity(text.len() + 8);
                let mut n = 0;
                for character in text.chars() {
                    if character == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(character);
                    }
                }
                out
            }
        }
    }
}

/// Runs the same diesel expression on whichever connection `db` holds.
macro_rules! on {
    ($db:expr, |$connection:ident| $body:expr) => {
        match $db {
            Db::Sqlite($connection) => $body,
            Db::Pg($connection) => $body,
        }
    };
}

/// Rows per listing page and per export user range.
pub(crate) const PAGE_SIZE: i64 = 20;
pub(crate) const EXPORT_USERS: i64 = 20;
/// A user's most recent orders shown.
pub(crate) const RECENT_ORDERS: i64 = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, QueryableByName)]
pub(crate) struct Product {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    #[diesel(sql_type = Text)]
    pub(crate) category: String,
    #[diesel(sql_type = BigInt)]
    pub(crate) price_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, QueryableByName)]
pub(crate) struct Order {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) user_id: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) product_id: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) quantity: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) created_at: i64,
}

/// An order with its product, as a user's order list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderLine {
    pub(crate) id: i64,
    pub(crate) quantity: i64,
    pub(crate) created_at: i64,
    pub(crate) product: Option<Product>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserOrders {
    pub(crate) user_id: i64,
    pub(crate) orders: Vec<OrderLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProductPage {
    pub(crate) items: Vec<Product>,
    /// The link to the page after this one (also sent as a `Link: <…>; rel="next"` header),
    /// if products follow: a page number for the naive variant, a signed keyset cursor for
    /// the brisk one.
    pub(crate) next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, QueryableByName)]
pub(crate) struct TopProduct {
    #[diesel(sql_type = BigInt)]
    pub(crate) product_id: i64,
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    #[diesel(sql_type = BigInt)]
    pub(crate) sold: i64,
}

/// A new order, as `POST /orders` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NewOrder {
    pub(crate) user_id: i64,
    pub(crate) product_id: i64,
    pub(crate) quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Placed {
    pub(crate) id: i64,
}

/// Whether a new order is acceptable (a typed 422 otherwise, not a database error).
pub(crate) fn valid(order: &NewOrder) -> bool {
    order.user_id > 0 && order.product_id > 0 && (1..=100).contains(&order.quantity)
}

pub(crate) async fn product(db: Db<'_>, id: i64) -> DbResult<Option<Product>> {
    let query = db.sql("SELECT id, name, category, price_cents FROM products WHERE id = ?");
    let found: DbResult<Product> = on!(db, |connection| {
        diesel::sql_query(query)
            .bind::<BigInt, _>(id)
            .get_result(connection)
            .await
    });
    found.map(Some).or_else(|error| match error {
        diesel::result::Error::NotFound => Ok(None),
        other => Err(other),
    })
}

/// The products with these ids, in one statement (ids are integers: written inline).
pub(crate) async fn products(db: Db<'_>, ids: &[i64]) -> DbResult<Vec<Product>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let list: Vec<String> = ids.iter().map(i64::to_string).collect();
    let query = format!(
        "SELECT id, name, category, price_cents FROM products WHERE id IN ({})",
        list.join(",")
    );
    on!(db, |connection| diesel::sql_query(query)
        .load(connection)
        .await)
}

pub(crate) async fn recent_orders(db: Db<'_>, user: i64) -> DbResult<Vec<Order>> {
    let query = db.sql(
        "SELECT id, user_id, product_id, quantity, created_at FROM orders
         WHERE user_id = ? ORDER BY id DESC LIMIT ?",
    );
    on!(db, |connection| {
        diesel::sql_query(query)
            .bind::<BigInt, _>(user)
            .bind::<BigInt, _>(RECENT_ORDERS)
            .load(connection)
            .await
    })
}

/// A listing page by offset (the naive variant): up to one row more than a page, which
/// tells whether another page follows.
pub(crate) async fn page(db: Db<'_>, page: i64) -> DbResult<Vec<Product>> {
    let query =
        db.sql("SELECT id, name, category, price_cents FROM products ORDER BY id LIMIT ? OFFSET ?");
    let offset = page.max(0).saturating_mul(PAGE_SIZE);
    on!(db, |connection| {
        diesel::sql_query(query)
            .bind::<BigInt, _>(PAGE_SIZE + 1)
            .bind::<BigInt, _>(offset)
            .load(connection)
            .await
    })
}

/// A listing page by keyset (the brisk variant): the products after the plan's cursor in
/// id order, at most `plan.fetch()` of them.
pub(crate) async fn page_after(db: Db<'_>, plan: &brisk_stream::Plan) -> DbResult<Vec<Product>> {
    let (after, values) = plan.sql_where(brisk_stream::Placeholders::Question, 1);
    let query = db.sql(&format!(
        "SELECT id, name, category, price_cents FROM products WHERE {after} ORDER BY {} LIMIT {}",
        plan.order_by(),
        plan.fetch()
    ));
    on!(db, |connection| {
        let query = diesel::sql_query(query).into_boxed();
        brisk_stream::diesel::bind_all(query, values)
            .load(connection)
            .await
    })
}

/// The ten best-selling products: an aggregate over every order, computed in the database.
pub(crate) async fn top(db: Db<'_>) -> DbResult<Vec<TopProduct>> {
    // CAST: PostgreSQL sums BIGINTs as NUMERIC.
    let query = "SELECT o.product_id AS product_id, p.name AS name,
                        CAST(SUM(o.quantity) AS BIGINT) AS sold
                 FROM orders o JOIN products p ON p.id = o.product_id
                 GROUP BY o.product_id, p.name ORDER BY sold DESC, o.product_id LIMIT 10";
    on!(db, |connection| diesel::sql_query(query)
        .load(connection)
        .await)
}

/// The orders of users `from..from + EXPORT_USERS`, oldest first.
pub(crate) async fn export(db: Db<'_>, from: i64) -> DbResult<Vec<Order>> {
    let query = db.sql(
        "SELECT id, user_id, product_id, quantity, created_at FROM orders
         WHERE user_id >= ? AND user_id < ? ORDER BY user_id, id",
    );
    on!(db, |connection| {
        diesel::sql_query(query)
            .bind::<BigInt, _>(from)
            .bind::<BigInt, _>(from.saturating_add(EXPORT_USERS))
            .load(connection)
            .await
    })
}

/// One page of the export of users `from..from + EXPORT_USERS`: the orders after the plan's
/// cursor in `(user_id, id)` order, at most `plan.fetch()` of them.
pub(crate) async fn export_page(
    db: Db<'_>,
    from: i64,
    plan: &brisk_stream::Plan,
) -> DbResult<Vec<Order>> {
    let (after, values) = plan.sql_where(brisk_stream::Placeholders::Question, 1);
    let query = db.sql(&format!(
        "SELECT id, user_id, product_id, quantity, created_at FROM orders
         WHERE user_id >= ? AND user_id < ? AND {after} ORDER BY {} LIMIT {}",
        plan.order_by(),
        plan.fetch()
    ));
    on!(db, |connection| {
        let query = diesel::sql_query(query)
            .into_boxed()
            .bind::<BigInt, _>(from)
            .bind::<BigInt, _>(from.saturating_add(EXPORT_USERS));
        brisk_stream::diesel::bind_all(query, values)
            .load(connection)
            .await
    })
}

/// Inserts `orders` in one statement and gives each its id, in order.
pub(crate) async fn insert(db: Db<'_>, orders: &[NewOrder], now: i64) -> DbResult<Vec<i64>> {
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<String> = orders
        .iter()
        .map(|order| {
            format!(
                "({}, {}, {}, {now})",
                order.user_id, order.product_id, order.quantity
            )
        })
        .collect();
    let query = format!(
        "INSERT INTO orders (user_id, product_id, quantity, created_at) VALUES {}
         RETURNING id, user_id, product_id, quantity, created_at",
        rows.join(",")
    );
    let mut inserted: Vec<Order> = on!(db, |connection| diesel::sql_query(query)
        .load(connection)
        .await)?;
    // RETURNING's row order is not promised: each order takes a returned row with its own
    // values (equal orders are interchangeable).
    let mut ids = Vec::with_capacity(orders.len());
    for order in orders {
        let at = inserted
            .iter()
            .position(|row| {
                row.user_id == order.user_id
                    && row.product_id == order.product_id
                    && row.quantity == order.quantity
            })
            .ok_or(diesel::result::Error::NotFound)?;
        ids.push(inserted.swap_remove(at).id);
    }
    Ok(ids)
}

/// The orders with an id above `after` (those placed since the seed, for the chaos run's
/// count of acknowledged against written), by id.
pub(crate) async fn placed_after(db: Db<'_>, after: i64) -> DbResult<Vec<Order>> {
    let query = db.sql(
        "SELECT id, user_id, product_id, quantity, created_at FROM orders WHERE id > ? ORDER BY id",
    );
    on!(db, |connection| {
        diesel::sql_query(query)
            .bind::<BigInt, _>(after)
            .load(connection)
            .await
    })
}

/// NDJSON, one order per line.
pub(crate) fn ndjson(orders: &[Order]) -> String {
    let mut out = String::with_capacity(orders.len() * 96);
    for order in orders {
        if let Ok(line) = serde_json::to_string(order) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}
