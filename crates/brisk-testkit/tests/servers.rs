//! brisk-testkit against the real servers it starts, checked with real client crates.

use std::path::Path;

use brisk_testkit::{Error, PostgresServer, RedisServer, is_alive, process_tree};
use tokio_postgres::NoTls;

async fn redis_ping(url: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

async fn redis_get(url: &str, key: &str) -> redis::RedisResult<Option<String>> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("GET").arg(key).query_async(&mut conn).await
}

async fn redis_set(url: &str, key: &str, value: &str) -> redis::RedisResult<()> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn pg_select_one(url: &str) -> Result<i32, tokio_postgres::Error> {
    let client = pg_connect(url).await?;
    let row = client.query_one("SELECT 1", &[]).await?;
    Ok(row.get(0))
}

fn assert_gone(pids: &[u32], dir: &Path) {
    let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
    assert!(alive.is_empty(), "still running: {alive:?} of {pids:?}");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn redis_answers_then_fails_after_kill_then_answers_after_restart() {
    let mut redis = RedisServer::start().expect("start redis");
    let url = redis.url();
    let port = redis.port();
    assert_eq!(redis_ping(&url).await.expect("ping"), "PONG");
    redis_set(&url, "k", "v").await.expect("set");

    redis.kill();
    assert!(!redis.is_running());
    assert!(redis_ping(&url).await.is_err(), "killed server answered");
    assert!(matches!(redis.ping(), Err(Error::NotRunning { .. })));

    redis.restart().expect("restart");
    assert_eq!(redis.port(), port, "restart moved the port");
    assert_eq!(redis_ping(&url).await.expect("ping after restart"), "PONG");
    assert_eq!(
        redis_get(&url, "k").await.expect("get"),
        None,
        "no persistence: data is gone after a crash"
    );
}

#[tokio::test]
async fn two_redis_servers_run_side_by_side() {
    let a = RedisServer::start().expect("start a");
    let b = RedisServer::start().expect("start b");
    assert_ne!(a.port(), b.port());
    assert_ne!(a.dir(), b.dir());
    redis_set(&a.url(), "only-in-a", "1").await.expect("set");
    assert_eq!(
        redis_get(&a.url(), "only-in-a").await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(redis_get(&b.url(), "only-in-a").await.unwrap(), None);
}

#[tokio::test]
async fn dropping_redis_leaves_no_process_or_dir() {
    let redis = RedisServer::start().expect("start");
    redis_ping(&redis.url()).await.expect("ping");
    let (pids, dir) = (
        process_tree(redis.pid().expect("pid")),
        redis.dir().to_path_buf(),
    );
    assert!(!pids.is_empty());
    drop(redis);
    assert_gone(&pids, &dir);
}

#[test]
fn missing_redis_binary_names_the_package() {
    let err = RedisServer::builder()
        .binary("/nonexistent/redis-server")
        .start()
        .expect_err("started a binary that does not exist");
    assert!(matches!(
        err,
        Error::BinaryNotFound {
            binary: "redis-server",
            ..
        }
    ));
    assert!(
        err.to_string().contains("apt-get install redis-server"),
        "{err}"
    );
}

#[test]
fn failed_redis_start_reports_the_server_log() {
    let err = RedisServer::builder()
        .arg("--no-such-directive")
        .arg("1")
        .start()
        .expect_err("redis accepted a bogus directive");
    match err {
        Error::Exited { log, .. } => assert!(log.contains("no-such-directive"), "{log}"),
        other => panic!("expected Exited, got {other}"),
    }
}

#[tokio::test]
async fn postgres_answers_then_fails_after_kill_then_recovers_committed_data() {
    let mut pg = PostgresServer::start().expect("start postgres");
    let url = pg.url();
    assert_eq!(pg_select_one(&url).await.expect("select 1"), 1);
    let client = pg_connect(&url).await.expect("connect");
    client
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42);")
        .await
        .expect("write");

    pg.kill();
    assert!(!pg.is_running());
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "open session survived a kill"
    );
    assert!(
        pg_select_one(&url).await.is_err(),
        "killed server accepted a session"
    );
    assert!(matches!(
        pg.execute("SELECT 1"),
        Err(Error::NotRunning { .. })
    ));

    let port = pg.port();
    pg.restart().expect("restart");
    assert_eq!(pg.port(), port);
    let client = pg_connect(&url).await.expect("connect after restart");
    let row = client
        .query_one("SELECT v FROM t", &[])
        .await
        .expect("read");
    assert_eq!(
        row.get::<_, i32>(0),
        42,
        "committed row lost in crash recovery"
    );
}

