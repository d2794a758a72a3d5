//! `QueryTracking` on real connections: a PostgreSQL server from brisk-testkit and a SQLite
//! file, statements run through diesel as an application runs them.

use std::time::Duration;

use brisk_metrics::{Registry, Snapshot};
use brisk_pool::diesel::{PgConnector, PgPool, QueryTracking, SqliteConnector, SqlitePool};
use brisk_testkit::{LogCapture, PostgresServer};
use diesel::{
    sql_query,
    sql_types::{Integer, Text},
};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

#[derive(diesel::QueryableByName)]
struct Value {
    #[diesel(sql_type = Integer)]
    v: i32,
}

fn count(snapshot: &Snapshot, statement: &str) -> u64 {
    snapshot
        .histogram(
            "brisk_pool_query_seconds",
            &[("name", "main"), ("statement", statement)],
        )
        .map_or(0, |h| h.count)
}

/// A pool of `size` connections to `server` whose statements `tracking` times.
async fn tracked_pool(server: &PostgresServer, tracking: QueryTracking, size: u32) -> PgPool {
    PgPool::builder(PgConnector::new(server.url()).track_queries(tracking))
        .max_size(size)
        .build()
        .await
        .unwrap()
}

/// Statements with bind parameters and with literals are labelled by their shape, never by
/// the values; a `/* name: ... */` comment names one; failures and slow statements are
/// counted, and a slow one is logged without its parameters.
#[tokio::test]
async fn postgres_statements_are_timed_by_shape_and_slow_ones_logged() {
    let logs = LogCapture::this_thread();
    let server = PostgresServer::start().unwrap();
    let registry = Registry::new();
    let tracking = QueryTracking::builder()
        .metrics(&registry, "main")
        .slow_threshold(Duration::from_millis(40))
        .build()
        .unwrap();
    let pool = tracked_pool(&server, tracking, 2).await;
    let mut connection = pool.get().await.unwrap();
    for secret in [424_242, 737_373] {
        let row: Value = sql_query("SELECT $1::int AS v")
            .bind::<Integer, _>(secret)
            .get_result(&mut *connection)
            .await
            .unwrap();
        assert_eq!(row.v, secret);
        let row: Value = sql_query(format!("SELECT {secret} AS v"))
            .get_result(&mut *connection)
            .await
            .unwrap();
        assert_eq!(row.v, secret);
    }
    sql_query("/* name: load_user */ SELECT $1::text AS name")
        .bind::<Text, _>("alice-secret")
        .execute(&mut *connection)
        .await
        .unwrap();
    let failed = sql_query("SELECT * FROM no_such_table")
        .execute(&mut *connection)
        .await;
    assert!(failed.is_err());
    connection
        .batch_execute("SELECT pg_sleep(0.05)")
        .await
        .unwrap();

    let snapshot = registry.snapshot();
    assert_eq!(count(&snapshot, "SELECT ?::int AS v"), 2);
    assert_eq!(count(&snapshot, "SELECT ? AS v"), 2);
    assert_eq!(count(&snapshot, "load_user"), 1);
    assert_eq!(count(&snapshot, "SELECT pg_sleep(?)"), 1);
    assert_eq!(
        snapshot.counter(
            "brisk_pool_query_errors_total",
            &[
                ("name", "main"),
                ("statement", "SELECT * FROM no_such_table")
            ]
        ),
        Some(1)
    );
    assert_eq!(
        snapshot.counter("brisk_pool_slow_queries_total", &[("name", "main")]),
        Some(1)
    );
    let text = snapshot.to_prometheus();
    let logged = logs.lines().join("\n");
    for secret in ["424242", "737373", "alice-secret"] {
        assert!(!text.contains(secret), "{secret} in the metrics:\n{text}");
        assert!(!logged.contains(secret), "{secret} in the log:\n{logged}");
    }
    let slow: Vec<&str> = logged
        .lines()
        .filter(|line| line.starts_with("brisk_pool::slow_query"))
        .collect();
    assert_eq!(slow.len(), 1, "{logged}");
    assert!(
        slow[0].contains("statement=SELECT pg_sleep(?)"),
        "{}",
        slow[0]
    );
    assert!(slow[0].contains("name=main"), "{}", slow[0]);
    brisk_testkit::promtool_check_metrics(&text).unwrap_or_else(|error| panic!("{error}\n{text}"));
}

