//! Cancellation stress (issue 30): many tasks call `run` on few keys, in one process
//! (`SingleFlight`) and across instances sharing a real redis-server (`RedisFlight`), and
//! their futures are dropped at random points: after a random number of polls (so at every
//! await point in turn), by timeouts of random short lengths, and by `select!` against random
//! wake-ups. Then the invariants: no flight left in any map, no lease left in Redis, and
//! every later call completes with a value. Seeds are fixed; nothing asserts on timing.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use brisk_dedup::SingleFlight;
use tokio::sync::Notify;

/// xorshift64: a reproducible stream of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How a caller's future ends.
#[derive(Clone, Copy, Debug)]
enum Cancel {
    /// Runs to completion.
    Never,
    /// Dropped after this many polls, whichever await point that is.
    AfterPolls(u32),
    /// Dropped by `tokio::time::timeout` after this many microseconds.
    Timeout(u64),
    /// Dropped by `select!` when this wake-up fires.
    Wakeup(usize),
}

const WAKEUPS: usize = 8;

impl Cancel {
    fn pick(rng: &mut Rng) -> Self {
        match rng.below(5) {
            0 => Cancel::AfterPolls(rng.below(12) as u32),
            1 => Cancel::Timeout(rng.below(3000)),
            2 => Cancel::Wakeup(rng.below(WAKEUPS as u64) as usize),
            _ => Cancel::Never,
        }
    }

    /// Runs `call` until it completes (`Some`) or this cancellation drops it (`None`).
    async fn apply<F: Future>(self, call: F, wakeups: &[Notify]) -> Option<F::Output> {
        match self {
            Cancel::Never => Some(call.await),
            Cancel::AfterPolls(polls) => {
                DropAfterPolls {
                    inner: Box::pin(call),
                    left: polls,
                }
                .await
            }
            Cancel::Timeout(us) => tokio::time::timeout(Duration::from_micros(us), call)
                .await
                .ok(),
            Cancel::Wakeup(i) => tokio::select! {
                output = call => Some(output),
                () = wakeups[i].notified() => None,
            },
        }
    }
}

/// Resolves to `None` (dropping the inner future) on its poll number `left + 1`, unless the
/// inner future completed before.
struct DropAfterPolls<F> {
    inner: Pin<Box<F>>,
    left: u32,
}

impl<F: Future> Future for DropAfterPolls<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        self.left -= 1;
        self.inner.as_mut().poll(cx).map(Some)
    }
}

/// Fires random wake-ups (each cancelling the callers that `select!` on it) until stopped.
fn spawn_wakeups(
    wakeups: Arc<[Notify]>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        while !stop.load(Ordering::SeqCst) {
            wakeups[rng.below(WAKEUPS as u64) as usize].notify_waiters();
            tokio::time::sleep(Duration::from_micros(rng.below(500))).await;
        }
    })
}

/// Counts the executions of one key running at once.
#[derive(Default)]
struct Overlap {
    running: AtomicUsize,
    overlaps: AtomicUsize,
}

impl Overlap {
    fn enter(&self) -> Leave<'_> {
        if self.running.fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        Leave(self)
    }
}

struct Leave<'a>(&'a Overlap);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A key's leaked flight is reused by the key's next caller, so a leak shows only when a
/// cancelled caller is the key's last: the tasks come in waves, each on its own few keys, all
/// running at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_flights_survive_random_cancellations() {
    const WAVES: u64 = 100;
    const TASKS_PER_WAVE: usize = 30;
    const KEYS: u64 = 4;
    let registry = brisk_metrics::Registry::new();
    let group: Arc<SingleFlight<String, u64, String>> = Arc::new(
        SingleFlight::builder()
            .metrics(&registry, "stress")
            .build()
            .unwrap(),
    );
    let overlaps: Arc<Vec<Overlap>> =
        Arc::new((0..WAVES * KEYS).map(|_| Overlap::default()).collect());
    let wakeups: Arc<[Notify]> = (0..WAKEUPS).map(|_| Notify::new()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let driver = spawn_wakeups(wakeups.clone(), stop.clone(), 0xD1B5_4A32_D192_ED03);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tasks = Vec::new();
    for i in 0..WAVES as usize * TASKS_PER_WAVE {
        let wave = (i / TASKS_PER_WAVE) as u64;
        let key = wave * KEYS + rng.below(KEYS);
        let work_us = rng.below(3000);
        let yields = rng.below(4);
        let cancel = Cancel::pick(&mut rng);
        let (group, overlaps, wakeups) = (group.clone(), overlaps.clone(), wakeups.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("key-{key}");
            let call = group.run(&name, || async move {
                let _running = overlaps[key as usize].enter();
                for _ in 0..yields {
                    tokio::task::yield_now().await;
                }
                tokio::time::sleep(Duration::from_micros(work_us)).await;
                Ok(key)
            });
            (key, cancel, cancel.apply(call, &wakeups).await)
        }));
        if i % 32 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for task in tasks {
        let (key, cancel, output) = task.await.unwrap();
        match (cancel, output) {
            (_, Some(value)) => assert_eq!(value.unwrap(), key),
            (Cancel::Never, None) => unreachable!(),
            (_, None) => {}
        }
    }
    stop.store(true, Ordering::SeqCst);
    driver.await.unwrap();

    let counted = |name| {
        registry
            .snapshot()
            .counter(name, &[("name", "stress")])
            .unwrap_or(0)
    };
    eprintln!(
        "executions {}, handovers {}, coalesced {}",
        counted("brisk_dedup_executions_total"),
        counted("brisk_dedup_handovers_total"),
        counted("brisk_dedup_coalesced_total")
    );
    assert_eq!(group.in_flight(), 0, "a flight was left in the map");
    for key in 0..WAVES * KEYS {
        let key_name = format!("key-{key}");
        assert!(!group.is_in_flight(&key_name));
        assert_eq!(
            overlaps[key as usize].overlaps.load(Ordering::SeqCst),
            0,
            "{key_name} ran twice at once"
        );
        let later = group.run(&key_name, || async move { Ok(key + 100) }).await;
        assert_eq!(later.unwrap(), key + 100, "a later call of {key_name}");
    }
    assert_eq!(group.in_flight(), 0);
}