#[tokio::test]
async fn two_postgres_servers_run_side_by_side() {
    let mut a = PostgresServer::start().expect("start a");
    let b = PostgresServer::start().expect("start b");
    assert_ne!(a.port(), b.port());
    a.create_database("only_in_a").expect("create");
    assert_eq!(
        pg_select_one(&a.database_url("only_in_a")).await.unwrap(),
        1
    );
    assert!(pg_select_one(&b.database_url("only_in_a")).await.is_err());
    assert_eq!(pg_select_one(&b.url()).await.unwrap(), 1);
}

#[tokio::test]
async fn create_database_validates_and_reports_server_errors() {
    let mut pg = PostgresServer::start().expect("start");
    let url = pg.create_database("orders_1").expect("create");
    assert_eq!(pg_select_one(&url).await.expect("select 1 on new db"), 1);

    match pg.create_database("orders_1") {
        Err(Error::Query { message, .. }) => assert!(message.contains("42P04"), "{message}"),
        other => panic!("expected a duplicate-database error, got {other:?}"),
    }
    for bad in ["", "Orders", "1st", "a;DROP", &"x".repeat(64)] {
        assert!(
            matches!(pg.create_database(bad), Err(Error::InvalidDatabaseName(_))),
            "{bad:?} accepted"
        );
    }
    pg.kill();
    assert!(matches!(
        pg.create_database("later"),
        Err(Error::NotRunning { .. })
    ));
}

#[tokio::test]
async fn dropping_postgres_kills_every_backend_and_removes_the_dir() {
    let pg = PostgresServer::start().expect("start");
    let client = pg_connect(&pg.url()).await.expect("connect");
    client.query_one("SELECT 1", &[]).await.expect("select");
    let (pids, dir) = (process_tree(pg.pid().expect("pid")), pg.dir().to_path_buf());
    assert!(
        pids.len() > 2,
        "expected the postmaster and its backends, got {pids:?}"
    );
    drop(pg);
    assert_gone(&pids, &dir);
}

#[test]
fn missing_postgres_binaries_name_the_package() {
    let err = PostgresServer::builder()
        .bin_dir("/nonexistent/bin")
        .start()
        .expect_err("started without binaries");
    assert!(matches!(
        err,
        Error::BinaryNotFound {
            binary: "initdb",
            ..
        }
    ));
    assert!(
        err.to_string().contains("apt-get install postgresql"),
        "{err}"
    );
}

#[tokio::test]
async fn a_cluster_of_three_masters_serves_keys_from_every_slot_range() {
    let mut cluster = brisk_testkit::RedisCluster::start().unwrap();
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut connection = client.get_async_connection().await.unwrap();
    let keys: Vec<String> = (0..300).map(|n| format!("key:{n}")).collect();
    for key in &keys {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(key)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    // One MGET across slots: the cluster client splits it by slot and reassembles it.
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(values, keys.iter().cloned().map(Some).collect::<Vec<_>>());
    // Every master holds a share.
    let urls = cluster.urls();
    for url in &urls {
        let size: u64 = redis::cmd("DBSIZE")
            .query_async(
                &mut redis::Client::open(url.as_str())
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap(),
            )
            .await
            .unwrap();
        assert!(size > 50, "{url} holds {size} of 300 keys");
    }
    assert_eq!(cluster.nodes().len(), 3);
}
