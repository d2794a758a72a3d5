//! brisk-pool beside the pools a user would pick instead, in one process:
//! - acquire + release of a connection that does no I/O: raw bb8 (its defaults) and deadpool;
//! - `SELECT 1` on a real PostgreSQL (brisk-testkit), 32 tasks over 16 connections, against
//!   diesel-async's bb8 pool with its default check (a `SELECT 1` before every checkout) and
//!   with no check, and against a new connection per query;
//! - recovery from a database restart: 32 tasks over 16 connections (acquire timeout 2 s)
//!   while the server is killed and restarted, against diesel-async's bb8 pool with its
//!   defaults, measured from the moment the restarted server accepts connections.
//!
//! Prints a markdown table (median of the runs, peers interleaved with brisk in each run) that
//! `cargo xtask bench pool` writes to docs/benchmarks.md.
#![allow(
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark binary reports on stdout"
)]

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use brisk_pool::{
    Connect, Pool,
    diesel::{PgConnector, PgPool, QueryTracking},
};
use brisk_testkit::PostgresServer;
use diesel_async::{
    AsyncConnection, AsyncPgConnection, SimpleAsyncConnection,
    pooled_connection::{AsyncDieselConnectionManager, bb8 as diesel_bb8},
};
use tokio::runtime::Runtime;

const RUNS: usize = 5;
const CYCLES: u64 = 400_000;
const SQL_RUN: Duration = Duration::from_millis(1500);
const CONNECTIONS: u32 = 16;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A connection that does no I/O, for brisk.
struct Noop;

impl Connect for Noop {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }
    async fn validate(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
    fn is_broken(&self, _: &mut u64) -> bool {
        false
    }
    fn target(&self) -> String {
        "noop".to_owned()
    }
}

/// The same, for raw bb8.
struct NoopBb8;

impl bb8::ManageConnection for NoopBb8 {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }
    async fn is_valid(&self, _: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }
    fn has_broken(&self, _: &mut u64) -> bool {
        false
    }
}

/// The same, for deadpool.
struct NoopDeadpool;

impl deadpool::managed::Manager for NoopDeadpool {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }
    async fn recycle(
        &self,
        _: &mut u64,
        _: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

/// ns per acquire + release, `tasks` tasks sharing `CYCLES` cycles.
fn cycle<P, F, Fut>(rt: &Runtime, pool: &P, tasks: u64, once: F) -> f64
where
    P: Clone + Send + 'static,
    F: Fn(P) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(async {
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..CYCLES / tasks {
                        once(pool.clone()).await;
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.await.unwrap();
        }
        started.elapsed().as_nanos() as f64 / CYCLES as f64
    })
}

/// Queries per second: `tasks` tasks each running `query` in a loop for `SQL_RUN`.
fn qps<P, F, Fut>(rt: &Runtime, pool: &P, tasks: usize, query: F) -> f64
where
    P: Clone + Send + 'static,
    F: Fn(P) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (pool, stop, done) = (pool.clone(), Arc::clone(&stop), Arc::clone(&done));
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        query(pool.clone()).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let started = Instant::now();
        tokio::time::sleep(SQL_RUN).await;
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed();
        let count = done.load(Ordering::Relaxed);
        for handle in handles {
            handle.await.unwrap();
        }
        count as f64 / elapsed.as_secs_f64()
    })
}

struct Row {
    what: &'static str,
    brisk: f64,
    peers: Vec<f64>,
}

