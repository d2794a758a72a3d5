//! Extreme duration settings (issue 30 item 9): `Duration::MAX` as "no limit" must not panic
//! (`Instant + Duration` overflows), and a duration the pool cannot use is a typed
//! `Error::Config` at `build()`, never a panic. With an in-memory connector.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_pool::{Connect, ConnectionPool, Error, Pool, Validation};

#[derive(Debug, Default, Clone)]
struct Memory {
    connects: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Conn(usize);

impl Connect for Memory {
    type Connection = Conn;
    type Error = io::Error;

    async fn connect(&self) -> io::Result<Conn> {
        Ok(Conn(self.connects.fetch_add(1, Ordering::SeqCst)))
    }

    async fn validate(&self, _: &mut Conn) -> io::Result<()> {
        tokio::task::yield_now().await;
        Ok(())
    }

    fn is_broken(&self, _: &mut Conn) -> bool {
        false
    }

    fn target(&self) -> String {
        "memory://durations".to_owned()
    }
}

/// `acquire_timeout(Duration::MAX)`: a checkout that has to wait waits without a deadline
/// and gets the connection when it comes back (the deadline `now + MAX` panicked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_timeout_of_duration_max_waits_without_a_deadline() {
    let pool = Pool::builder(Memory::default())
        .max_size(1)
        .acquire_timeout(Duration::MAX)
        .build()
        .await
        .unwrap();
    let held = pool.get().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|connection| connection.0) }
    });
    // Yields until the checkout waits (a state to wait for, not a time), or has ended.
    while pool.status().waiting != 1 && !waiter.is_finished() {
        tokio::task::yield_now().await;
    }
    drop(held);
    let id = waiter
        .await
        .expect("the waiting checkout panicked")
        .unwrap();
    assert_eq!(id, 0);
    let status = pool.status();
    assert_eq!((status.size, status.idle, status.waiting), (1, 1, 0));
}

/// Every other duration setting at `Duration::MAX` builds, checks out, validates, returns
/// and closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_duration_setting_accepts_duration_max() {
    type Setting = fn(brisk_pool::PoolBuilder<Memory>) -> brisk_pool::PoolBuilder<Memory>;
    let settings: [(&str, Setting); 8] = [
        ("acquire_timeout", |b| b.acquire_timeout(Duration::MAX)),
        ("connect_timeout", |b| {
            b.connect_timeout(Duration::MAX)
                .validation(Validation::Always)
        }),
        ("max_lifetime", |b| b.max_lifetime(Duration::MAX)),
        ("lifetime_jitter", |b| {
            b.no_max_lifetime().lifetime_jitter(Duration::MAX)
        }),
        ("idle_timeout", |b| b.idle_timeout(Duration::MAX)),
        ("validation", |b| {
            b.validation(Validation::IdleFor(Duration::MAX))
        }),
        ("retry_backoff", |b| b.retry_backoff(Duration::MAX)),
        ("leak_threshold", |b| b.leak_threshold(Duration::MAX)),
    ];
    for (name, setting) in settings {
        let pool = setting(Pool::builder(Memory::default()).max_size(2))
            .build()
            .await
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        for _ in 0..3 {
            let first = pool.get().await.unwrap();
            let second = pool.get().await.unwrap();
            assert_ne!(first.0, second.0, "{name}");
        }
        assert!(pool.suspected_leaks().is_empty(), "{name}");
        ConnectionPool::close(&pool).await;
        assert_eq!(pool.status().size, 0, "{name}");
    }
}

/// A zero idle timeout is a typed error at `build()` (bb8 asserted on it: a panic).
#[tokio::test]
async fn a_zero_idle_timeout_is_a_config_error() {
    let error = Pool::builder(Memory::default())
        .idle_timeout(Duration::ZERO)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config { setting, value, .. } if setting == "idle_timeout" && value == "0s"),
        "{error}"
    );
    let mut config = brisk_pool::Config::default();
    config.set("idle_timeout", "0s").unwrap();
    let error = Pool::builder(Memory::default())
        .config(config)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config { setting, .. } if setting == "idle_timeout"),
        "{error}"
    );
}

/// Every connect is refused (a port nothing listens on).
#[derive(Debug, Clone)]
struct Refused;

impl Connect for Refused {
    type Connection = Conn;
    type Error = io::Error;

    async fn connect(&self) -> io::Result<Conn> {
        tokio::task::yield_now().await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    }

    async fn validate(&self, _: &mut Conn) -> io::Result<()> {
        Ok(())
    }

    fn is_broken(&self, _: &mut Conn) -> bool {
        false
    }

    fn target(&self) -> String {
        "memory://refused".to_owned()
    }
}

/// Review item 7: a probe interval of `Duration::MAX` (the next probe `now + MAX` panicked
/// when the breaker opened): the breaker opens and stays open, checkouts answer
/// `Unavailable`, nothing panics.
#[tokio::test(start_paused = true)]
async fn a_breaker_probe_interval_of_duration_max_opens_without_a_panic() {
    let pool = Pool::builder(Refused)
        .max_size(2)
        .min_idle(0)
        .connect_retries(1)
        .retry_backoff(Duration::from_millis(1))
        .acquire_timeout(Duration::from_secs(5))
        .circuit_breaker(2, Duration::MAX)
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        let error = pool.get().await.unwrap_err();
        let Error::Unavailable { retry_after, .. } = &error else {
            panic!("expected Unavailable, got {error:?}");
        };
        assert!(*retry_after > Duration::from_secs(3600), "{error}");
    }
}
