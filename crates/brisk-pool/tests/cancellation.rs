//! Cancellation stress (issue 30): many tasks check PostgreSQL and Redis connections out and
//! run commands, and their futures are dropped at random points (short timeouts, a poll
//! budget, `select!` against a yield), including while waiting for a checkout. Afterwards
//! no permit or connection has leaked (every connection idle, none in use, none waiting,
//! size within the maximum, and all `max_size` connections can be held at once), and every
//! later checkout and command completes with the right answer.
//!
//! The random choices come from fixed seeds (one per task); where a timeout lands depends on
//! the machine, so the invariants are checked, never a timing.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use brisk_pool::{
    ConnectionPool,
    diesel::{PgConnector, PgPool},
    redis::{RedisConnector, RedisPool},
};
use brisk_testkit::{PostgresServer, RedisServer};
use diesel::{sql_query, sql_types::Integer};
use diesel_async::{AsyncConnection, RunQueryDsl};
use redis::AsyncCommands;

const TASKS: u64 = 24;
const ROUNDS: u64 = 60;
const MAX_SIZE: u32 = 4;

/// xorshift64*: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}

/// Completes like `future`, or ends after `polls` polls with `None`, dropping it there.
struct PollBudget<'a, T> {
    future: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
    polls: u64,
}

impl<T> Future for PollBudget<'_, T> {
    type Output = Option<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if self.polls == 0 {
            return Poll::Ready(None);
        }
        self.polls -= 1;
        match self.future.as_mut().poll(cx) {
            Poll::Ready(value) => Poll::Ready(Some(value)),
            Poll::Pending => {
                // Polled again at once, so the budget counts polls, not wake-ups.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// Runs `future` to completion, or drops it at a point `rng` picks: `None` if dropped.
async fn maybe_cancel<'a, T: Send + 'a>(
    rng: &mut Rng,
    future: impl Future<Output = T> + Send + 'a,
) -> Option<T> {
    match rng.below(5) {
        0 => Some(future.await),
        1 => tokio::time::timeout(Duration::from_micros(rng.below(3000)), future)
            .await
            .ok(),
        2 => tokio::select! {
            biased;
            value = future => Some(value),
            () = tokio::task::yield_now() => None,
        },
        _ => {
            PollBudget {
                future: Box::pin(future),
                polls: 1 + rng.below(8),
            }
            .await
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Value {
    #[diesel(sql_type = Integer)]
    v: i32,
}

/// One PostgreSQL round: a checkout, then a query, a slow query or a transaction, any of
/// them dropped on the way. Every answer that arrives is checked.
async fn postgres_round(pool: &PgPool, rng: &mut Rng, n: i32) {
    let choice = rng.below(3);
    let sleep = 0.001 * f64::from(u32::try_from(rng.below(4)).unwrap());
    let cancel_at = Rng::new(rng.below(u64::MAX));
    let mut cancel = cancel_at;
    let _ = maybe_cancel(rng, async move {
        let mut connection = match pool.get().await {
            Ok(connection) => connection,
            Err(error) => panic!("a checkout failed: {error:?}"),
        };
        let answer = maybe_cancel(&mut cancel, async {
            match choice {
                0 => sql_query("SELECT $1::int AS v")
                    .bind::<Integer, _>(n)
                    .get_result::<Value>(&mut *connection)
                    .await
                    .map(|row| row.v),
                1 => sql_query("SELECT $1::int AS v FROM pg_sleep($2)")
                    .bind::<Integer, _>(n)
                    .bind::<diesel::sql_types::Double, _>(sleep)
                    .get_result::<Value>(&mut *connection)
                    .await
                    .map(|row| row.v),
                _ => {
                    AsyncConnection::transaction(&mut *connection, async |tx| {
                        sql_query("SELECT $1::int AS v")
                            .bind::<Integer, _>(n)
                            .get_result::<Value>(tx)
                            .await
                            .map(|row| row.v)
                    })
                    .await
                }
            }
        })
        .await;
        if let Some(answer) = answer {
            assert_eq!(answer.unwrap(), n, "a query answered another's value");
        }
    })
    .await;
}

/// One Redis round: a checkout, then a `SET`/`GET` of the task's own key, an atomic
/// pipeline, a short `BLPOP` that nothing feeds, or a `SELECT`/`WATCH` left behind, any of them
/// dropped on the way. Every answer that arrives is checked.
async fn redis_round(pool: &RedisPool, rng: &mut Rng, task: u64, n: i64) {
    let choice = rng.below(5);
    let mut cancel = Rng::new(rng.below(u64::MAX));
    let _ = maybe_cancel(rng, async move {
        let mut connection = match pool.get().await {
            Ok(connection) => connection,
            Err(error) => panic!("a checkout failed: {error:?}"),
        };
        let key = format!("k:{task}");
        maybe_cancel(&mut cancel, async {
            match choice {
                0 => {
                    let () = connection.set(&key, n).await.unwrap();
                    let value: i64 = connection.get(&key).await.unwrap();
                    assert_eq!(value, n, "GET answered another command's reply");
                }
                1 => {
                    let (value,): (i64,) = redis::pipe()
                        .atomic()
                        .set(&key, n)
                        .ignore()
                        .get(&key)
                        .query_async(&mut *connection)
                        .await
                        .unwrap();
                    assert_eq!(value, n);
                }
                2 => {
                    // Blocks 20 ms on the server when it is not dropped first.
                    let popped: Option<(String, String)> = connection
                        .blpop(format!("empty:{task}"), 0.02)
                        .await
                        .unwrap();
                    assert_eq!(popped, None, "BLPOP on a list nobody feeds");
                }
                3 => {
                    let () = redis::cmd("SELECT")
                        .arg(1 + task % 8)
                        .query_async(&mut *connection)
                        .await
                        .unwrap();
                }
                _ => {
                    let () = redis::cmd("WATCH")
                        .arg(&key)
                        .query_async(&mut *connection)
                        .await
                        .unwrap();
                }
            }
        })
        .await;
    })
    .await;
}

/// Guards against a hang (a failure, not a measurement): far above any round trip.
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete in 60 s"))
}

fn assert_settled(status: brisk_pool::Status, what: &str) {
    assert_eq!(
        status.in_use, 0,
        "{what}: a connection is still checked out"
    );
    assert_eq!(status.waiting, 0, "{what}: a checkout is still waiting");
    assert!(status.size <= status.max_size, "{what}: {status:?}");
    assert_eq!(status.idle, status.size, "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn futures_dropped_at_random_points_leak_nothing_and_break_nothing() {
    let postgres = PostgresServer::start().unwrap();
    let redis_server = RedisServer::start().unwrap();
    let pg = PgPool::builder(PgConnector::new(postgres.url()))
        .max_size(MAX_SIZE)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let redis_pool = RedisPool::builder(RedisConnector::new(&redis_server.url()).unwrap())
        .max_size(MAX_SIZE)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let (pg, redis_pool) = (pg.clone(), redis_pool.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(task + 1);
            for round in 0..ROUNDS {
                let n = i32::try_from(task * 1000 + round).unwrap();
                if rng.below(2) == 0 {
                    postgres_round(&pg, &mut rng, n).await;
                } else {
                    redis_round(&redis_pool, &mut rng, task, i64::from(n)).await;
                }
            }
        }));
    }
    for task in tasks {
        bounded("a stress task", task).await.unwrap();
    }

    assert_settled(pg.status(), "postgres");
    assert_settled(redis_pool.status(), "redis");

    // Every permit is back: all `MAX_SIZE` connections can be held at once, and each
    // answers its own command.
    let mut held = Vec::new();
    for _ in 0..MAX_SIZE {
        held.push(bounded("a postgres checkout", pg.get()).await.unwrap());
    }
    for (i, connection) in held.iter_mut().enumerate() {
        let n = i32::try_from(i).unwrap() + 7;
        let row: Value = bounded(
            "a postgres query",
            sql_query("SELECT $1::int AS v")
                .bind::<Integer, _>(n)
                .get_result(&mut **connection),
        )
        .await
        .unwrap();
        assert_eq!(row.v, n);
    }
    drop(held);
    let mut held = Vec::new();
    for _ in 0..MAX_SIZE {
        held.push(bounded("a redis checkout", redis_pool.get()).await.unwrap());
    }
    for (i, connection) in held.iter_mut().enumerate() {
        let key = format!("after:{i}");
        let () = bounded("a redis SET", connection.set(&key, i))
            .await
            .unwrap();
        let value: usize = bounded("a redis GET", connection.get(&key)).await.unwrap();
        assert_eq!(value, i);
        let pong: String = bounded(
            "a redis PING",
            redis::cmd("PING").query_async(&mut **connection),
        )
        .await
        .unwrap();
        assert_eq!(pong, "PONG");
        let db: i64 = redis::cmd("CLIENT")
            .arg("INFO")
            .query_async::<String>(&mut **connection)
            .await
            .unwrap()
            .split_whitespace()
            .find_map(|field| field.strip_prefix("db=")?.parse().ok())
            .unwrap();
        assert_eq!(db, 0, "a checkout inherited another's SELECT");
    }
    drop(held);
    assert_settled(pg.status(), "postgres, after");
    assert_settled(redis_pool.status(), "redis, after");
    bounded("closing the postgres pool", ConnectionPool::close(&pg)).await;
    bounded("closing the redis pool", ConnectionPool::close(&redis_pool)).await;
}
