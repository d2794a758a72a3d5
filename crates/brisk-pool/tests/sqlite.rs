//! `SqlitePool` on files in a temp dir: SQLite is the embedded default for the demo.

use std::time::Duration;

use brisk_metrics::Registry;
use brisk_pool::{
    Error,
    diesel::{AsyncSqliteConnection, SqliteConnector, SqlitePool},
};
use diesel::{sql_query, sql_types::BigInt};
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(connection: &mut AsyncSqliteConnection) -> i64 {
    let row: Count = sql_query("SELECT count(*) AS n FROM t")
        .get_result(connection)
        .await
        .unwrap();
    row.n
}

/// A pool from `url` whose database has the empty table `t (id INTEGER)`.
async fn pool_with_table(url: &str) -> SqlitePool {
    let pool = SqlitePool::from_url(url).await.unwrap();
    pool.get()
        .await
        .unwrap()
        .batch_execute("CREATE TABLE t (id INTEGER)")
        .await
        .unwrap();
    pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_share_one_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let url = format!("{}?pool_max_size=3&pool_min_idle=3", path.display());
    let pool = pool_with_table(&url).await;
    assert_eq!((pool.status().size, pool.status().max_size), (3, 3));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let mut connection = pool.get().await.unwrap();
                connection
                    .batch_execute("INSERT INTO t VALUES (1)")
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut connection = pool.get().await.unwrap();
    assert_eq!(count(&mut connection).await, 60);
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = diesel::sql_types::Text)]
        journal_mode: String,
    }
    let mode: Mode = sql_query("PRAGMA journal_mode")
        .get_result(&mut *connection)
        .await
        .unwrap();
    assert_eq!(mode.journal_mode, "wal", "readers do not block the writer");
    drop(connection);
    pool.close().await;
    assert_eq!(pool.status().size, 0);
}

/// Connections warming up together on a new file must not race to switch it to WAL: two
/// connections changing the journal mode at once get "database is locked" without waiting for
/// the busy timeout. (This failed one fresh-clone CI run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_warm_up_on_a_new_file_switches_to_wal_once() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..100 {
        let path = dir.path().join(format!("warm-{round}.db"));
        let url = format!("{}?pool_max_size=8&pool_min_idle=8", path.display());
        let pool = SqlitePool::from_url(&url)
            .await
            .unwrap_or_else(|error| panic!("round {round}: {error}"));
        assert_eq!(pool.status().size, 8);
        pool.close().await;
    }
}

#[tokio::test]
async fn an_unopenable_file_fails_the_build() {
    let error = SqlitePool::builder(SqliteConnector::new("/nonexistent-dir/sub/app.db"))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Connect { target, .. } if target.ends_with("app.db")),
        "{error:?}"
    );
    assert!(
        brisk_testkit::error_chain(&error).contains("unable to open database file"),
        "{error}"
    );
}

#[tokio::test]
async fn a_transaction_abandoned_mid_way_closes_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new();
    let pool = SqlitePool::builder(SqliteConnector::new(
        dir.path().join("app.db").display().to_string(),
    ))
    .max_size(1)
    .metrics(&registry, "sqlite")
    .build()
    .await
    .unwrap();
    {
        let mut connection = pool.get().await.unwrap();
        connection
            .batch_execute("CREATE TABLE t (id INTEGER)")
            .await
            .unwrap();
        let abandoned = tokio::time::timeout(
            Duration::from_millis(100),
            AsyncConnection::transaction(&mut *connection, async |tx| {
                tx.batch_execute("INSERT INTO t VALUES (1)").await?;
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok::<_, diesel::result::Error>(())
            }),
        )
        .await;
        assert!(abandoned.is_err());
    }
    let closes = registry.snapshot().counter(
        "brisk_pool_closes_total",
        &[("name", "sqlite"), ("reason", "broken")],
    );
    assert_eq!(closes, Some(1));
    assert_eq!(
        count(&mut pool.get().await.unwrap()).await,
        0,
        "the insert never committed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owned_checkouts_run_queries_from_spawned_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}?pool_max_size=2", dir.path().join("app.db").display());
    let pool = pool_with_table(&url).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut connection = pool.get_owned().await.unwrap();
        // The checkout moves into the task; the pool handle stays here.
        tasks.push(tokio::spawn(async move {
            connection
                .batch_execute("INSERT INTO t VALUES (1)")
                .await
                .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let status = pool.status();
    assert_eq!((status.in_use, status.size), (0, 2), "{status:?}");
    assert_eq!(count(&mut pool.get().await.unwrap()).await, 8);
}