/// Statements pipelined on one connection (diesel-async sends them before the first reply)
/// finish in their own order: each is timed and labelled as itself.
#[tokio::test]
async fn pipelined_statements_on_one_connection_are_each_timed() {
    let server = PostgresServer::start().unwrap();
    let registry = Registry::new();
    let tracking = QueryTracking::builder()
        .metrics(&registry, "main")
        .build()
        .unwrap();
    let pool = tracked_pool(&server, tracking, 1).await;
    let connection = pool.get().await.unwrap();
    // Shared references: how diesel-async pipelines.
    let shared: &diesel_async::AsyncPgConnection = &connection;
    for round in 0..5 {
        let (a, b, c, d) = tokio::try_join!(
            sql_query("SELECT $1::int AS v")
                .bind::<Integer, _>(round)
                .get_result::<Value>(&mut { shared }),
            sql_query("SELECT $1::int + 1 AS v")
                .bind::<Integer, _>(round)
                .get_result::<Value>(&mut { shared }),
            sql_query("SELECT $1::int AS v, pg_sleep(0.002)::text AS slept")
                .bind::<Integer, _>(round)
                .get_result::<Value>(&mut { shared }),
            sql_query("SELECT $1::int AS v")
                .bind::<Integer, _>(round + 10)
                .get_result::<Value>(&mut { shared }),
        )
        .unwrap();
        assert_eq!((a.v, b.v, c.v, d.v), (round, round + 1, round, round + 10));
    }
    let snapshot = registry.snapshot();
    assert_eq!(count(&snapshot, "SELECT ?::int AS v"), 10);
    assert_eq!(count(&snapshot, "SELECT ?::int + ? AS v"), 5);
    assert_eq!(
        count(&snapshot, "SELECT ?::int AS v, pg_sleep(?)::text AS slept"),
        5
    );
}

