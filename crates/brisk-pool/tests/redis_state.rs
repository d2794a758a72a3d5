//! A `RedisPool` connection's state between checkouts, against a real redis-server: a command
//! abandoned before its reply (issue 30 item 3) and per-connection state (`SELECT`, `WATCH`,
//! `MULTI`) left behind by one checkout (item 10) never reach the next checkout.

use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
    time::Duration,
};

use brisk_pool::redis::{RedisConnector, RedisPool, SharedRedis};
use brisk_testkit::RedisServer;
use redis::{
    AsyncCommands,
    aio::{ConnectionLike, MultiplexedConnection},
};

/// A pool of one connection, so that the next checkout gets the same connection unless the
/// pool discarded it.
async fn pool_of_one(server: &RedisServer) -> RedisPool {
    RedisPool::builder(RedisConnector::new(&server.url()).unwrap())
        .max_size(1)
        .acquire_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap()
}

/// A connection of the test's own, outside the pool.
async fn direct(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The server's id of the connection a checkout gets: equal ids mean the same connection.
async fn client_id(pool: &RedisPool) -> i64 {
    let mut connection = pool.get().await.unwrap();
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut *connection)
        .await
        .unwrap()
}

/// Guards the test against a hang (a failure, not a measurement): far above any round trip.
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete in 10 s"))
}

/// Waits until no client is blocked on the server (the abandoned `BLPOP`'s connection is
/// closed), polling `INFO clients`.
async fn until_no_client_is_blocked(direct: &mut MultiplexedConnection) {
    bounded("the abandoned BLPOP's end on the server", async {
        loop {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(direct)
                .await
                .unwrap();
            if info.lines().any(|line| line.trim() == "blocked_clients:0") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// The reproduction from the issue: `BLPOP jobs 0` dropped by a 100 ms timeout. The next
/// checkout answers `PING`, and a job pushed afterwards reaches the next `BLPOP` instead of
/// the abandoned one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_command_dropped_by_a_timeout_does_not_poison_the_next_checkout() {
    let server = RedisServer::start().unwrap();
    let pool = pool_of_one(&server).await;
    {
        let mut connection = pool.get().await.unwrap();
        let popped = tokio::time::timeout(
            Duration::from_millis(100),
            connection.blpop::<_, Option<(String, String)>>("jobs", 0.0),
        )
        .await;
        assert!(popped.is_err(), "nothing was pushed: BLPOP must block");
    }
    let mut connection = bounded("the next checkout", pool.get()).await.unwrap();
    let pong: String = bounded(
        "PING after the abandoned BLPOP",
        redis::cmd("PING").query_async(&mut *connection),
    )
    .await
    .unwrap();
    assert_eq!(pong, "PONG");

    let mut direct = direct(&server).await;
    until_no_client_is_blocked(&mut direct).await;
    let _: () = direct.rpush("jobs", "job-1").await.unwrap();
    let popped: Option<(String, String)> = bounded("BLPOP", connection.blpop("jobs", 5.0))
        .await
        .unwrap();
    assert_eq!(popped, Some(("jobs".to_owned(), "job-1".to_owned())));
}

/// Dropped at each point: before its first poll (nothing was sent: the connection is kept),
/// after one poll (sent, no reply: closed), and a pipeline after one poll (closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_dropped_at_each_await_point_is_judged_by_whether_it_was_sent() {
    let server = RedisServer::start().unwrap();
    let pool = pool_of_one(&server).await;
    let first = client_id(&pool).await;

    {
        let mut connection = pool.get().await.unwrap();
        let blpop = redis::cmd("BLPOP").arg("jobs").arg(0).clone();
        drop(connection.req_packed_command(&blpop));
    }
    assert_eq!(
        client_id(&pool).await,
        first,
        "a command never polled was never sent: the connection stays"
    );

    {
        let mut connection = pool.get().await.unwrap();
        let mut sent = pin!(connection.blpop::<_, Option<(String, String)>>("jobs", 0.0));
        let polled = sent.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(polled, Poll::Pending));
    }
    let second = bounded("a checkout", client_id(&pool)).await;
    assert_ne!(second, first, "a command sent without its reply closes it");

    {
        let mut connection = pool.get().await.unwrap();
        let mut pipeline = redis::pipe();
        pipeline.cmd("PING").cmd("BLPOP").arg("jobs").arg(0);
        let mut sent = pin!(pipeline.query_async::<()>(&mut *connection));
        let polled = sent.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(matches!(polled, Poll::Pending));
    }
    let third = bounded("a checkout", client_id(&pool)).await;
    assert_ne!(
        third, second,
        "a pipeline sent without its replies closes it"
    );

    let mut direct = direct(&server).await;
    until_no_client_is_blocked(&mut direct).await;
}

/// `SELECT` of another database does not follow the connection to the next checkout;
/// `SELECT` of the pool's own database keeps the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_of_another_database_does_not_carry_over() {
    let server = RedisServer::start().unwrap();
    let pool = pool_of_one(&server).await;
    let mut direct = direct(&server).await;
    let _: () = direct.set("marker", "db0").await.unwrap();
    let first = client_id(&pool).await;
    {
        let mut connection = pool.get().await.unwrap();
        let _: () = redis::cmd("SELECT")
            .arg(0)
            .query_async(&mut *connection)
            .await
            .unwrap();
    }
    assert_eq!(
        client_id(&pool).await,
        first,
        "SELECT 0 on db 0 changes nothing"
    );
    {
        let mut connection = pool.get().await.unwrap();
        let _: () = redis::cmd("SELECT")
            .arg(5)
            .query_async(&mut *connection)
            .await
            .unwrap();
        let missing: Option<String> = connection.get("marker").await.unwrap();
        assert_eq!(missing, None, "db 5 is selected for this checkout");
    }
    let mut connection = pool.get().await.unwrap();
    let marker: Option<String> = connection.get("marker").await.unwrap();
    assert_eq!(
        marker.as_deref(),
        Some("db0"),
        "the next checkout is on db 0"
    );
    drop(connection);
    {
        let mut connection = pool.get().await.unwrap();
        let mut pipeline = redis::pipe();
        pipeline.cmd("SELECT").arg(3).ignore().cmd("PING");
        let _: (String,) = pipeline.query_async(&mut *connection).await.unwrap();
    }
    let mut connection = pool.get().await.unwrap();
    let marker: Option<String> = connection.get("marker").await.unwrap();
    assert_eq!(
        marker.as_deref(),
        Some("db0"),
        "SELECT inside a pipeline does not carry over either"
    );
}

