//! `PgPool` against real PostgreSQL servers from brisk-testkit, one per test, including one
//! killed and restarted under load.

mod common;

use std::time::Duration;

use brisk_metrics::Registry;
use brisk_pool::{
    Error,
    diesel::{PgConnector, PgPool},
};
use brisk_testkit::PostgresServer;
use diesel::{sql_query, sql_types::Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};

/// A `SELECT 1` through the pool: checkout plus one round trip.
async fn select_one(pool: &PgPool) -> Result<(), String> {
    let mut connection = pool.get().await.map_err(|e| e.to_string())?;
    connection
        .batch_execute("SELECT 1")
        .await
        .map_err(|e| e.to_string())
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

/// Runs a query that returns one text column named `value`.
async fn text(connection: &mut AsyncPgConnection, sql: &str) -> String {
    use diesel_async::RunQueryDsl;
    let row: Row = sql_query(sql).get_result(connection).await.unwrap();
    row.value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_under_load_share_the_connections() {
    let server = PostgresServer::start().unwrap();
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .max_size(4)
        .build()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                select_one(&pool).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let status = pool.status();
    assert!(status.size <= 4 && status.in_use == 0, "{status:?}");
}

#[tokio::test]
async fn a_wrong_database_fails_the_build_with_the_server_error() {
    let server = PostgresServer::start().unwrap();
    let error = PgPool::from_url(&format!(
        "{}?pool_max_size=2",
        server.database_url("missing")
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(&error, Error::Connect { target, .. } if target.ends_with("/missing")),
        "{error:?}"
    );
    assert!(
        brisk_testkit::error_chain(&error).contains("\"missing\" does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn the_connect_hook_sets_session_state() {
    let server = PostgresServer::start().unwrap();
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .on_connect(|connection| {
            Box::pin(async move {
                connection
                    .batch_execute("SET statement_timeout = '50ms'")
                    .await?;
                Ok(())
            })
        })
        .build()
        .await
        .unwrap();
    let mut connection = pool.get().await.unwrap();
    assert_eq!(
        text(
            &mut connection,
            "SELECT current_setting('statement_timeout') AS value"
        )
        .await,
        "50ms"
    );
    let error = connection
        .batch_execute("SELECT pg_sleep(2)")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("statement timeout"), "{error}");
}

#[tokio::test]
async fn a_transaction_abandoned_mid_way_closes_its_connection() {
    let server = PostgresServer::start().unwrap();
    let registry = Registry::new();
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .max_size(1)
        .metrics(&registry, "pg")
        .build()
        .await
        .unwrap();
    {
        let mut connection = pool.get().await.unwrap();
        connection
            .batch_execute("CREATE TABLE t (id int)")
            .await
            .unwrap();
        // The request is cancelled (a client went away) inside a transaction.
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
        &[("name", "pg"), ("reason", "broken")],
    );
    assert_eq!(
        closes,
        Some(1),
        "the connection with the open transaction was not reused"
    );
    // The next user gets a clean connection, and the insert never committed.
    let mut connection = pool.get().await.unwrap();
    assert_eq!(
        text(&mut connection, "SELECT count(*)::text AS value FROM t").await,
        "0"
    );
}

/// The fault test: the server crashes under load and comes back. No request hangs past the
/// acquire timeout, the pool recovers by itself, and every request made after the restart
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_and_restarted_under_load() {
    let server = PostgresServer::start().unwrap();
    let acquire_timeout = Duration::from_millis(500);
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .max_size(8)
        .min_idle(8)
        .acquire_timeout(acquire_timeout)
        .connect_timeout(Duration::from_millis(500))
        .retry_backoff(Duration::from_millis(20))
        .build()
        .await
        .unwrap();

    let requests = pool.clone();
    let (server, failed_during_outage) = common::load_through_restart(
        move |_| {
            let pool = requests.clone();
            async move { select_one(&pool).await }
        },
        move || {
            let mut server = server;
            std::thread::sleep(Duration::from_millis(300));
            server.kill();
            // Long enough for checkouts to time out while connects fail.
            std::thread::sleep(acquire_timeout * 3);
            server.restart().unwrap();
            server
        },
    )
    .await;
    assert!(failed_during_outage > 0, "the outage was seen");
    let status = pool.status();
    assert!(status.size <= 8 && status.in_use == 0, "{status:?}");
    drop(server);
}

#[tokio::test]
async fn a_checkout_timing_out_while_the_server_is_down_names_the_cause() {
    let mut server = PostgresServer::start().unwrap();
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .min_idle(0)
        .acquire_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    server.kill();
    let error = pool.get().await.unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Timeout {
                last_connect_error: Some(_),
                ..
            }
        ),
        "expected a timeout naming the connect error: {error:?}"
    );
    // tokio-postgres keeps the reason in its error's source; the message shows the chain.
    assert!(
        error
            .to_string()
            .to_lowercase()
            .contains("connection refused"),
        "{error}"
    );
}

/// One request of the recovery test: when it started and ended, and whether it succeeded.
struct Outcome {
    started: std::time::Instant,
    ok: bool,
}

/// What users feel when the server comes back: 32 callers loop `SELECT 1` over 16 connections
/// (acquire timeout 2 s, other settings default) while the server is killed and restarted.
/// Every caller already waiting when the server is back, with at least 1 s of its timeout left,
/// gets a connection, as does every request started after it. (bb8 connects only when a
/// checkout starts or a connection returns, so before the refill task these callers waited out
/// their timeout with no connect being tried. The margin of 1 s is ten probe intervals: it
/// judges whether the pool reconnects at all while callers wait, not how fast.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_waiting_when_the_server_returns_get_a_connection() {
    use std::{
        sync::{
            Arc, Mutex,
            atomic::{AtomicBool, Ordering},
        },
        time::Instant,
    };
    let server = PostgresServer::start().unwrap();
    let acquire_timeout = Duration::from_secs(2);
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .max_size(16)
        .acquire_timeout(acquire_timeout)
        .build()
        .await
        .unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (pool, outcomes, stop) = (pool.clone(), Arc::clone(&outcomes), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let result = tokio::time::timeout(Duration::from_secs(10), select_one(&pool))
                    .await
                    .expect("a request hung far past the acquire timeout");
                outcomes.lock().unwrap().push(Outcome {
                    started,
                    ok: result.is_ok(),
                });
                tokio::task::yield_now().await;
            }
        }));
    }
    let (server, back) = tokio::task::spawn_blocking(move || {
        let mut server = server;
        std::thread::sleep(Duration::from_millis(500));
        server.kill();
        // Longer than the acquire timeout: every caller is waiting, and some time out.
        std::thread::sleep(Duration::from_millis(2500));
        server.restart().unwrap();
        (server, Instant::now())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    let failed_in_outage = outcomes
        .iter()
        .filter(|o| !o.ok && o.started < back)
        .count();
    assert!(failed_in_outage > 0, "the outage was seen");
    // Waiting when the server came back, with at least 1 s of the timeout left.
    let waiting: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| {
            o.started < back && o.started + acquire_timeout >= back + Duration::from_secs(1)
        })
        .collect();
    assert!(
        !waiting.is_empty(),
        "some callers were waiting at the restart"
    );
    let failed = waiting.iter().filter(|o| !o.ok).count();
    assert_eq!(
        failed,
        0,
        "{failed} of {} callers waiting at the restart failed",
        waiting.len()
    );
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.started >= back).collect();
    assert!(
        after.iter().all(|o| o.ok),
        "a request started after the restart failed"
    );
    assert!(
        after.len() > 100,
        "the pool serves again: {} requests",
        after.len()
    );
    drop(server);
}

