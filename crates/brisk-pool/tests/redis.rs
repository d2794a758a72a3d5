//! `RedisPool` and `SharedRedis` against real redis-servers from brisk-testkit.

mod common;

use std::time::Duration;

use brisk_metrics::Registry;
use brisk_pool::{
    ConnectionPool, Error,
    redis::{RedisConnector, RedisPool, SharedRedis},
};
use brisk_testkit::RedisServer;
use redis::AsyncCommands;

async fn pool(server: &RedisServer, registry: &Registry) -> RedisPool {
    RedisPool::builder(RedisConnector::new(&server.url()).unwrap())
        .max_size(4)
        .acquire_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .retry_backoff(Duration::from_millis(20))
        .metrics(registry, "redis")
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_holds_only_its_own_connection() {
    let server = RedisServer::start().unwrap();
    let pool = pool(&server, &Registry::new()).await;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut connection = pool.get().await.unwrap();
            // Blocks up to 10 s: longer than redis-rs's default response timeout of 500 ms.
            let popped: Option<(String, String)> = connection.blpop("jobs", 10.0).await.unwrap();
            popped
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pool.status().in_use == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the blocking command did not take its connection in 60 s"
        );
        tokio::task::yield_now().await;
    }
    // Other connections keep working while BLPOP blocks.
    let mut connection = pool.get().await.unwrap();
    let _: () = connection.set("k", "v").await.unwrap();
    let value: String = connection.get("k").await.unwrap();
    assert_eq!(value, "v");
    let _: () = connection.rpush("jobs", "job-1").await.unwrap();
    assert_eq!(
        waiter.await.unwrap(),
        Some(("jobs".to_owned(), "job-1".to_owned()))
    );
}

#[tokio::test]
async fn a_connection_left_inside_multi_is_closed_not_reused() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let pool = pool(&server, &registry).await;
    {
        let mut connection = pool.get().await.unwrap();
        let _: () = redis::cmd("MULTI")
            .query_async(&mut *connection)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("half")
            .arg("done")
            .query_async(&mut *connection)
            .await
            .unwrap();
        // Dropped without EXEC: an early return or a cancelled request.
    }
    let closes = registry.snapshot().counter(
        "brisk_pool_closes_total",
        &[("name", "redis"), ("reason", "broken")],
    );
    assert_eq!(closes, Some(1));
    let mut connection = pool.get().await.unwrap();
    let value: Option<String> = connection.get("half").await.unwrap();
    assert_eq!(
        value, None,
        "the next user is not inside the old transaction"
    );
    // MULTI closed by EXEC leaves the connection reusable.
    let _: () = redis::cmd("MULTI")
        .query_async(&mut *connection)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("whole")
        .arg("done")
        .query_async(&mut *connection)
        .await
        .unwrap();
    let _: () = redis::cmd("EXEC")
        .query_async(&mut *connection)
        .await
        .unwrap();
    drop(connection);
    assert_eq!(
        registry.snapshot().counter(
            "brisk_pool_closes_total",
            &[("name", "redis"), ("reason", "broken")]
        ),
        Some(1)
    );
}

/// The fault test for Redis: killed and restarted under load. No request hangs past the
/// acquire timeout, the pool recovers by itself, and every request after the restart succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_and_restarted_under_load() {
    let server = RedisServer::start().unwrap();
    let pool = pool(&server, &Registry::new()).await;
    let requests = pool.clone();
    let (server, failed_during_outage) = common::load_through_restart(
        move |task| {
            let pool = requests.clone();
            async move {
                let mut connection = pool.get().await.map_err(|e| e.to_string())?;
                connection
                    .incr::<_, _, i64>(format!("n{task}"), 1)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        },
        move || {
            let mut server = server;
            std::thread::sleep(Duration::from_millis(300));
            server.kill();
            std::thread::sleep(Duration::from_millis(1500));
            server.restart().unwrap();
            server
        },
    )
    .await;
    assert!(failed_during_outage > 0, "the outage was seen");
    assert_eq!(pool.status().in_use, 0);
    drop(server);
}

