//! The catalog database (one SQLite file): schema, seeding with progress, and connections
//! whose every statement is counted, so each variant's database round trips are measured at
//! the connection.

use std::{
    io::Write as _,
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use diesel::{
    Connection, RunQueryDsl, SqliteConnection,
    connection::{Instrumentation, InstrumentationEvent, SimpleConnection},
    sql_query,
    sql_types::BigInt,
};

/// Statements sent to the database by this process.
pub(crate) static QUERIES: AtomicU64 = AtomicU64::new(0);
/// Connections this process opened.
pub(crate) static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

/// Counts each statement a connection sends, and each connection made.
pub(crate) struct Counted;

impl Instrumentation for Counted {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::StartQuery { .. } = event {
            QUERIES.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How much data a run seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Scale {
    pub(crate) products: i64,
    pub(crate) users: i64,
    pub(crate) orders: i64,
}

impl Scale {
    /// About 100k products, 20k users and 500k orders.
    pub(crate) const FULL: Scale = Scale {
        products: 100_000,
        users: 20_000,
        orders: 500_000,
    };
    /// A few seconds' worth, for `--smoke`.
    pub(crate) const SMOKE: Scale = Scale {
        products: 2_000,
        users: 400,
        orders: 10_000,
    };

    pub(crate) fn file_name(self) -> String {
        format!(
            "catalog-{}p-{}u-{}o.sqlite",
            self.products, self.users, self.orders
        )
    }
}

/// Settings every connection of either variant gets: WAL (readers do not wait for the
/// writer), and a busy timeout instead of an immediate "database is locked" (30 s: a slow,
/// shared CI machine must not turn a wait for the write lock into an error).
pub(crate) const PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 30000;";

/// The seed's version: a file made by another version is seeded again.
const SEED_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
    price_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY, user_id INTEGER NOT NULL, product_id INTEGER NOT NULL,
    quantity INTEGER NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Made after the rows are in: one sort each, rather than index upkeep on every insert.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, id);
CREATE INDEX IF NOT EXISTS orders_by_product ON orders (product_id);
";

const CATEGORIES: [&str; 8] = [
    "kitchen", "garden", "tools", "books", "toys", "audio", "sports", "office",
];

#[derive(diesel::QueryableByName)]
struct Value {
    #[diesel(sql_type = BigInt)]
    value: i64,
}

/// A deterministic generator (splitmix64): the same data on every machine.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Opens the seeded database at `path`, seeding it first unless a previous run did (same
/// scale, same seed version); orders a previous run placed are removed, so every run starts
/// from the same data.
pub(crate) fn prepare(path: &Path, scale: Scale) -> Result<(), String> {
    let url = path.display().to_string();
    let mut connection = SqliteConnection::establish(&url).map_err(|error| error.to_string())?;
    connection
        .batch_execute(PRAGMAS)
        .and_then(|()| connection.batch_execute(SCHEMA))
        .map_err(|error| error.to_string())?;
    let seeded = sql_query("SELECT value FROM meta WHERE key = 'seed'")
        .get_result::<Value>(&mut connection)
        .ok()
        .map(|row| row.value);
    if seeded == Some(SEED_VERSION) {
        println!("database: {} (seeded by an earlier run)", path.display());
        return remove_placed(&mut connection, scale);
    }
    println!(
        "seeding {}: {} products, {} users, {} orders (once; later runs reuse it)",
        path.display(),
        scale.products,
        scale.users,
        scale.orders
    );
    connection
        .batch_execute(
            "DROP INDEX IF EXISTS orders_by_user; DROP INDEX IF EXISTS orders_by_product;
             DELETE FROM products; DELETE FROM users; DELETE FROM orders; DELETE FROM meta;",
        )
        .map_err(|error| error.to_string())?;
    let statements = seed_statements(scale);
    let total = statements.len();
    connection
        .transaction::<_, diesel::result::Error, _>(|connection| {
            for (at, statement) in statements.iter().enumerate() {
                connection.batch_execute(statement)?;
                progress(at + 1, total);
            }
            connection.batch_execute(INDEXES)?;
            sql_query("INSERT INTO meta (key, value) VALUES ('seed', ?)")
                .bind::<BigInt, _>(SEED_VERSION)
                .execute(connection)?;
            Ok(())
        })
        .map_err(|error| error.to_string())?;
    println!();
    Ok(())
}

/// Removes the orders runs placed, back to the seeded data.
pub(crate) fn reset(path: &Path, scale: Scale) -> Result<(), String> {
    let mut connection = SqliteConnection::establish(&path.display().to_string())
        .map_err(|error| error.to_string())?;
    connection
        .batch_execute(PRAGMAS)
        .map_err(|error| error.to_string())?;
    remove_placed(&mut connection, scale)
}

fn remove_placed(connection: &mut SqliteConnection, scale: Scale) -> Result<(), String> {
    sql_query("DELETE FROM orders WHERE id > ?")
        .bind::<BigInt, _>(scale.orders)
        .execute(connection)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// PostgreSQL's form of the schema: 64-bit columns, an identity for new orders.
const PG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    id BIGINT PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,
    price_cents BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS users (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_id BIGINT NOT NULL,
    product_id BIGINT NOT NULL, quantity BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
";

/// [`prepare`] for a PostgreSQL database at `url` (the demo's own: `--services`, or the
/// user's `--database-url`, where it creates its four tables if they are missing).
pub(crate) async fn prepare_pg(url: &str, scale: Scale) -> Result<(), String> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let error = |error: diesel::result::Error| error.to_string();
    let mut connection = AsyncPgConnection::establish(url)
        .await
        .map_err(|error| error.to_string())?;
    connection.batch_execute(PG_SCHEMA).await.map_err(error)?;
    let seeded = diesel_async::RunQueryDsl::get_result::<Value>(
        sql_query("SELECT value FROM meta WHERE key = 'seed'"),
        &mut connection,
    )
    .await
    .ok()
    .map(|row| row.value);
    if seeded == Some(SEED_VERSION) {
        println!("database: {} (seeded by an earlier run)", redact(url));
        return connection
            .batch_execute(&remove_placed_pg(scale))
            .await
            .map_err(error);
    }
    println!(
        "seeding {}: {} products, {} users, {} orders",
        redact(url),
        scale.products,
        scale.users,
        scale.orders
    );
    connection
        .batch_execute(
            "DROP INDEX IF EXISTS orders_by_user; DROP INDEX IF EXISTS orders_by_product;
             TRUNCATE products, users, orders, meta;",
        )
        .await
        .map_err(error)?;
    let statements = seed_statements(scale);
    let total = statements.len();
    for (at, statement) in statements.iter().enumerate() {
        connection.batch_execute(statement).await.map_err(error)?;
        progress(at + 1, total);
    }
    println!();
    connection
        .batch_execute(&format!(
            "{INDEXES}
             SELECT setval(pg_get_serial_sequence('orders', 'id'), {});
             INSERT INTO meta (key, value) VALUES ('seed', {SEED_VERSION});
             ANALYZE;",
            scale.orders.max(1)
        ))
        .await
        .map_err(error)
}

/// Removes the orders runs placed from the PostgreSQL database.
pub(crate) async fn reset_pg(url: &str, scale: Scale) -> Result<(), String> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
    let mut connection = AsyncPgConnection::establish(url)
        .await
        .map_err(|error| error.to_string())?;
    connection
        .batch_execute(&remove_placed_pg(scale))
        .await
        .map_err(|error| error.to_string())
}

/// Removes the orders runs placed, and restarts new ids after the seeded ones.
fn remove_placed_pg(scale: Scale) -> String {
    format!(
        "DELETE FROM orders WHERE id > {0};
         SELECT setval(pg_get_serial_sequence('orders', 'id'), {0});",
        scale.orders.max(1)
    )
}

/// A URL without its password, for printing.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Every row of the seed as INSERT statements (the same data on both databases).
fn seed_statements(scale: Scale) -> Vec<String> {
    let mut statements = Vec::new();
    let mut rng = Rng::new(7);
    collect_rows(&mut statements, "products", scale.products, |id, sql| {
        let category = CATEGORIES[(id as usize) % CATEGORIES.len()];
        let price = 99 + rng.below(50_000) as i64;
        sql.push_str(&format!("({id}, 'product {id:06}', '{category}', {price})"));
    });
    collect_rows(&mut statements, "users", scale.users, |id, sql| {
        sql.push_str(&format!("({id}, 'user {id:05}')"));
    });
    let mut rng = Rng::new(11);
    let zipf = Zipf::new(scale.products as usize, 0.9);
    collect_rows(&mut statements, "orders", scale.orders, |id, sql| {
        let user = 1 + rng.below(scale.users as u64) as i64;
        let product = 1 + zipf.sample(&mut rng) as i64;
        let quantity = 1 + rng.below(5) as i64;
        let created = 1_700_000_000 + id * 60;
        sql.push_str(&format!("({id}, {user}, {product}, {quantity}, {created})"));
    });
    statements
}

/// Prints a 20-step progress bar as `done` of `total` statements have run.
fn progress(done: usize, total: usize) {
    if done * 20 / total.max(1) > (done - 1) * 20 / total.max(1) {
        print!(
            "\r  [{:<20}] {:>3} %",
            "#".repeat(done * 20 / total.max(1)),
            done * 100 / total.max(1)
        );
        let _ = std::io::stdout().flush();
    }
}

/// The INSERT statements for rows `1..=count` of `table`, 500 rows each.
fn collect_rows(
    out: &mut Vec<String>,
    table: &str,
    count: i64,
    mut row: impl FnMut(i64, &mut String),
) {
    const CHUNK: i64 = 500;
    let mut id = 1;
    while id <= count {
        let end = (id + CHUNK - 1).min(count);
        let mut sql = format!("INSERT INTO {table} VALUES ");
        for n in id..=end {
            if n > id {
                sql.push(',');
            }
            row(n, &mut sql);
        }
        out.push(sql);
        id = end + 1;
    }
}

/// Zipf-distributed ranks in `0..n` (rank 0 the most popular), by inverse CDF.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub(crate) fn new(n: usize, exponent: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / (rank as f64).powf(exponent);
            cdf.push(sum);
        }
        for value in &mut cdf {
            *value /= sum;
        }
        Self { cdf }
    }

    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|&value| value < u)
            .min(self.cdf.len().saturating_sub(1))
    }
}