/// A `WATCH` left without `EXEC`, `DISCARD` or `UNWATCH` does not abort the next checkout's
/// transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_exec_does_not_carry_over() {
    let server = RedisServer::start().unwrap();
    let pool = pool_of_one(&server).await;
    let mut direct = direct(&server).await;
    {
        let mut connection = pool.get().await.unwrap();
        let _: () = redis::cmd("WATCH")
            .arg("balance")
            .query_async(&mut *connection)
            .await
            .unwrap();
        // The checkout ends without EXEC or UNWATCH (an early return, a cancelled request).
    }
    let _: () = direct.set("balance", 10).await.unwrap();
    let mut connection = pool.get().await.unwrap();
    let applied: Option<(i64,)> = redis::pipe()
        .atomic()
        .incr("counter", 1)
        .query_async(&mut *connection)
        .await
        .unwrap();
    assert_eq!(
        applied,
        Some((1,)),
        "an earlier checkout's WATCH aborted this transaction"
    );
    drop(connection);
    {
        let mut connection = pool.get().await.unwrap();
        let _: () = redis::cmd("WATCH")
            .arg("balance")
            .query_async(&mut *connection)
            .await
            .unwrap();
        let _: () = redis::cmd("UNWATCH")
            .query_async(&mut *connection)
            .await
            .unwrap();
    }
    let kept = client_id(&pool).await;
    {
        let mut connection = pool.get().await.unwrap();
        let _: () = redis::cmd("WATCH")
            .arg("balance")
            .query_async(&mut *connection)
            .await
            .unwrap();
        let _: () = redis::cmd("UNWATCH")
            .query_async(&mut *connection)
            .await
            .unwrap();
    }
    assert_eq!(
        client_id(&pool).await,
        kept,
        "WATCH then UNWATCH leaves nothing"
    );
}

