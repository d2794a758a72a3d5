//! Exports and pages on real databases: a throw-away PostgreSQL (brisk-testkit) and a SQLite
//! file, each with an `orders` table of 100k and of 1M rows.
//!
//! - **Export as JSON**: brisk (a `KeysetStream` of 1000-row pages into the JSON array
//!   encoder, bytes counted and dropped as a socket would take them) beside loading every row
//!   into a `Vec` and `serde_json::to_vec`. Each run is a child process of its own, so its peak
//!   RSS (`VmHWM`) is its own.
//! - **Stream throughput**: rows per second of the `KeysetStream` beside one query streamed
//!   whole (diesel-async `load_stream` on PostgreSQL, diesel's `load_iter` on SQLite).
//! - **Page time by depth**: one 20-row page at depth 1k, 100k and 900k, keyset beside
//!   `OFFSET`, median of 15 queries.

use std::{
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use brisk_stream::{Encoder, KeyValue, Keyset, Placeholders, Plan, SortOrder, diesel::bind_all};
use diesel::{
    Connection as _, QueryableByName, RunQueryDsl as _, connection::SimpleConnection as _,
    sqlite::SqliteConnection,
};
use diesel_async::{AsyncConnection as _, AsyncPgConnection, SimpleAsyncConnection as _};

use futures_util::StreamExt;
use serde::Serialize;

diesel::table! {
    orders_1m (id) {
        id -> BigInt,
        user_id -> BigInt,
        status -> Text,
        created_at -> BigInt,
        total_cents -> BigInt,
        note -> Nullable<Text>,
    }
}

#[derive(Debug, Clone, Serialize, QueryableByName, diesel::Queryable)]
struct Order {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    user_id: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    created_at: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    total_cents: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    note: Option<String>,
}

const COLUMNS: &str = "id, user_id, status, created_at, total_cents, note";
const PAGE: usize = 5000;

fn page_size() -> usize {
    std::env::var("BRISK_BENCH_PAGE")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(PAGE)
}
const SIZES: [(&str, u64); 2] = [("orders_100k", 100_000), ("orders_1m", 1_000_000)];

fn keyset() -> Keyset {
    Keyset::builder()
        .column("created_at", SortOrder::Asc)
        .unique_column("id", SortOrder::Asc)
        .build()
        .unwrap()
}

fn key(order: &Order) -> Vec<KeyValue> {
    vec![order.created_at.into(), order.id.into()]
}

fn page_sql(table: &str, plan: &Plan, placeholders: Placeholders) -> (String, Vec<KeyValue>) {
    let (condition, values) = plan.sql_where(placeholders, 1);
    (
        format!(
            "SELECT {COLUMNS} FROM {table} WHERE {condition} ORDER BY {} LIMIT {}",
            plan.order_by(),
            plan.fetch()
        ),
        values,
    )
}

/// One page of `table` from SQLite, as `plan` says.
fn sqlite_page(
    connection: &Mutex<SqliteConnection>,
    table: &str,
    plan: &Plan,
) -> diesel::QueryResult<Vec<Order>> {
    let (sql, values) = page_sql(table, plan, Placeholders::Question);
    let mut connection = connection.lock().unwrap();
    bind_all(diesel::sql_query(sql).into_boxed(), values).load(&mut *connection)
}

/// The seed: 1M orders (ties in `created_at`, a NULL note in four of five) and the first 100k
/// of them as a second table, each with an index on the sort.
fn seed_sql(series: &str) -> String {
    format!(
        "CREATE TABLE orders_1m (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, status TEXT NOT NULL, \
         created_at BIGINT NOT NULL, total_cents BIGINT NOT NULL, note TEXT);
         INSERT INTO orders_1m SELECT i, i % 20000, \
           CASE i % 4 WHEN 0 THEN 'paid' WHEN 1 THEN 'shipped' WHEN 2 THEN 'pending' ELSE 'refunded' END, \
           1767225600 + (i * 7919) % 500000, (i * 104729) % 1000000, \
           CASE WHEN i % 5 = 0 THEN 'leave at the door, \"please\"' END FROM {series};
         CREATE INDEX orders_1m_sort ON orders_1m (created_at, id);
         CREATE TABLE orders_100k AS SELECT * FROM orders_1m WHERE id <= 100000;
         CREATE UNIQUE INDEX orders_100k_id ON orders_100k (id);
         CREATE INDEX orders_100k_sort ON orders_100k (created_at, id);"
    )
}

/// What a child process reports: rows, bytes, seconds, peak RSS in KiB.
struct Export {
    rows: u64,
    bytes: u64,
    seconds: f64,
    peak_kib: u64,
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

/// Child mode: `--export-child <pg|sqlite> <url-or-path> <table> <brisk|load-all>`.
pub(crate) fn child(args: &[String]) {
    let [db, target, table, way] = args else {
        panic!("usage: --export-child <pg|sqlite> <target> <table> <brisk|load-all>");
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    let (rows, bytes) = runtime.block_on(async {
        match (db.as_str(), way.as_str()) {
            ("pg", "brisk") => {
                let connection = Arc::new(tokio::sync::Mutex::new(
                    AsyncPgConnection::establish(target).await.unwrap(),
                ));
                let table = table.clone();
                let rows = keyset().stream(
                    page_size(),
                    move |plan| {
                        let connection = connection.clone();
                        let (sql, values) = page_sql(&table, &plan, Placeholders::Dollar);
                        async move {
                            let mut connection = connection.lock().await;
                            diesel_async::RunQueryDsl::load::<Order>(
                                bind_all(diesel::sql_query(sql).into_boxed(), values),
                                &mut *connection,
                            )
                            .await
                        }
                    },
                    key,
                );
                drain(Encoder::default().json_array(rows)).await
            }
            ("sqlite", "brisk") => {
                let connection = Arc::new(Mutex::new(SqliteConnection::establish(target).unwrap()));
                let table = table.clone();
                let rows = keyset().stream(
                    page_size(),
                    move |plan| std::future::ready(sqlite_page(&connection, &table, &plan)),
                    key,
                );
                drain(Encoder::default().json_array(rows)).await
            }
            ("pg", "load-all") => {
                let mut connection = AsyncPgConnection::establish(target).await.unwrap();
                let sql = format!("SELECT {COLUMNS} FROM {table} ORDER BY created_at, id");
                let rows: Vec<Order> =
                    diesel_async::RunQueryDsl::load(diesel::sql_query(sql), &mut connection)
                        .await
                        .unwrap();
                let body = serde_json::to_vec(&rows).unwrap();
                (rows.len() as u64, body.len() as u64)
            }
            ("sqlite", "load-all") => {
                let mut connection = SqliteConnection::establish(target).unwrap();
                let sql = format!("SELECT {COLUMNS} FROM {table} ORDER BY created_at, id");
                let rows: Vec<Order> = diesel::sql_query(sql).load(&mut connection).unwrap();
                let body = serde_json::to_vec(&rows).unwrap();
                (rows.len() as u64, body.len() as u64)
            }
            other => panic!("unknown export {other:?}"),
        }
    });
    println!(
        "{rows} {bytes} {} {}",
        start.elapsed().as_secs_f64(),
        peak_kib()
    );
}

/// Takes every chunk as a socket would, and drops it.
async fn drain(
    body: impl futures_util::Stream<Item = Result<bytes::Bytes, brisk_stream::Error>>,
) -> (u64, u64) {
    let mut body = std::pin::pin!(body);
    let (mut bytes, mut rows) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len() as u64;
        rows += chunk.iter().filter(|b| **b == b'}').count() as u64;
    }
    (rows, bytes)
}

fn run_child(db: &str, target: &str, table: &str, way: &str) -> Export {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--export-child", db, target, table, way])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let fields: Vec<&str> = text.split_whitespace().collect();
    Export {
        rows: fields[0].parse().unwrap(),
        bytes: fields[1].parse().unwrap(),
        seconds: fields[2].parse().unwrap(),
        peak_kib: fields[3].parse().unwrap(),
    }
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

fn micros(duration: Duration) -> String {
    format!("{:.0} µs", duration.as_secs_f64() * 1e6)
}

/// One row of the throughput table per database, for one sort.
fn throughput(
    runtime: &tokio::runtime::Runtime,
    pg_url: &str,
    sqlite_target: &str,
    sort: &str,
    keyset: &Keyset,
) {
    let whole = format!("SELECT {COLUMNS} FROM orders_1m ORDER BY {sort}");
    runtime.block_on(async {
        let connection = Arc::new(tokio::sync::Mutex::new(
            AsyncPgConnection::establish(pg_url).await.unwrap(),
        ));
        // Each round times the peer once, then both brisk ways: one peer figure serves both rows.
        let (mut peer, mut brisk, mut owned) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..3 {
            let start = Instant::now();
            {
                let mut connection = connection.lock().await;
                let stream = diesel_async::RunQueryDsl::load_stream::<Order>(
                    diesel::sql_query(whole.clone()),
                    &mut *connection,
                )
                .await
                .unwrap();
                assert_eq!(stream.map(Result::unwrap).count().await, 1_000_000);
            }
            peer.push(start.elapsed());
            let start = Instant::now();
            let fetching = connection.clone();
            let count = keyset
                .stream(
                    page_size(),
                    move |plan| {
                        use diesel::QueryDsl as _;
                        let connection = fetching.clone();
                        // The query builder: a prepared statement, cached by its text.
                        let query = orders_1m::table
                            .filter(brisk_stream::diesel::filter(&plan))
                            .order(brisk_stream::diesel::order(&plan))
                            .limit(plan.fetch());
                        async move {
                            let mut connection = connection.lock().await;
                            diesel_async::RunQueryDsl::load::<Order>(query, &mut *connection).await
                        }
                    },
                    move |order: &Order| keyed(sort, order),
                )
                .map(Result::unwrap)
                .count()
                .await;
            assert_eq!(count, 1_000_000);
            brisk.push(start.elapsed());
            // The same single query through `stream_query`, which owns its connection.
            let start = Instant::now();
            let own = AsyncPgConnection::establish(pg_url).await.unwrap();
            let count =
                brisk_stream::diesel::stream_query(Box::new(own), diesel::sql_query(whole.clone()))
                    .map(|row: diesel::QueryResult<Order>| row.unwrap())
                    .count()
                    .await;
            assert_eq!(count, 1_000_000);
            owned.push(start.elapsed());
        }
        let peer = median(peer);
        row(
            "PostgreSQL",
            sort,
            "diesel-async `load_stream`",
            peer,
            median(brisk),
        );
        row(
            "PostgreSQL",
            sort,
            "diesel-async `load_stream` (brisk: `stream_query`, one query)",
            peer,
            median(owned),
        );
    });
    let connection = Arc::new(Mutex::new(
        SqliteConnection::establish(sqlite_target).unwrap(),
    ));
    let (mut peer, mut brisk) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let start = Instant::now();
        {
            let mut connection = connection.lock().unwrap();
            let count = diesel::sql_query(whole.clone())
                .load_iter::<Order, diesel::connection::DefaultLoadingMode>(&mut *connection)
                .unwrap()
                .map(Result::unwrap)
                .count();
            assert_eq!(count, 1_000_000);
        }
        peer.push(start.elapsed());
        let start = Instant::now();
        let fetching = connection.clone();
        let count = runtime.block_on(
            keyset
                .stream(
                    page_size(),
                    move |plan| std::future::ready(sqlite_page(&fetching, "orders_1m", &plan)),
                    move |order: &Order| keyed(sort, order),
                )
                .map(Result::unwrap)
                .count(),
        );
        assert_eq!(count, 1_000_000);
        brisk.push(start.elapsed());
    }
    row(
        "SQLite",
        sort,
        "diesel `load_iter`",
        median(peer),
        median(brisk),
    );
}

/// A row's key for `sort`.
fn keyed(sort: &str, order: &Order) -> Vec<KeyValue> {
    if sort == "id" {
        vec![order.id.into()]
    } else {
        key(order)
    }
}

fn row(database: &str, sort: &str, peer_name: &str, peer: Duration, brisk: Duration) {
    println!(
        "| {database} | `{sort}` | {peer_name} | {:.0} | {:.0} | {:.2}× |",
        1e6 / peer.as_secs_f64(),
        1e6 / brisk.as_secs_f64(),
        peer.as_secs_f64() / brisk.as_secs_f64()
    );
}

pub(crate) fn run() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_path = dir.path().join("orders.sqlite");
    let sqlite_target = sqlite_path.display().to_string();
    let mut server = brisk_testkit::PostgresServer::start().unwrap();
    let pg_url = server.create_database("export").unwrap();
    // A service's runtime: multi-threaded, so `stream_query` decodes on one worker while the
    // consumer counts on the other.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seeding = Instant::now();
    runtime.block_on(async {
        let mut pg = AsyncPgConnection::establish(&pg_url).await.unwrap();
        pg.batch_execute(&seed_sql("generate_series(1::bigint, 1000000) AS i"))
            .await
            .unwrap();
        pg.batch_execute("ANALYZE").await.unwrap();
    });
    let mut sqlite = SqliteConnection::establish(&sqlite_target).unwrap();
    sqlite
        .batch_execute(&seed_sql(
            "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000000) SELECT i FROM s)",
        ))
        .unwrap();
    sqlite.batch_execute("ANALYZE").unwrap();
    eprintln!("seeded in {:.1} s", seeding.elapsed().as_secs_f64());

    println!("\n### Exporting a table as JSON\n");
    println!(
        "Every row of `orders` (6 columns) as one JSON array, sorted by `(created_at, id)`. brisk: `Keyset::stream` (pages of {}) into `Encoder::json_array`; the peer: load every row into a `Vec`, then `serde_json::to_vec`. Each run is its own process; peak RSS is its `VmHWM`.\n",
        page_size()
    );
    println!("| database | rows | way | time | rows/s | peak RSS |");
    println!("|---|---:|---|---:|---:|---:|");
    for (db, target) in [("pg", pg_url.as_str()), ("sqlite", sqlite_target.as_str())] {
        for (table, size) in SIZES {
            for way in ["brisk", "load-all"] {
                let export = run_child(db, target, table, way);
                assert_eq!(export.rows, size, "{db} {table} {way}");
                let _ = export.bytes;
                println!(
                    "| {} | {size} | {} | {:.2} s | {:.0} | {:.0} MiB |",
                    if db == "pg" { "PostgreSQL" } else { "SQLite" },
                    if way == "brisk" {
                        "brisk stream"
                    } else {
                        "load all, then serialize"
                    },
                    export.seconds,
                    size as f64 / export.seconds,
                    export.peak_kib as f64 / 1024.0,
                );
            }
        }
    }

    println!("\n### Stream throughput\n");
    println!(
        "Rows per second over all 1M rows, no encoding: `Keyset::stream` (pages of {}, next page prefetched, one connection) beside one query streamed whole, for two sorts: by `id` (the table's physical order) and by `(created_at, id)` (an index whose order is not the table's, so each page reads its rows from all over the heap, where the single query can scan and sort). Ratio is brisk / peer (higher is better).\n",
        page_size()
    );
    println!("| database | sort | peer | peer rows/s | brisk rows/s | ratio |");
    println!("|---|---|---|---:|---:|---:|");
    let by_id = Keyset::builder()
        .unique_column("id", SortOrder::Asc)
        .build()
        .unwrap();
    for (sort, keyset) in [("id", by_id), ("created_at, id", keyset())] {
        throughput(&runtime, &pg_url, &sqlite_target, sort, &keyset);
    }

    println!("\n### Page time by depth\n");
    println!(
        "One page of 20 rows of the 1M-row table sorted by `(created_at, id)` (indexed), at increasing depth: keyset (`WHERE (created_at, id) > (…)`) beside `OFFSET`. Median of 15 queries.\n"
    );
    println!("| database | depth | keyset | offset | offset / keyset |");
    println!("|---|---:|---:|---:|---:|");
    let depths = [1_000u64, 100_000, 900_000];
    runtime.block_on(async {
        let mut connection = AsyncPgConnection::establish(&pg_url).await.unwrap();
        for depth in depths {
            let offset_sql = format!(
                "SELECT {COLUMNS} FROM orders_1m ORDER BY created_at, id LIMIT 21 OFFSET {depth}"
            );
            let before: Vec<Order> = diesel_async::RunQueryDsl::load(
                diesel::sql_query(format!(
                    "SELECT {COLUMNS} FROM orders_1m ORDER BY created_at, id LIMIT 1 OFFSET {}",
                    depth - 1
                )),
                &mut connection,
            )
            .await
            .unwrap();
            let plan = keyset()
                .plan(Some(brisk_stream::Cursor::after(key(&before[0]))), Some(20))
                .unwrap();
            let (keyset_sql, values) = page_sql("orders_1m", &plan, Placeholders::Dollar);
            let (mut by_key, mut by_offset) = (Vec::new(), Vec::new());
            for _ in 0..15 {
                let start = Instant::now();
                let page: Vec<Order> = diesel_async::RunQueryDsl::load(
                    bind_all(
                        diesel::sql_query(keyset_sql.clone()).into_boxed(),
                        values.clone(),
                    ),
                    &mut connection,
                )
                .await
                .unwrap();
                by_key.push(start.elapsed());
                let start = Instant::now();
                let same: Vec<Order> = diesel_async::RunQueryDsl::load(
                    diesel::sql_query(offset_sql.clone()),
                    &mut connection,
                )
                .await
                .unwrap();
                by_offset.push(start.elapsed());
                assert_eq!(page[0].id, same[0].id, "both ways find the same page");
            }
            let (by_key, by_offset) = (median(by_key), median(by_offset));
            println!(
                "| PostgreSQL | {depth} | {} | {} | {:.0}× |",
                micros(by_key),
                micros(by_offset),
                by_offset.as_secs_f64() / by_key.as_secs_f64()
            );
        }
    });
    let mut connection = SqliteConnection::establish(&sqlite_target).unwrap();
    for depth in depths {
        let offset_sql = format!(
            "SELECT {COLUMNS} FROM orders_1m ORDER BY created_at, id LIMIT 21 OFFSET {depth}"
        );
        let before: Vec<Order> = diesel::sql_query(format!(
            "SELECT {COLUMNS} FROM orders_1m ORDER BY created_at, id LIMIT 1 OFFSET {}",
            depth - 1
        ))
        .load(&mut connection)
        .unwrap();
        let plan = keyset()
            .plan(Some(brisk_stream::Cursor::after(key(&before[0]))), Some(20))
            .unwrap();
        let (keyset_sql, values) = page_sql("orders_1m", &plan, Placeholders::Question);
        let (mut by_key, mut by_offset) = (Vec::new(), Vec::new());
        for _ in 0..15 {
            let start = Instant::now();
            let page: Vec<Order> = bind_all(
                diesel::sql_query(keyset_sql.clone()).into_boxed(),
                values.clone(),
            )
            .load(&mut connection)
            .unwrap();
            by_key.push(start.elapsed());
            let start = Instant::now();
            let same: Vec<Order> = diesel::sql_query(offset_sql.clone())
                .load(&mut connection)
                .unwrap();
            by_offset.push(start.elapsed());
            assert_eq!(page[0].id, same[0].id, "both ways find the same page");
        }
        let (by_key, by_offset) = (median(by_key), median(by_offset));
        println!(
            "| SQLite | {depth} | {} | {} | {:.0}× |",
            micros(by_key),
            micros(by_offset),
            by_offset.as_secs_f64() / by_key.as_secs_f64()
        );
    }
    drop(server);
    let _ = Path::new(&sqlite_target);
}
