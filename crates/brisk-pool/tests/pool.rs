//! The pool's policy, with an in-memory connector whose connects, validations and breakage
//! the tests control. Real servers are in tests/postgres.rs, tests/sqlite.rs, tests/redis.rs.

use std::{
    collections::HashSet,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_metrics::Registry;
use brisk_pool::{Connect, ConnectTimedOut, ConnectionPool, Error, Order, Pool, Validation};

/// What the tests can see and steer.
#[derive(Debug, Default)]
struct Server {
    down: AtomicBool,
    /// Connects never complete while set (a firewall dropping packets).
    hang: AtomicBool,
    /// Validations fail while set (a restart the sockets have not noticed).
    stale: AtomicBool,
    connects: AtomicUsize,
    /// Connect attempts, failed or not.
    attempts: AtomicUsize,
    /// The next this many connect attempts fail (a transient failure).
    fail_next: AtomicUsize,
    validations: AtomicUsize,
    /// Connection ids currently checked out, to catch double use.
    checked_out: Mutex<HashSet<usize>>,
}

#[derive(Debug, Clone, Default)]
struct Memory(Arc<Server>);

#[derive(Debug)]
struct Conn {
    id: usize,
    broken: bool,
    server: Arc<Server>,
}

impl Conn {
    fn begin(&self) {
        assert!(
            self.server.checked_out.lock().unwrap().insert(self.id),
            "connection {} handed out twice",
            self.id
        );
    }
    fn end(&self) {
        self.server.checked_out.lock().unwrap().remove(&self.id);
    }
}

impl Connect for Memory {
    type Connection = Conn;
    type Error = io::Error;

    async fn connect(&self) -> io::Result<Conn> {
        self.0.attempts.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if self.0.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        let transient = self
            .0
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if transient || self.0.down.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "connection refused (test server down)",
            ));
        }
        let id = self.0.connects.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            id,
            broken: false,
            server: Arc::clone(&self.0),
        })
    }

    async fn validate(&self, _: &mut Conn) -> io::Result<()> {
        self.0.validations.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        match self.0.stale.load(Ordering::SeqCst) {
            true => Err(io::Error::new(io::ErrorKind::BrokenPipe, "stale")),
            false => Ok(()),
        }
    }

    fn is_broken(&self, connection: &mut Conn) -> bool {
        connection.broken
    }

    fn target(&self) -> String {
        "memory://test".to_owned()
    }
}

fn builder(memory: &Memory) -> brisk_pool::PoolBuilder<Memory> {
    Pool::builder(memory.clone())
        .max_size(4)
        .min_idle(1)
        .acquire_timeout(Duration::from_millis(200))
}

#[tokio::test]
async fn checkout_and_return_reuse_one_connection() {
    let memory = Memory::default();
    let pool = builder(&memory).build().await.unwrap();
    assert_eq!(
        memory.0.connects.load(Ordering::SeqCst),
        1,
        "min_idle is opened at build"
    );
    for _ in 0..10 {
        let connection = pool.get().await.unwrap();
        assert_eq!(connection.id, 0);
        let status = pool.status();
        assert_eq!(
            (status.size, status.idle, status.in_use, status.waiting),
            (1, 0, 1, 0)
        );
    }
    let status = pool.status();
    assert_eq!(
        (status.max_size, status.size, status.idle, status.in_use),
        (4, 1, 1, 0)
    );
}