/// An `EXEC` whose future was made and dropped before it was sent leaves the server in
/// `MULTI`: the connection must not be reused (the next user's commands would be `QUEUED`).
/// A `MULTI` made and dropped unsent opened no transaction: the connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_flag_follows_what_was_sent() {
    let server = RedisServer::start().unwrap();
    let pool = pool_of_one(&server).await;
    let mut direct = direct(&server).await;
    let _: () = direct.set("marker", "kept").await.unwrap();
    {
        let mut connection = pool.get().await.unwrap();
        let _: () = redis::cmd("MULTI")
            .query_async(&mut *connection)
            .await
            .unwrap();
        let queued: String = redis::cmd("SET")
            .arg("marker")
            .arg("overwritten")
            .query_async(&mut *connection)
            .await
            .unwrap();
        assert_eq!(queued, "QUEUED");
        // The command future exists (redis-rs's `ConnectionLike`) but is dropped unpolled.
        let exec = redis::cmd("EXEC");
        drop(connection.req_packed_command(&exec));
    }
    let mut connection = pool.get().await.unwrap();
    let marker: String = connection.get("marker").await.unwrap();
    assert_eq!(marker, "kept", "the next checkout ran inside the old MULTI");
    drop(connection);

    let first = client_id(&pool).await;
    {
        let mut connection = pool.get().await.unwrap();
        let multi = redis::cmd("MULTI");
        drop(connection.req_packed_command(&multi));
    }
    assert_eq!(
        client_id(&pool).await,
        first,
        "a MULTI never sent opened no transaction"
    );
}

/// A database selected by the connect hook is the connection's clean state: checkouts find
/// it, and the connection is kept between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_selected_by_the_connect_hook_is_the_clean_state() {
    let server = RedisServer::start().unwrap();
    let pool = RedisPool::builder(RedisConnector::new(&server.url()).unwrap())
        .max_size(1)
        .on_connect(|connection| {
            Box::pin(async move {
                redis::cmd("SELECT")
                    .arg(2)
                    .query_async::<()>(connection)
                    .await?;
                Ok(())
            })
        })
        .build()
        .await
        .unwrap();
    let mut direct = direct(&server).await;
    let _: () = redis::cmd("SELECT")
        .arg(2)
        .query_async(&mut direct)
        .await
        .unwrap();
    let _: () = direct.set("marker", "db2").await.unwrap();
    let first = client_id(&pool).await;
    let mut connection = pool.get().await.unwrap();
    let marker: Option<String> = connection.get("marker").await.unwrap();
    assert_eq!(marker.as_deref(), Some("db2"));
    drop(connection);
    assert_eq!(
        client_id(&pool).await,
        first,
        "the hook's SELECT is no change"
    );
}

/// Issue 30 item 9 for Redis: `Duration::MAX` as a response or connect timeout, on a pool's
/// connections and on a `SharedRedis`, is "no limit", never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_timeouts_of_duration_max_mean_no_limit() {
    let server = RedisServer::start().unwrap();
    let connector = RedisConnector::new(&server.url())
        .unwrap()
        .response_timeout(Duration::MAX);
    let pool = RedisPool::builder(connector.clone())
        .acquire_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .build()
        .await
        .unwrap();
    let mut connection = pool.get().await.unwrap();
    let _: () = connection.set("k", "pool").await.unwrap();
    drop(connection);
    let shared = SharedRedis::builder(connector)
        .connect_timeout(Duration::MAX)
        .build()
        .await
        .unwrap();
    let mut connection = shared.checkout().unwrap();
    let value: String = connection.get("k").await.unwrap();
    assert_eq!(value, "pool");
}