/// A checkout that waited through failed connects and timed out after the server came back
/// (another caller got the one connection) still says why it waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_the_reconnect_names_the_connect_error_of_its_wait() {
    let mut server = PostgresServer::start().unwrap();
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .max_size(1)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(8))
        .retry_backoff(Duration::from_millis(20))
        .build()
        .await
        .unwrap();
    server.kill();
    // Two callers wait; whichever gets the one connection keeps it until the other has timed
    // out.
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, release) = (pool.clone(), std::sync::Arc::clone(&release));
            tokio::spawn(async move {
                let connection = pool.get().await?;
                release.notified().await;
                drop(connection);
                Ok::<_, Error>(())
            })
        })
        .collect();
    let server = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(300));
        server.restart().unwrap();
        server
    });
    let mut outcomes = Vec::new();
    let mut callers = callers.into_iter();
    let (first, second) = (callers.next().unwrap(), callers.next().unwrap());
    tokio::pin!(first, second);
    // The first to finish is the one that timed out.
    let timed_out = tokio::select! {
        outcome = &mut first => { outcomes.push(outcome.unwrap()); second }
        outcome = &mut second => { outcomes.push(outcome.unwrap()); first }
    };
    release.notify_one();
    outcomes.push(timed_out.await.unwrap());
    drop(server.await.unwrap());
    let error = outcomes.remove(0).unwrap_err();
    assert!(
        outcomes[0].is_ok(),
        "the other caller got the reconnected connection"
    );
    let Error::Timeout {
        last_connect_error: Some(cause),
        ..
    } = &error
    else {
        panic!("expected a timeout naming the connect error: {error:?}")
    };
    // Refused while the server was down, or turned away during its crash recovery.
    let message = error.to_string().to_lowercase();
    assert!(
        ["connection refused", "not yet accepting", "starting up"]
            .iter()
            .any(|reason| message.contains(reason)),
        "{error} / {cause}"
    );
}