#[tokio::test]
async fn warm_up_fails_with_the_real_connect_error() {
    let memory = Memory::default();
    memory.0.down.store(true, Ordering::SeqCst);
    let error = builder(&memory)
        .connect_retries(5)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Connect { target, .. } if &**target == "memory://test"),
        "{error:?}"
    );
    assert!(
        brisk_testkit::error_chain(&error).contains("connection refused (test server down)"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_while_connects_fail_names_the_connect_error() {
    let memory = Memory::default();
    let pool = builder(&memory)
        .min_idle(0)
        .connect_retries(0)
        .build()
        .await
        .unwrap();
    memory.0.down.store(true, Ordering::SeqCst);
    let error = pool.get().await.unwrap_err();
    let Error::Timeout {
        waited,
        last_connect_error: Some(cause),
        ..
    } = &error
    else {
        panic!("expected a timeout with a cause, got {error:?}");
    };
    assert_eq!(*waited, Duration::from_millis(200));
    assert!(cause.to_string().contains("connection refused"), "{cause}");
    assert!(
        error
            .to_string()
            .contains("last connect error: connection refused"),
        "{error}"
    );

    // Once the server is back, the next checkout connects and the stale cause is gone.
    memory.0.down.store(false, Ordering::SeqCst);
    let connection = pool.get().await.unwrap();
    drop(connection);
    let busy: Vec<_> = check_out(&pool, 4).await;
    let error = pool.get().await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Timeout {
                last_connect_error: None,
                ..
            }
        ),
        "{error:?}"
    );
    drop(busy);
}

/// bb8 connects only when a checkout starts or a connection returns: once its connects have
/// failed and every caller waits, nothing would try again. The pool keeps probing while
/// callers wait, serves them when the server is back, and stops probing when nobody waits.
#[tokio::test(start_paused = true)]
async fn waiting_checkouts_keep_the_pool_connecting_until_the_server_is_back() {
    let memory = Memory::default();
    let pool = builder(&memory)
        .max_size(2)
        .min_idle(0)
        .acquire_timeout(Duration::from_secs(10))
        .retry_backoff(Duration::from_millis(50))
        .build()
        .await
        .unwrap();
    memory.0.down.store(true, Ordering::SeqCst);
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.get().await.map(|connection| connection.id) })
        })
        .collect();
    // Long after bb8's own connects gave up (two retries, well under a second).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = memory.0.attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let probes = memory.0.attempts.load(Ordering::SeqCst) - attempts;
    // One probe at a time, a jittered wait of at most 50 ms apart: at least 40 in 2 s, and
    // not a storm (each of bb8's waiters connecting on its own would be several times that).
    assert!((40..=400).contains(&probes), "{probes} probes in 2 s");
    assert_eq!(pool.status().waiting, 4);

    memory.0.down.store(false, Ordering::SeqCst);
    for caller in callers {
        caller
            .await
            .unwrap()
            .expect("a caller waiting when the server came back");
    }
    let status = pool.status();
    assert!(status.size >= 1 && status.size <= 2, "{status:?}");
    // Nobody waits: no more connects.
    let attempts = memory.0.attempts.load(Ordering::SeqCst);
    memory.0.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(memory.0.attempts.load(Ordering::SeqCst), attempts);
}

/// A returned connection goes to the checkout that has waited longest, even when its last user
/// asks again at once.
#[tokio::test(start_paused = true)]
async fn the_longest_waiting_checkout_gets_the_next_connection() {
    let memory = Memory::default();
    let pool = builder(&memory)
        .max_size(1)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let held = pool.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for n in 0..6 {
        let (caller_pool, order) = (pool.clone(), Arc::clone(&order));
        callers.push(tokio::spawn(async move {
            // Each caller asks again as soon as it has returned its connection, as a request
            // loop does; it must not take the connection back from those already waiting.
            for _ in 0..2 {
                let connection = caller_pool.get().await.unwrap();
                order.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(1)).await;
                drop(connection);
            }
        }));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while pool.status().waiting < n + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "the callers did not all start waiting in 60 s"
            );
            tokio::task::yield_now().await;
        }
    }
    drop(held);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn an_owned_checkout_moves_into_a_task_and_outlives_every_pool_handle() {
    let memory = Memory::default();
    let pool = builder(&memory).max_size(1).build().await.unwrap();
    let owned = pool.get_owned().await.unwrap();
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        owned.begin();
        wait.await.unwrap();
        owned.end();
        // Dropped here, after the test has dropped the pool.
    });
    assert_eq!(pool.status().in_use, 1);
    let error = pool.get().await.unwrap_err();
    assert!(
        matches!(error, Error::Timeout { .. }),
        "the owned checkout holds the only permit: {error:?}"
    );
    drop(pool);
    go.send(()).unwrap();
    task.await.unwrap();
    assert!(memory.0.checked_out.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_owned_checkout_returns_its_connection_and_permit_to_a_live_pool() {
    let memory = Memory::default();
    let pool = builder(&memory).max_size(1).build().await.unwrap();
    let owned = pool.get_owned().await.unwrap();
    let id = owned.id;
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|connection| connection.id) }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pool.status().waiting == 0 {
        assert!(std::time::Instant::now() < deadline, "no waiter in 60 s");
        tokio::task::yield_now().await;
    }
    tokio::spawn(async move { drop(owned) }).await.unwrap();
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        id,
        "the same connection, reused"
    );
    assert_eq!(memory.0.connects.load(Ordering::SeqCst), 1);
    let status = pool.status();
    assert_eq!((status.size, status.idle, status.in_use), (1, 1, 0));
    // `close` waits for owned checkouts as for borrowed ones.
    let owned = ConnectionPool::get_owned(&pool).await.unwrap();
    let closing = tokio::spawn({
        let pool = pool.clone();
        async move { pool.close().await }
    });
    tokio::task::yield_now().await;
    assert!(!closing.is_finished(), "close waits for the owned checkout");
    drop(owned);
    closing.await.unwrap();
    assert_eq!(pool.status().size, 0);
    assert!(matches!(pool.get_owned().await, Err(Error::Closed { .. })));
}

