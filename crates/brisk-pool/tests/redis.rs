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

#[test]
fn a_malformed_url_is_a_config_error() {
    let error = RedisConnector::new("http://:secret@localhost").unwrap_err();
    assert!(
        matches!(&error, Error::Config { setting, .. } if setting == "url"),
        "{error:?}"
    );
    assert!(!error.to_string().contains("secret"), "{error}");
}