#[tokio::test]
async fn shared_redis_hands_out_one_multiplexed_connection_behind_the_pool_api() {
    let server = RedisServer::start().unwrap();
    let shared = SharedRedis::connect(&RedisConnector::new(&server.url()).unwrap())
        .await
        .unwrap();
    async fn use_any_pool<P: ConnectionPool>(pool: &P) -> Vec<P::Guard<'_>> {
        vec![pool.get().await.unwrap(), pool.get().await.unwrap()]
    }
    let mut held = use_any_pool(&shared).await;
    assert_eq!(
        (
            shared.status().size,
            shared.status().in_use,
            shared.status().waiting
        ),
        (1, 2, 0)
    );
    let _: () = held[0].set("a", 1).await.unwrap();
    let a: i64 = held[1].get("a").await.unwrap();
    assert_eq!(a, 1);
    let closing = tokio::spawn({
        let shared = shared.clone();
        async move { ConnectionPool::close(&shared).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while shared.checkout().is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not start closing in 60 s"
        );
        tokio::task::yield_now().await;
    }
    assert!(matches!(shared.get().await, Err(Error::Closed { .. })));
    assert!(!closing.is_finished());
    held.clear();
    closing.await.unwrap();
}

#[tokio::test]
async fn shared_redis_honours_the_response_timeout_and_reports_commands() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let connector = RedisConnector::new(&server.url())
        .unwrap()
        .response_timeout(Duration::from_millis(100));
    let shared = SharedRedis::builder(connector)
        .metrics(&registry, "cache")
        .build()
        .await
        .unwrap();
    let mut connection = shared.checkout().unwrap();
    let _: () = connection.set("text", "not a number").await.unwrap();
    let error = connection.incr::<_, _, i64>("text", 1).await.unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    // A blocking command outlives the 100 ms response timeout.
    let error = connection
        .blpop::<_, Option<(String, String)>>("nothing", 5.0)
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    // The server goes away: commands fail on the connection, not by timeout.
    let mut server = server;
    server.kill();
    let error = shared
        .checkout()
        .unwrap()
        .get::<_, Option<String>>("text")
        .await
        .unwrap_err();
    assert!(!error.is_timeout(), "{error:?}");
    let snapshot = registry.snapshot();
    let failures = |kind| {
        snapshot.counter(
            "brisk_pool_redis_command_failures_total",
            &[("name", "cache"), ("kind", kind)],
        )
    };
    assert_eq!(
        (
            failures("server"),
            failures("timeout"),
            failures("io"),
            failures("other")
        ),
        (Some(1), Some(1), Some(1), Some(0))
    );
    let commands = snapshot
        .histogram("brisk_pool_redis_command_seconds", &[("name", "cache")])
        .unwrap();
    assert_eq!(commands.count, 4);
}

#[tokio::test]
async fn shared_redis_without_a_response_timeout_lets_a_command_block() {
    let server = RedisServer::start().unwrap();
    let connector = RedisConnector::new(&server.url())
        .unwrap()
        .no_response_timeout();
    let shared = SharedRedis::builder(connector).build().await.unwrap();
    // Longer than the 500 ms default, which would fail it.
    let popped: Option<(String, String)> = shared
        .checkout()
        .unwrap()
        .blpop("nothing", 1.0)
        .await
        .unwrap();
    assert_eq!(popped, None);
    // An owned checkout moves into a task.
    let mut owned = ConnectionPool::get_owned(&shared).await.unwrap();
    let task = tokio::spawn(async move { owned.incr::<_, _, i64>("n", 2).await });
    assert_eq!(task.await.unwrap().unwrap(), 2);
    assert_eq!(shared.status().in_use, 0);
}

#[tokio::test]
async fn shared_redis_refuses_zero_timeouts() {
    let connector = RedisConnector::new("redis://127.0.0.1:1/").unwrap();
    let error = SharedRedis::builder(connector.clone())
        .connect_timeout(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config { setting, .. } if setting == "connect_timeout"),
        "{error:?}"
    );
    let error = SharedRedis::builder(connector.response_timeout(Duration::ZERO))
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config { setting, .. } if setting == "response_timeout"),
        "{error:?}"
    );
}

#[test]
fn a_malformed_url_is_a_config_error() {
    let error = RedisConnector::new("http://:secret@localhost").unwrap_err();
    assert!(
        matches!(&error, Error::Config { setting, .. } if setting == "url"),
        "{error:?}"
    );
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[test]
fn a_tls_url_without_tls_support_says_what_to_enable() {
    let error = RedisConnector::new("rediss://:secret@localhost:6380/0").unwrap_err();
    let Error::Config {
        setting,
        reason,
        value,
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(setting, "url");
    assert!(reason.contains("tokio-rustls-comp"), "{reason}");
    assert!(!value.contains("secret"), "{value}");
}