fn no_io(rt: &Runtime) -> Vec<Row> {
    let (brisk, bb8, deadpool) = rt.block_on(async {
        let brisk = Pool::builder(Noop)
            .max_size(CONNECTIONS)
            .min_idle(CONNECTIONS)
            .build()
            .await
            .unwrap();
        let bb8 = bb8::Pool::builder()
            .max_size(CONNECTIONS)
            .min_idle(CONNECTIONS)
            .build(NoopBb8)
            .await
            .unwrap();
        let deadpool = deadpool::managed::Pool::builder(NoopDeadpool)
            .max_size(CONNECTIONS as usize)
            .build()
            .unwrap();
        (brisk, bb8, deadpool)
    });
    let mut rows = Vec::new();
    for (what, tasks) in [("1 task", 1), ("32 tasks, 16 connections", 32)] {
        let mut samples = [Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..RUNS {
            samples[0].push(cycle(rt, &brisk, tasks, |p: Pool<Noop>| async move {
                std::hint::black_box(*p.get().await.unwrap());
            }));
            samples[1].push(cycle(rt, &bb8, tasks, |p: bb8::Pool<NoopBb8>| async move {
                std::hint::black_box(*p.get().await.unwrap());
            }));
            samples[2].push(cycle(
                rt,
                &deadpool,
                tasks,
                |p: deadpool::managed::Pool<NoopDeadpool>| async move {
                    std::hint::black_box(*p.get().await.unwrap());
                },
            ));
        }
        let [brisk, bb8, deadpool] = samples.map(median);
        rows.push(Row {
            what,
            brisk,
            peers: vec![bb8, deadpool],
        });
    }
    rows
}

async fn select_one(connection: &mut AsyncPgConnection) {
    connection.batch_execute("SELECT 1").await.unwrap();
}

fn postgres(rt: &Runtime, url: &str) -> Vec<f64> {
    let registry = brisk_metrics::Registry::new();
    let (brisk, tracked, checked, unchecked) = rt.block_on(async {
        let brisk = PgPool::builder(PgConnector::new(url))
            .max_size(CONNECTIONS)
            .min_idle(CONNECTIONS)
            .build()
            .await
            .unwrap();
        let tracking = QueryTracking::builder()
            .metrics(&registry, "bench")
            .build()
            .unwrap();
        let tracked = PgPool::builder(PgConnector::new(url).track_queries(tracking))
            .max_size(CONNECTIONS)
            .min_idle(CONNECTIONS)
            .build()
            .await
            .unwrap();
        let checked = diesel_bb8::Pool::builder()
            .max_size(CONNECTIONS)
            .min_idle(CONNECTIONS)
            .build(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
            .await
            .unwrap();
        let unchecked = diesel_bb8::Pool::builder()
            .max_size(CONNECTIONS)
            .min_idle(CONNECTIONS)
            .test_on_check_out(false)
            .build(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
            .await
            .unwrap();
        (brisk, tracked, checked, unchecked)
    });
    let mut samples = [Vec::new(), Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..RUNS {
        samples[0].push(qps(rt, &brisk, 32, |p: PgPool| async move {
            select_one(&mut p.get().await.unwrap()).await
        }));
        samples[3].push(qps(rt, &tracked, 32, |p: PgPool| async move {
            select_one(&mut p.get().await.unwrap()).await
        }));
        samples[1].push(qps(
            rt,
            &checked,
            32,
            |p: diesel_bb8::Pool<AsyncPgConnection>| async move {
                select_one(&mut p.get().await.unwrap()).await
            },
        ));
        samples[2].push(qps(
            rt,
            &unchecked,
            32,
            |p: diesel_bb8::Pool<AsyncPgConnection>| async move {
                select_one(&mut p.get().await.unwrap()).await
            },
        ));
    }
    // The anti-pattern, once: a new connection for every query (16 at a time, so the server's
    // connection limit is not the bottleneck).
    let url = Arc::<str>::from(url);
    let per_query = qps(rt, &url, 16, |url: Arc<str>| async move {
        select_one(&mut AsyncPgConnection::establish(&url).await.unwrap()).await
    });
    let timed = registry
        .snapshot()
        .histogram(
            "brisk_pool_query_seconds",
            &[("name", "bench"), ("statement", "SELECT ?")],
        )
        .map_or(0, |h| h.count);
    assert!(timed > 0, "the tracked pool timed its statements");
    let [brisk, checked, unchecked, tracked] = samples.map(median);
    vec![brisk, unchecked, checked, per_query, tracked]
}

/// Recovery runs per pool, brisk and bb8 interleaved.
const RECOVERY_RUNS: usize = 5;
const RECOVERY_TASKS: usize = 32;
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// One request of a recovery run.
struct Request {
    started: Instant,
    ended: Instant,
    ok: bool,
}

/// What one restart looked like to a pool's callers, in ms from the moment `restart()` returned
/// (the server accepts connections then; a success slightly before it counts as negative).
struct Recovery {
    first_success: f64,
    /// Until a 100 ms window served 90 % of the pre-kill rate again.
    back_to_90: f64,
    /// Requests waiting at the restart with ≥ 300 ms of their acquire timeout left...
    waiting: usize,
    /// ...and how many of them failed.
    failed: usize,
}

/// Loads `pool` with `query` from 32 tasks; kills the server at 1.5 s, restarts it 3 s later,
/// and measures the 2 s after.
fn recovery<P, F, Fut>(rt: &Runtime, server: &mut PostgresServer, pool: &P, query: F) -> Recovery
where
    P: Clone + Send + 'static,
    F: Fn(P) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..RECOVERY_TASKS)
            .map(|_| {
                let (pool, stop) = (pool.clone(), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut requests = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let ok = query(pool.clone()).await;
                        requests.push(Request {
                            started,
                            ended: Instant::now(),
                            ok,
                        });
                    }
                    requests
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let measured_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = Instant::now();
        server.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio::task::block_in_place(|| server.restart().unwrap());
        let back = Instant::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let mut requests = Vec::new();
        for task in tasks {
            requests.extend(task.await.unwrap());
        }
        let ms = |at: Instant| {
            if at >= back {
                (at - back).as_secs_f64() * 1e3
            } else {
                -((back - at).as_secs_f64() * 1e3)
            }
        };
        let pre_kill = requests
            .iter()
            .filter(|r| r.ok && r.ended >= measured_from && r.ended < killed)
            .count() as f64
            / (killed - measured_from).as_secs_f64();
        // The first success after the outage began (connections broken by the kill fail
        // within a few ms).
        let outage = killed + Duration::from_millis(200);
        let first = requests
            .iter()
            .filter(|r| r.ok && r.ended > outage)
            .map(|r| r.ended)
            .min()
            .expect("the pool recovered");
        let window = Duration::from_millis(100);
        let mut end = first + window;
        let back_to_90 = loop {
            let served = requests
                .iter()
                .filter(|r| r.ok && r.ended > end - window && r.ended <= end)
                .count() as f64;
            if served >= 0.9 * pre_kill * window.as_secs_f64()
                || end > back + Duration::from_secs(2)
            {
                break ms(end);
            }
            end += Duration::from_millis(10);
        };
        let waiting: Vec<&Request> = requests
            .iter()
            .filter(|r| {
                r.started < back
                    && r.ended > back
                    && r.started + ACQUIRE_TIMEOUT >= back + Duration::from_millis(300)
            })
            .collect();
        Recovery {
            first_success: ms(first),
            back_to_90,
            waiting: waiting.len(),
            failed: waiting.iter().filter(|r| !r.ok).count(),
        }
    })
}

/// Median first success and time to 90 %, and waiting/failed totals, over the runs.
fn summarize(runs: &[Recovery]) -> (f64, f64, usize, usize) {
    (
        median(runs.iter().map(|r| r.first_success).collect()),
        median(runs.iter().map(|r| r.back_to_90).collect()),
        runs.iter().map(|r| r.waiting).sum(),
        runs.iter().map(|r| r.failed).sum(),
    )
}

fn recoveries(rt: &Runtime, server: &mut PostgresServer) -> [(f64, f64, usize, usize); 2] {
    let url = server.url();
    let (brisk, bb8) = rt.block_on(async {
        let brisk = PgPool::builder(PgConnector::new(&url))
            .max_size(CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .build()
            .await
            .unwrap();
        let bb8 = diesel_bb8::Pool::builder()
            .max_size(CONNECTIONS)
            .connection_timeout(ACQUIRE_TIMEOUT)
            .build(AsyncDieselConnectionManager::<AsyncPgConnection>::new(&url))
            .await
            .unwrap();
        (brisk, bb8)
    });
    let (mut brisk_runs, mut bb8_runs) = (Vec::new(), Vec::new());
    for _ in 0..RECOVERY_RUNS {
        brisk_runs.push(recovery(rt, server, &brisk, |p: PgPool| async move {
            let Ok(mut connection) = p.get().await else {
                return false;
            };
            connection.batch_execute("SELECT 1").await.is_ok()
        }));
        bb8_runs.push(recovery(
            rt,
            server,
            &bb8,
            |p: diesel_bb8::Pool<AsyncPgConnection>| async move {
                let Ok(mut connection) = p.get().await else {
                    return false;
                };
                connection.batch_execute("SELECT 1").await.is_ok()
            },
        ));
    }
    [summarize(&brisk_runs), summarize(&bb8_runs)]
}

fn main() {
    let rt = runtime();
    let no_io = no_io(&rt);
    let server = PostgresServer::builder()
        .setting("max_connections", "200")
        .start()
        .unwrap();
    let [brisk, unchecked, checked, per_query, tracked]: [f64; 5] =
        postgres(&rt, &server.url()).try_into().unwrap();
    let mut server = server;
    let [brisk_recovery, bb8_recovery] = recoveries(&rt, &mut server);

    println!(
        "Acquire + release of a connection that does no I/O (ns per cycle, lower is better; median of {RUNS} runs, 2 worker threads):\n"
    );
    println!(
        "| measurement | brisk-pool | bb8 0.9 (defaults) | deadpool 0.13 | bb8 / brisk (≥ 0.95 is the target) | deadpool / brisk |"
    );
    println!("|---|---|---|---|---|---|");
    for row in &no_io {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2}× |",
            row.what,
            row.brisk,
            row.peers[0],
            row.peers[1],
            row.peers[0] / row.brisk,
            row.peers[1] / row.brisk,
        );
    }
    println!(
        "\n`SELECT 1` on PostgreSQL 15 (brisk-testkit, same machine), 32 tasks over 16 connections (queries/s, higher is better; median of {RUNS} runs of {} ms):\n",
        SQL_RUN.as_millis()
    );
    println!("| pool | queries/s | brisk / this |");
    println!("|---|---|---|");
    println!("| brisk-pool (validates connections idle ≥ 500 ms) | {brisk:.0} | |");
    println!(
        "| diesel-async bb8, no check | {unchecked:.0} | {:.2}× (≥ 0.95 is the target) |",
        brisk / unchecked
    );
    println!(
        "| diesel-async bb8, default check (`SELECT 1` per checkout) | {checked:.0} | {:.2}× |",
        brisk / checked
    );
    println!(
        "| a new connection per query (the anti-pattern; 16 tasks) | {per_query:.0} | {:.0}× |",
        brisk / per_query
    );
    println!(
        "| brisk-pool with `QueryTracking` (per-statement histogram, slow log at 1 s) | {tracked:.0} | {:.3}× (its cost: ≤ 1.03 is the target) |",
        brisk / tracked
    );
    println!(
        "\nRecovery from a database restart: 32 tasks looping `SELECT 1` over 16 connections, acquire timeout 2 s, other settings default; the server is killed under load and restarted 3 s later. Times in ms from the moment the restarted server accepts connections (median of {RECOVERY_RUNS} runs each, interleaved; lower is better):\n"
    );
    println!(
        "| pool | first success | back to 90 % of the pre-kill rate | callers waiting at the restart with ≥ 300 ms left: failed / all |"
    );
    println!("|---|---|---|---|");
    for (name, (first, ninety, waiting, failed)) in [
        ("brisk-pool", brisk_recovery),
        ("diesel-async bb8 (defaults)", bb8_recovery),
    ] {
        println!("| {name} | {first:.0} | {ninety:.0} | {failed} / {waiting} |");
    }
    println!(
        "\nbb8 / brisk: first success {:.2}×, back to 90 % {:.2}× (≥ 1.0 is the target: recovery at least as fast as bb8).",
        bb8_recovery.0.max(1.0) / brisk_recovery.0.max(1.0),
        bb8_recovery.1.max(1.0) / brisk_recovery.1.max(1.0),
    );
}