/// Checks out `n` connections, one after the other, and holds them.
async fn check_out(pool: &Pool<Memory>, n: usize) -> Vec<brisk_pool::PooledConnection<'_, Memory>> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.get().await.unwrap());
    }
    held
}

#[tokio::test(start_paused = true)]
async fn validation_runs_only_after_the_idle_window() {
    let memory = Memory::default();
    let window = Duration::from_millis(400);
    // One connection, so that each checkout sees the same one.
    let pool = builder(&memory)
        .max_size(1)
        .validation(Validation::IdleFor(window))
        .build()
        .await
        .unwrap();
    for _ in 0..5 {
        drop(pool.get().await.unwrap());
    }
    assert_eq!(
        memory.0.validations.load(Ordering::SeqCst),
        0,
        "a connection just used is not validated"
    );

    tokio::time::sleep(window + window / 4).await;
    drop(pool.get().await.unwrap());
    assert_eq!(
        memory.0.validations.load(Ordering::SeqCst),
        1,
        "one idle past the window is"
    );

    tokio::time::sleep(window / 2).await;
    drop(pool.get().await.unwrap());
    assert_eq!(
        memory.0.validations.load(Ordering::SeqCst),
        1,
        "half a window idle is not"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stale_idle_connection_is_replaced_not_handed_out() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    memory.0.stale.store(true, Ordering::SeqCst);
    let connection = pool.get().await.unwrap();
    assert_eq!(
        connection.id, 1,
        "the stale connection 0 was closed and a new one opened"
    );
    let closes = registry.snapshot().counter(
        "brisk_pool_closes_total",
        &[("name", "db"), ("reason", "invalid")],
    );
    assert_eq!(closes, Some(1));
}

#[tokio::test]
async fn always_and_never_policies() {
    let memory = Memory::default();
    let pool = builder(&memory)
        .validation(Validation::Always)
        .build()
        .await
        .unwrap();
    for _ in 0..3 {
        drop(pool.get().await.unwrap());
    }
    assert_eq!(memory.0.validations.load(Ordering::SeqCst), 3);

    let memory = Memory::default();
    let pool = builder(&memory)
        .validation(Validation::Never)
        .build()
        .await
        .unwrap();
    tokio::time::pause();
    tokio::time::sleep(Duration::from_secs(60)).await;
    memory.0.stale.store(true, Ordering::SeqCst);
    assert_eq!(
        pool.get().await.unwrap().id,
        0,
        "never validated, so the stale one is handed out"
    );
    assert_eq!(memory.0.validations.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_connection_returned_broken_is_closed() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    let mut connection = pool.get().await.unwrap();
    connection.broken = true;
    drop(connection);
    assert_eq!(pool.status().size, 0, "closed on return");
    assert_ne!(pool.get().await.unwrap().id, 0);
    let closes = registry.snapshot().counter(
        "brisk_pool_closes_total",
        &[("name", "db"), ("reason", "broken")],
    );
    assert_eq!(closes, Some(1));
}

#[tokio::test(start_paused = true)]
async fn lifetimes_are_jittered_so_connections_are_not_replaced_together() {
    let memory = Memory::default();
    let lifetime = Duration::from_secs(60);
    let pool = builder(&memory)
        .max_size(32)
        .min_idle(32)
        .validation(Validation::Never)
        .max_lifetime(lifetime)
        .lifetime_jitter(Duration::from_secs(30))
        .no_idle_timeout()
        .build()
        .await
        .unwrap();
    // Cycle every connection once a second and record when each original one is replaced.
    // Run two seconds past the longest lifetime: the coarse clock the pool judges age by is
    // advanced by its housekeeper, which may tick just after the loop wakes at second 60.
    let mut replaced_at = Vec::new();
    for second in 0..63 {
        let held: Vec<_> = check_out(&pool, 32).await;
        let originals = held.iter().filter(|c| c.id < 32).count();
        drop(held);
        replaced_at.extend(std::iter::repeat_n(
            second,
            32 - originals - replaced_at.len(),
        ));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        replaced_at.len(),
        32,
        "every connection reached its lifetime"
    );
    let first = replaced_at[0];
    let last = replaced_at[31];
    assert!(
        first >= 29 && last <= 61,
        "lifetimes within [30 s, 60 s]: {replaced_at:?}"
    );
    let distinct: HashSet<_> = replaced_at.iter().collect();
    assert!(
        distinct.len() >= 8,
        "replacements spread over time, not one storm: {replaced_at:?}"
    );
}

/// bb8's reaper judges idle time by the real clock, so this one runs in real time.
#[tokio::test]
async fn idle_connections_past_the_idle_timeout_are_closed_and_counted() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .min_idle(0)
        .idle_timeout(Duration::from_millis(100))
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    drop(check_out(&pool, 3).await);
    assert_eq!(pool.status().idle, 3);
    let closes = || {
        registry.snapshot().counter(
            "brisk_pool_closes_total",
            &[("name", "db"), ("reason", "idle")],
        )
    };
    // Wait for the reaper, then for the housekeeper to count what it closed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while closes() != Some(3) {
        assert!(
            std::time::Instant::now() < deadline,
            "the reaper did not close the 3 idle connections in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(pool.status().size, 0);
}

#[tokio::test(start_paused = true)]
async fn a_connection_held_past_the_leak_threshold_is_reported_with_its_call_site() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .leak_threshold(Duration::from_secs(2))
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    let logs = brisk_testkit::LogCapture::this_thread();
    let line = line!() + 1;
    let leaked = pool.get_owned().await.unwrap();
    drop(pool.get().await.unwrap()); // a short checkout is not a leak
    tokio::time::sleep(Duration::from_secs(3)).await;
    let suspects = pool.suspected_leaks();
    assert_eq!(suspects.len(), 1, "{suspects:?}");
    assert_eq!(suspects[0].location.file(), file!());
    assert_eq!(suspects[0].location.line(), line);
    assert!(suspects[0].held_for >= Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leaks = registry
        .snapshot()
        .counter("brisk_pool_leaks_total", &[("name", "db")]);
    assert_eq!(leaks, Some(1), "reported once");
    let warnings = logs.lines();
    let location = format!("location={}:{line}:", file!());
    assert!(
        warnings
            .iter()
            .any(|event| event.contains("longer than the leak threshold")
                && event.contains(&location)),
        "a tracing warning names the call site: {warnings:?}"
    );
    drop(leaked);
    assert!(pool.suspected_leaks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_checkouts_never_leak_a_connection_or_a_slot() {
    let memory = Memory::default();
    let pool = builder(&memory)
        .max_size(4)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let completed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..64_usize {
        let pool = pool.clone();
        let completed = Arc::clone(&completed);
        tasks.push(tokio::spawn(async move {
            for round in 0..200_usize {
                // Every third checkout is abandoned after one poll, mid-wait or just granted.
                if (task + round) % 3 == 0 {
                    let checkout = std::pin::pin!(pool.get());
                    let _ = futures_poll_once(checkout).await;
                    continue;
                }
                // Every fifth is owned and used from a task of its own.
                if (task + round) % 5 == 0 {
                    let connection = pool.get_owned().await.unwrap();
                    tokio::spawn(async move {
                        connection.begin();
                        tokio::task::yield_now().await;
                        connection.end();
                    })
                    .await
                    .unwrap();
                    completed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let connection = pool.get().await.unwrap();
                connection.begin();
                tokio::task::yield_now().await;
                connection.end();
                completed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let status = pool.status();
    assert_eq!((status.in_use, status.waiting), (0, 0), "{status:?}");
    assert!(status.size <= 4 && status.idle == status.size, "{status:?}");
    assert!(
        memory.0.connects.load(Ordering::SeqCst) <= 4,
        "no connection was lost and replaced"
    );
    // Every slot is usable: all four can be held at once.
    let held = check_out(&pool, 4).await;
    assert_eq!(held.len(), 4);
    assert!(completed.load(Ordering::Relaxed) > 8000);
}

/// Polls a future once and drops it.
async fn futures_poll_once<F: std::future::Future>(
    mut future: std::pin::Pin<&mut F>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match future.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test]
async fn close_fails_waiters_drains_and_refuses_new_checkouts() {
    let memory = Memory::default();
    let pool = builder(&memory)
        .max_size(1)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let held = pool.get().await.unwrap();
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.get().await.map(|_| ()) }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pool.status().waiting == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the caller did not start waiting in 60 s"
        );
        tokio::task::yield_now().await;
    }
    let closing = tokio::spawn({
        let pool = pool.clone();
        async move { pool.close().await }
    });
    let error = waiter.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Closed { .. }), "{error:?}");
    assert!(
        !closing.is_finished(),
        "close waits for the checked-out connection"
    );
    assert_eq!(pool.status().size, 1);
    drop(held);
    closing.await.unwrap();
    assert_eq!(pool.status().size, 0, "drained");
    assert!(matches!(pool.get().await, Err(Error::Closed { .. })));
    ConnectionPool::close(&pool).await; // again: returns at once
}

#[tokio::test]
async fn the_connect_hook_runs_on_every_new_connection_and_its_error_fails_the_connect() {
    let memory = Memory::default();
    let hooked = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&hooked);
    let pool = builder(&memory)
        .on_connect(move |connection: &mut Conn| {
            let seen = Arc::clone(&seen);
            Box::pin(async move {
                seen.fetch_add(1, Ordering::SeqCst);
                if connection.id == 1 {
                    return Err("SET statement_timeout failed".into());
                }
                Ok(())
            })
        })
        .connect_retries(1)
        .retry_backoff(Duration::from_millis(1))
        .build()
        .await
        .unwrap();
    let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
    assert_eq!(
        (a.id, b.id),
        (0, 2),
        "connection 1 failed its hook and was not used"
    );
    assert_eq!(hooked.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn metrics_count_connects_failures_and_acquire_waits() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .max_size(1)
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    let held = pool.get().await.unwrap();
    let second = tokio::spawn({
        let pool = pool.clone();
        async move { drop(pool.get().await.unwrap()) }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pool.status().waiting == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the caller did not start waiting in 60 s"
        );
        tokio::task::yield_now().await;
    }
    drop(held);
    second.await.unwrap();
    let error = {
        let _held = pool.get().await.unwrap();
        pool.get().await.unwrap_err()
    };
    assert!(matches!(error, Error::Timeout { .. }));
    let snapshot = registry.snapshot();
    let labels = &[("name", "db")];
    assert_eq!(
        snapshot.counter("brisk_pool_connects_total", labels),
        Some(1)
    );
    assert_eq!(
        snapshot.counter("brisk_pool_acquire_timeouts_total", labels),
        Some(1)
    );
    let acquire = snapshot
        .histogram("brisk_pool_acquire_seconds", labels)
        .unwrap();
    assert_eq!(
        acquire.count, 3,
        "the timed-out checkout is counted as a timeout, not a wait"
    );
    assert!(
        acquire.max > 0.0,
        "the checkout that waited recorded its wait"
    );
}

#[tokio::test]
async fn config_from_a_url_reaches_the_pool() {
    let mut config = brisk_pool::Config::default();
    let rest = config
        .apply_url("memory://test?pool_max_size=2&pool_min_idle=2")
        .unwrap();
    assert_eq!(rest, "memory://test");
    let memory = Memory::default();
    let pool = Pool::builder(memory.clone())
        .config(config)
        .build()
        .await
        .unwrap();
    assert_eq!((pool.status().max_size, pool.status().size), (2, 2));
    let error = Pool::builder(memory)
        .min_idle(11)
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Config { setting, .. } if setting == "min_idle"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connect_that_hangs_is_cut_at_the_connect_timeout() {
    let memory = Memory::default();
    memory.0.hang.store(true, Ordering::SeqCst);
    let error = builder(&memory)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .await
        .unwrap_err();
    let Error::Connect { source, .. } = &error else {
        panic!("expected a connect error, got {error:?}");
    };
    assert_eq!(
        source.downcast_ref::<ConnectTimedOut>(),
        Some(&ConnectTimedOut(Duration::from_secs(3)))
    );
    assert!(
        brisk_testkit::error_chain(&error).contains("connect timed out after 3s"),
        "{error}"
    );
}

#[tokio::test]
async fn fifo_takes_the_longest_idle_connection_and_lifo_the_latest() {
    for (order, expected) in [(Order::Fifo, 0), (Order::Lifo, 1)] {
        let memory = Memory::default();
        let pool = builder(&memory)
            .max_size(2)
            .min_idle(2)
            .order(order)
            .build()
            .await
            .unwrap();
        let (a, b) = (pool.get().await.unwrap(), pool.get().await.unwrap());
        let (first, second) = if a.id < b.id { (a, b) } else { (b, a) };
        drop(first); // connection 0 goes back first
        drop(second);
        assert_eq!(pool.get().await.unwrap().id, expected, "{order:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_housekeeper_samples_the_connection_gauges() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .max_size(3)
        .min_idle(3)
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    let held = check_out(&pool, 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snapshot = registry.snapshot();
    let gauge = |state| {
        snapshot.gauge(
            "brisk_pool_connections",
            &[("name", "db"), ("state", state)],
        )
    };
    assert_eq!((gauge("in_use"), gauge("idle")), (Some(2), Some(1)));
    assert_eq!(
        snapshot.gauge("brisk_pool_waiting", &[("name", "db")]),
        Some(0)
    );
    drop(held);
}

/// Issue 29: with the circuit breaker, a database known to be down fails checkouts at once
/// (the one already waiting too), without a connect attempt per checkout; a probe per
/// interval connects, and the first that succeeds closes the breaker.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_fails_checkouts_at_once_until_a_probe_connects() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .min_idle(0)
        .connect_retries(2)
        .acquire_timeout(Duration::from_secs(30))
        .circuit_breaker(3, Duration::from_secs(60))
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    memory.0.down.store(true, Ordering::SeqCst);
    // Three attempts (one and two retries) fail while this checkout waits: the breaker
    // opens and the checkout fails then, not after the 30 s acquire timeout.
    let error = pool.get().await.unwrap_err();
    let Error::Unavailable {
        retry_after,
        last_connect_error,
        target,
    } = &error
    else {
        panic!("expected Unavailable, got {error:?}");
    };
    assert_eq!(&**target, "memory://test");
    assert!(*retry_after <= Duration::from_secs(60));
    assert!(
        error
            .to_string()
            .starts_with("memory://test is unavailable"),
        "{error}"
    );
    assert!(
        last_connect_error
            .to_string()
            .contains("connection refused"),
        "{last_connect_error}"
    );
    assert!(brisk_testkit::error_chain(&error).contains("connection refused"));
    // Attempts already under way when it opened (a retry, the refill task's) finish.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let attempts = memory.0.attempts.load(Ordering::SeqCst);
    assert!(attempts >= 3, "{attempts}");

    for _ in 0..100 {
        let error = pool.get().await.unwrap_err();
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    }
    assert_eq!(
        memory.0.attempts.load(Ordering::SeqCst),
        attempts,
        "no connect attempt per checkout while the breaker is open"
    );
    let snapshot = registry.snapshot();
    let labels = &[("name", "db")];
    assert_eq!(
        snapshot.counter("brisk_pool_rejected_total", labels),
        Some(101)
    );
    assert_eq!(
        snapshot.counter("brisk_pool_circuit_opened_total", labels),
        Some(1)
    );
    assert_eq!(snapshot.gauge("brisk_pool_circuit_state", labels), Some(1));
    assert_eq!(
        snapshot.counter("brisk_pool_acquire_timeouts_total", labels),
        Some(0)
    );

    // A probe per interval: still down, it fails and the breaker stays open.
    tokio::time::sleep(Duration::from_secs(56)).await;
    assert_eq!(memory.0.attempts.load(Ordering::SeqCst), attempts + 1);
    assert!(matches!(pool.get().await, Err(Error::Unavailable { .. })));

    // Back: the next probe connects, closes the breaker, and its connection is handed out.
    memory.0.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(memory.0.attempts.load(Ordering::SeqCst), attempts + 2);
    let connection = pool.get().await.unwrap();
    assert_eq!(connection.id, 0, "the probe's connection");
    drop(connection);
    let snapshot = registry.snapshot();
    assert_eq!(snapshot.gauge("brisk_pool_circuit_state", labels), Some(0));
    assert_eq!(
        memory.0.attempts.load(Ordering::SeqCst),
        attempts + 2,
        "no probe once closed"
    );
}

/// One transient connect failure (or several, each followed by a success) never opens the
/// breaker: it counts failures in a row.
#[tokio::test(start_paused = true)]
async fn the_breaker_never_opens_on_a_single_transient_failure() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .min_idle(0)
        .max_size(1)
        .max_lifetime(Duration::from_secs(1))
        .lifetime_jitter(Duration::ZERO)
        .circuit_breaker(2, Duration::from_secs(60))
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    for round in 0..5 {
        memory.0.fail_next.store(1, Ordering::SeqCst);
        // The first attempt fails, its retry connects.
        let connection = pool
            .get()
            .await
            .unwrap_or_else(|error| panic!("round {round}: {error:?}"));
        drop(connection);
        // The connection expires, so the next round connects again.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        memory.0.attempts.load(Ordering::SeqCst) >= 10,
        "a failure and a success per round"
    );
    let snapshot = registry.snapshot();
    let labels = &[("name", "db")];
    assert_eq!(
        snapshot.counter("brisk_pool_circuit_opened_total", labels),
        Some(0)
    );
    assert_eq!(
        snapshot.counter("brisk_pool_rejected_total", labels),
        Some(0)
    );

    // Two in a row do open it.
    memory.0.fail_next.store(2, Ordering::SeqCst);
    let error = pool.get().await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert_eq!(
        registry
            .snapshot()
            .counter("brisk_pool_circuit_opened_total", labels),
        Some(1)
    );
}

/// A hook that panics on its first call only.
fn panicking_once(
    armed: Arc<AtomicBool>,
) -> impl for<'c> Fn(&'c mut Conn) -> brisk_pool::HookFuture<'c> + Send + Sync + 'static {
    move |_: &mut Conn| {
        let panics = armed.swap(false, Ordering::SeqCst);
        Box::pin(async move {
            assert!(!panics, "on_connect hook panicked on purpose");
            Ok(())
        })
    }
}

/// Review item 3: a panic in the connect hook is a failed connect (its error says the hook
/// panicked), not a task that dies holding bb8's slot: with one slot, the next checkout
/// connects.
#[tokio::test(start_paused = true)]
async fn a_connect_hook_that_panics_fails_that_connect_only() {
    let memory = Memory::default();
    // The warm-up connect's error names the panic.
    let error = builder(&memory)
        .min_idle(1)
        .connect_retries(0)
        .on_connect(panicking_once(Arc::new(AtomicBool::new(true))))
        .build()
        .await
        .unwrap_err();
    let chain = brisk_testkit::error_chain(&error);
    assert!(matches!(error, Error::Connect { .. }), "{chain}");
    assert!(chain.contains("the on_connect hook panicked"), "{chain}");

    let armed = Arc::new(AtomicBool::new(true));
    let pool = builder(&memory)
        .max_size(1)
        .min_idle(0)
        .connect_retries(0)
        .acquire_timeout(Duration::from_secs(5))
        .on_connect(panicking_once(Arc::clone(&armed)))
        .build()
        .await
        .unwrap();
    for _ in 0..2 {
        let connection = pool
            .get()
            .await
            .unwrap_or_else(|error| panic!("{}", brisk_testkit::error_chain(&error)));
        drop(connection);
    }
    assert!(!armed.load(Ordering::SeqCst), "the hook panicked once");
}

/// Review item 3: a probe whose hook panics fails like any probe; the next one closes the
/// breaker.
#[tokio::test(start_paused = true)]
async fn an_open_breaker_recovers_after_a_probe_whose_hook_panicked() {
    let memory = Memory::default();
    let armed = Arc::new(AtomicBool::new(false));
    let pool = builder(&memory)
        .max_size(1)
        .min_idle(0)
        .connect_retries(0)
        .acquire_timeout(Duration::from_secs(5))
        .circuit_breaker(1, Duration::from_millis(50))
        .on_connect(panicking_once(Arc::clone(&armed)))
        .build()
        .await
        .unwrap();
    memory.0.down.store(true, Ordering::SeqCst);
    let error = pool.get().await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    // Once bb8's own connect (which retries until its connect deadline) has given up, only
    // the probes connect; up again, but the next connect's hook panics: a probe's.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(matches!(pool.get().await, Err(Error::Unavailable { .. })));
    armed.store(true, Ordering::SeqCst);
    memory.0.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!armed.load(Ordering::SeqCst), "a probe ran the hook");
    let connection = pool
        .get()
        .await
        .unwrap_or_else(|error| panic!("{}", brisk_testkit::error_chain(&error)));
    drop(connection);
}

/// Review item 8: a checkout woken by the breaker opening, first polled after a probe closed
/// it again, is not told the pool is closed: it goes on waiting and gets a connection.
#[tokio::test(start_paused = true)]
async fn a_checkout_woken_by_a_breaker_that_closed_again_is_not_closed() {
    let memory = Memory::default();
    let registry = Registry::new();
    let pool = builder(&memory)
        .max_size(1)
        .min_idle(0)
        .connect_retries(0)
        .acquire_timeout(Duration::from_secs(5))
        .circuit_breaker(1, Duration::from_millis(50))
        .metrics(&registry, "db")
        .build()
        .await
        .unwrap();
    let state = || {
        registry
            .snapshot()
            .gauge("brisk_pool_circuit_state", &[("name", "db")])
    };
    memory.0.down.store(true, Ordering::SeqCst);
    let mut first = std::pin::pin!(pool.get());
    let mut second = std::pin::pin!(pool.get());
    assert!(futures_poll_once(first.as_mut()).await.is_none());
    assert!(futures_poll_once(second.as_mut()).await.is_none());
    // The connect fails and opens the breaker (waking both checkouts, not polled yet).
    for _ in 0..1000 {
        if state() == Some(1) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(state(), Some(1), "the breaker opened");
    // Back: the probe connects and closes it.
    memory.0.down.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_millis(60)).await;
    for _ in 0..1000 {
        if state() == Some(0) {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(state(), Some(0), "a probe closed the breaker");
    let first = first.await;
    assert!(
        !matches!(first, Err(Error::Closed { .. })),
        "the pool is open: {first:?}"
    );
    // While the first holds the only connection, the second's checkout is not ready.
    let polled = futures_poll_once(second.as_mut()).await;
    assert!(
        !matches!(polled, Some(Err(Error::Closed { .. }))),
        "the pool is open: {polled:?}"
    );
    assert!(polled.is_none(), "{polled:?}");
    drop(first);
    let second = second.await;
    assert!(
        !matches!(second, Err(Error::Closed { .. })),
        "the pool is open: {second:?}"
    );
    assert!(second.is_ok(), "{second:?}");
}