#[cfg(feature = "redis")]
mod redis_flight {
    use super::*;
    use brisk_dedup::redis::{RedisFlight, RedisStore};
    use brisk_metrics::Registry;
    use brisk_testkit::RedisServer;
    use redis::aio::MultiplexedConnection;

    type Flight =
        RedisFlight<MultiplexedConnection, RedisStore<MultiplexedConnection>, String, String>;

    /// A leaked lease lives this long: longer than the test could wait, so it cannot expire
    /// away before the check finds it (and it would hang the later calls).
    const LEASE_TTL: Duration = Duration::from_secs(600);

    async fn connection(url: &str) -> MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn instance(url: &str, registry: &Registry, subscribe: bool) -> Flight {
        let conn = connection(url).await;
        let mut builder = RedisFlight::builder(conn.clone(), RedisStore::new(conn))
            .lease_ttl(LEASE_TTL)
            .poll_interval(Duration::from_millis(1), Duration::from_millis(10))
            .redis_timeout(Duration::from_secs(30))
            .metrics(registry, "stress");
        if subscribe {
            builder = builder.subscribe(redis::Client::open(url).unwrap());
        }
        builder.build().unwrap()
    }

    async fn leases(conn: &mut MultiplexedConnection) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("brisk:dedup:*:lease")
            .query_async(conn)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_flights_survive_random_cancellations() {
        const TASKS: usize = 800;
        const KEYS: u64 = 4;
        const INSTANCES: usize = 3;
        let server = RedisServer::start().unwrap();
        let registry = Registry::new();
        let mut flights = Vec::new();
        for i in 0..INSTANCES {
            flights.push(Arc::new(instance(&server.url(), &registry, i == 0).await));
        }
        let wakeups: Arc<[Notify]> = (0..WAKEUPS).map(|_| Notify::new()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let driver = spawn_wakeups(wakeups.clone(), stop.clone(), 0x2545_F491_4F6C_DD1D);
        let mut rng = Rng(0xA076_1D64_78BD_642F);
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let flight = flights[rng.below(INSTANCES as u64) as usize].clone();
            let key = rng.below(KEYS);
            let work_us = rng.below(2000);
            let cancel = Cancel::pick(&mut rng);
            let wakeups = wakeups.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("key-{key}");
                let call = flight.run(&name, || async move {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(Duration::from_micros(work_us)).await;
                    Ok(format!("value-{key}"))
                });
                (key, cancel, cancel.apply(call, &wakeups).await)
            }));
            if i % 16 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for task in tasks {
            // A lease leaked by a cancelled leader holds its followers for LEASE_TTL: this
            // bound turns that hang into a failure.
            let (key, cancel, output) = tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("a caller hung: a lease or a flight was leaked")
                .unwrap();
            match (cancel, output) {
                (_, Some(value)) => assert_eq!(value.unwrap(), format!("value-{key}")),
                (Cancel::Never, None) => unreachable!(),
                (_, None) => {}
            }
        }
        stop.store(true, Ordering::SeqCst);
        driver.await.unwrap();

        for (i, flight) in flights.iter().enumerate() {
            assert_eq!(flight.in_flight(), 0, "instance {i} left a flight");
        }
        // Leases of cancelled leaders are released by spawned tasks, which may still be
        // running: wait for them, well within LEASE_TTL.
        let mut conn = connection(&server.url()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = leases(&mut conn).await;
            if left.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "leases left in Redis: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for key in 0..KEYS {
            for (i, flight) in flights.iter().enumerate() {
                let later = flight
                    .run(&format!("key-{key}"), || async move {
                        Ok(format!("later-{key}"))
                    })
                    .await;
                assert_eq!(later.unwrap(), format!("later-{key}"), "instance {i}");
            }
        }
        let panics = registry
            .snapshot()
            .counter("brisk_dedup_panics_total", &[("name", "stress")])
            .unwrap_or(0);
        assert_eq!(panics, 0);
        assert!(leases(&mut conn).await.is_empty());
    }
}