/// Issue 29: a pool with a circuit breaker on a PostgreSQL that is killed fails checkouts at
/// once with `Unavailable` (no connect attempt per checkout, no wait for the 30 s acquire
/// timeout), and after the restart a probe connects and checkouts succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_opens_the_breaker_and_a_probe_closes_it_after_the_restart() {
    let server = PostgresServer::start().unwrap();
    let registry = Registry::new();
    let pool = PgPool::builder(PgConnector::new(server.url()))
        .max_size(4)
        .validation(brisk_pool::Validation::Always)
        .acquire_timeout(Duration::from_secs(30))
        .circuit_breaker(3, Duration::from_millis(50))
        .metrics(&registry, "pg")
        .build()
        .await
        .unwrap();
    select_one(&pool).await.unwrap();
    let labels = &[("name", "pg")];
    let counter = |name| registry.snapshot().counter(name, labels).unwrap_or(0);
    let attempts =
        || counter("brisk_pool_connects_total") + counter("brisk_pool_connect_failures_total");

    let mut server = tokio::task::spawn_blocking(move || {
        let mut server = server;
        server.kill();
        server
    })
    .await
    .unwrap();
    // The idle connection fails its validation; the connect and its two retries fail; the
    // breaker opens and this checkout fails, instead of waiting out the acquire timeout.
    let error = pool.get().await.unwrap_err();
    let Error::Unavailable { target, .. } = &error else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert_eq!(
        &**target,
        format!("postgres://postgres@127.0.0.1:{}/postgres", server.port())
    );
    assert!(
        brisk_testkit::error_chain(&error)
            .to_lowercase()
            .contains("connection refused"),
        "{error}"
    );
    let before = attempts();
    for _ in 0..50 {
        let error = pool.get().await.unwrap_err();
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    }
    let during = attempts() - before;
    assert!(
        during < 50,
        "probes only, not a connect per checkout: {during} attempts"
    );
    assert_eq!(counter("brisk_pool_rejected_total"), 51);
    assert_eq!(counter("brisk_pool_circuit_opened_total"), 1);
    assert_eq!(counter("brisk_pool_acquire_timeouts_total"), 0);

    server = tokio::task::spawn_blocking(move || {
        server.restart().unwrap();
        server
    })
    .await
    .unwrap();
    let back = std::time::Instant::now();
    let mut rejected = 0;
    loop {
        match pool.get().await {
            Ok(mut connection) => {
                connection.batch_execute("SELECT 1").await.unwrap();
                break;
            }
            Err(Error::Unavailable { retry_after, .. }) => {
                rejected += 1;
                assert!(back.elapsed() < Duration::from_secs(60), "never recovered");
                // Wait for the probe the error announces (at least a millisecond).
                tokio::time::sleep(retry_after.max(Duration::from_millis(1))).await;
            }
            Err(error) => panic!("after the restart: {error:?}"),
        }
    }
    // Reported, not asserted: the figure depends on the machine.
    eprintln!(
        "first checkout {:?} after PostgreSQL accepted connections again ({rejected} rejected)",
        back.elapsed()
    );
    assert_eq!(
        registry
            .snapshot()
            .gauge("brisk_pool_circuit_state", labels),
        Some(0)
    );
    drop(server);
}