/// With `explain_slow_queries`, a slow statement's generic plan follows its log line: the
/// parameter shows as `$1`, never its value; a statement with a literal in its text is not
/// explained, and a statement is explained once however often it is slow.
#[tokio::test]
async fn postgres_slow_statements_are_explained_without_their_values() {
    let logs = LogCapture::this_thread();
    let server = PostgresServer::start().unwrap();
    let tracking = QueryTracking::builder()
        .slow_threshold(Duration::from_millis(20))
        .explain_slow_queries()
        .build()
        .unwrap();
    let pool = tracked_pool(&server, tracking, 1).await;
    let mut connection = pool.get().await.unwrap();
    connection
        .batch_execute(
            "CREATE TABLE accounts (id int, owner text); \
             INSERT INTO accounts SELECT g, 'owner-' || g FROM generate_series(1, 3) g",
        )
        .await
        .unwrap();
    // pg_sleep runs once per row: 3 × 10 ms.
    let slow = "SELECT id FROM accounts WHERE owner = $1 AND pg_sleep($2) IS NOT NULL";
    for _ in 0..2 {
        sql_query(slow)
            .bind::<Text, _>("owner-7")
            .bind::<diesel::sql_types::Double, _>(0.01)
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    // Inlined: slow and logged, not explained.
    sql_query("SELECT pg_sleep(0.03), 'owner-8' AS owner")
        .execute(&mut *connection)
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let plan = loop {
        let lines = logs.lines();
        if let Some(plan) = lines.iter().find(|line| line.contains("slow query plan")) {
            break plan.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no plan logged: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(plan.contains("Seq Scan on accounts"), "{plan}");
    assert!(plan.contains("$1"), "{plan}");
    assert!(plan.contains("$1") && plan.contains("$2"), "{plan}");
    assert!(
        plan.contains("statement=SELECT id FROM accounts WHERE owner = ? AND pg_sleep(?)"),
        "{plan}"
    );
    // The second run was not explained (its label was, before the first plan started), the
    // inlined statement cannot be: by now every event is in, and none carries a value.
    let lines = logs.lines();
    let all = lines.join("\n");
    assert!(
        !all.contains("owner-7") && !all.contains("owner-8"),
        "{all}"
    );
    let count = |needle: &str| lines.iter().filter(|line| line.contains(needle)).count();
    assert_eq!(count("message=slow query plan"), 1, "{all}");
    // The three sleeping statements (the set-up batch may be slow too on a loaded machine:
    // not counted).
    let sleeping = lines
        .iter()
        .filter(|line| line.contains("message=slow query name=") && line.contains("pg_sleep"))
        .count();
    assert_eq!(sleeping, 3, "{all}");
}

/// SQLite statements (run on blocking threads) are timed the same way, and the number of
/// distinct statement labels is bounded: the rest are `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_statements_are_timed_and_their_labels_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let registry = Registry::new();
    let tracking = QueryTracking::builder()
        .metrics(&registry, "main")
        .max_statements(3)
        .no_slow_log()
        .build()
        .unwrap();
    let pool =
        SqlitePool::builder(SqliteConnector::new(path.to_str().unwrap()).track_queries(tracking))
            .max_size(2)
            .build()
            .await
            .unwrap();
    let mut connection = pool.get().await.unwrap();
    connection
        .batch_execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        .await
        .unwrap();
    for id in 0..5 {
        sql_query("INSERT INTO t (id, name) VALUES (?, ?)")
            .bind::<Integer, _>(id)
            .bind::<Text, _>(format!("name-{id}"))
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    // Distinct shapes past the bound of 3 labels.
    for column in ["id", "name", "id, name", "name, id"] {
        sql_query(format!("SELECT {column} FROM t"))
            .execute(&mut *connection)
            .await
            .unwrap();
    }
    let snapshot = registry.snapshot();
    assert_eq!(count(&snapshot, "INSERT INTO t (id, name) VALUES (?)"), 5);
    let labels: Vec<&str> = snapshot
        .histograms
        .iter()
        .filter(|h| h.name == "brisk_pool_query_seconds")
        .filter_map(|h| h.labels.get("statement").map(String::as_str))
        .collect();
    assert_eq!(labels.len(), 4, "3 statements and other: {labels:?}");
    assert!(labels.contains(&"other"), "{labels:?}");
    assert_eq!(
        snapshot.counter("brisk_pool_slow_queries_total", &[("name", "main")]),
        Some(0)
    );
}

/// A connection with an instrumentation of its own keeps it: the tracking wraps it, and both
/// see every statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tracking_wraps_an_instrumentation_the_application_installs() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new();
    let tracking = QueryTracking::builder()
        .metrics(&registry, "main")
        .build()
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let pool = SqlitePool::builder(SqliteConnector::new(
        dir.path().join("app.db").to_str().unwrap(),
    ))
    .on_connect({
        let seen = Arc::clone(&seen);
        move |connection| {
            let own = {
                let seen = Arc::clone(&seen);
                move |event: diesel::connection::InstrumentationEvent<'_>| {
                    if let diesel::connection::InstrumentationEvent::StartQuery { .. } = event {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                }
            };
            diesel_async::AsyncConnection::set_instrumentation(
                connection,
                tracking.instrumentation_around(own),
            );
            Box::pin(async { Ok(()) })
        }
    })
    .max_size(1)
    .build()
    .await
    .unwrap();
    let mut connection = pool.get().await.unwrap();
    for id in 0..3 {
        sql_query("SELECT ? AS v")
            .bind::<Integer, _>(id)
            .get_result::<Value>(&mut *connection)
            .await
            .unwrap();
    }
    assert_eq!(count(&registry.snapshot(), "SELECT ? AS v"), 3);
    assert!(
        AtomicUsize::load(&seen, Ordering::SeqCst) >= 3,
        "the application's own instrumentation ran"
    );
}

#[test]
fn zero_settings_are_refused() {
    for (built, setting) in [
        (
            QueryTracking::builder()
                .slow_threshold(Duration::ZERO)
                .build(),
            "slow_threshold",
        ),
        (
            QueryTracking::builder().max_statements(0).build(),
            "max_statements",
        ),
        (
            QueryTracking::builder().max_statement_len(0).build(),
            "max_statement_len",
        ),
    ] {
        match built {
            Err(brisk_pool::Error::Config { setting: got, .. }) => assert_eq!(got, setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
}
