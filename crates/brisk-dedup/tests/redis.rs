//! `RedisFlight` against a real redis-server from brisk-testkit, with independent clients as
//! instances, and a leader process killed mid-work.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_dedup::{
    Error,
    redis::{RedisFlight, RedisStore},
};
use brisk_metrics::Registry;
use brisk_testkit::RedisServer;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::Notify;

type Flight = RedisFlight<MultiplexedConnection, RedisStore<MultiplexedConnection>, String, String>;

/// One "instance": its own client and connection, as another process would have.
async fn instance(url: &str, lease: Duration, registry: &Registry) -> Flight {
    let client = redis::Client::open(url).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    RedisFlight::builder(conn.clone(), RedisStore::new(conn))
        .lease_ttl(lease)
        .poll_interval(Duration::from_millis(1), Duration::from_millis(20))
        .metrics(registry, "test")
        .build()
        .unwrap()
}

/// Waits until a counter reaches `value`: how a test knows that callers have joined.
async fn wait_for(registry: &Registry, name: &str, value: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count(registry, name) < value {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} stayed at {} of {value} for 60 s",
            count(registry, name)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn count(registry: &Registry, name: &str) -> u64 {
    registry
        .snapshot()
        .counter(name, &[("name", "test")])
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_a_redis_run_the_work_once() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let executions = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for i in 0..5 {
        let flight = Arc::new(instance(&server.url(), Duration::from_secs(5), &registry).await);
        // Several callers per instance: they coalesce locally before reaching Redis.
        for _ in 0..10 {
            let (flight, executions, release) =
                (flight.clone(), executions.clone(), release.clone());
            tasks.push(tokio::spawn(async move {
                flight
                    .run("page:/home", || async move {
                        executions.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Ok(format!("rendered by instance {i}"))
                    })
                    .await
            }));
        }
    }
    // Let the work finish once every caller has joined it: 9 per instance locally, and the
    // 4 instances that follow the leader's lease.
    wait_for(&registry, "brisk_dedup_coalesced_total", 49).await;
    release.notify_one();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.unwrap().unwrap());
    }
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    assert!(values.iter().all(|v| v == &values[0]), "{values:?}");
    assert_eq!(count(&registry, "brisk_dedup_executions_total"), 1);
    assert_eq!(count(&registry, "brisk_dedup_remote_results_total"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leaders_error_reaches_other_instances_as_text() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let a = instance(&server.url(), Duration::from_secs(5), &registry).await;
    let b = instance(&server.url(), Duration::from_secs(5), &registry).await;
    let started = Notify::new();
    let finish = Notify::new();
    let leader = a.run("k", || async {
        started.notify_one();
        finish.notified().await;
        Err::<String, _>("db down".to_owned())
    });
    let follower = async {
        started.notified().await;
        b.run("k", || async { Ok("must not run".to_owned()) }).await
    };
    // The leader fails once the follower is watching its lease.
    let fail = async {
        wait_for(&registry, "brisk_dedup_coalesced_total", 1).await;
        finish.notify_one();
    };
    let (leader, follower, ()) = tokio::join!(leader, follower, fail);
    assert_eq!(
        leader.unwrap_err().work_error().map(String::as_str),
        Some("db down")
    );
    match follower {
        Err(Error::Remote { key, message }) => {
            assert_eq!(key, r#""k""#);
            assert_eq!(message, "db down");
        }
        other => panic!("expected the remote error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_extended_while_the_work_outlives_its_ttl() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let a = instance(&server.url(), Duration::from_millis(150), &registry).await;
    let b = instance(&server.url(), Duration::from_millis(150), &registry).await;
    let executions = AtomicUsize::new(0);
    let started = Notify::new();
    let leader = a.run("slow", || async {
        executions.fetch_add(1, Ordering::SeqCst);
        started.notify_one();
        // Four TTLs: without extension another instance would take over.
        tokio::time::sleep(Duration::from_millis(600)).await;
        Ok("slow value".to_owned())
    });
    let follower = async {
        started.notified().await;
        b.run("slow", || async {
            executions.fetch_add(1, Ordering::SeqCst);
            Ok("second execution".to_owned())
        })
        .await
    };
    let (leader, follower) = tokio::join!(leader, follower);
    assert_eq!(leader.unwrap(), "slow value");
    assert_eq!(follower.unwrap(), "slow value");
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    assert_eq!(count(&registry, "brisk_dedup_lease_lost_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
/// Aborting the leader's task drops its future: its lease is released at once (a killed
/// process's lease expires instead: `a_killed_leader_process_is_replaced`).
async fn an_aborted_leader_instance_is_replaced() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let a = Arc::new(instance(&server.url(), Duration::from_millis(200), &registry).await);
    let b = instance(&server.url(), Duration::from_millis(200), &registry).await;
    let started = Arc::new(Notify::new());
    let leader = {
        let (a, started) = (a.clone(), started.clone());
        tokio::spawn(async move {
            a.run("k", || async move {
                started.notify_one();
                std::future::pending::<Result<String, String>>().await
            })
            .await
        })
    };
    started.notified().await;
    let follower =
        tokio::spawn(async move { b.run("k", || async { Ok("taken over".to_owned()) }).await });
    wait_for(&registry, "brisk_dedup_coalesced_total", 1).await;
    leader.abort(); // as a cancelled request would be
    assert_eq!(follower.await.unwrap().unwrap(), "taken over");
    assert_eq!(count(&registry, "brisk_dedup_handovers_total"), 1);
}

/// Kills the child leader even if the test fails half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Not a test on its own: `a_killed_leader_process_is_replaced` runs this in a child process,
/// which takes the lease, says so through Redis, and works until it is killed.
#[tokio::test]
#[ignore = "a child process of a_killed_leader_process_is_replaced"]
async fn leader_process() {
    let url = std::env::var("BRISK_DEDUP_LEADER_URL").expect("run by the parent test");
    let registry = Registry::new();
    let flight = instance(&url, Duration::from_millis(300), &registry).await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _ = flight
        .run("report", || async move {
            let () = redis::cmd("SET")
                .arg("leader:started")
                .arg(std::process::id())
                .query_async(&mut conn)
                .await
                .unwrap();
            std::future::pending::<Result<String, String>>().await
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_process_is_replaced() {
    let server = RedisServer::start().unwrap();
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "leader_process", "--ignored", "--nocapture"])
            .env("BRISK_DEDUP_LEADER_URL", server.url())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let child_pid: u32 = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the child leader did not start in 60 s"
        );
        let pid: Option<u32> = redis::cmd("GET")
            .arg("leader:started")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child leader exited early"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(child_pid, child.id());

    let registry = Registry::new();
    let follower = instance(&server.url(), Duration::from_millis(300), &registry).await;
    let executions = AtomicUsize::new(0);
    let run = follower.run("report", || async {
        executions.fetch_add(1, Ordering::SeqCst);
        Ok("built by the survivor".to_owned())
    });
    let kill = async {
        wait_for(&registry, "brisk_dedup_coalesced_total", 1).await;
        child.kill().unwrap();
        child.wait().unwrap();
    };
    let (value, ()) = tokio::join!(run, kill);
    assert_eq!(value.unwrap(), "built by the survivor");
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    assert_eq!(count(&registry, "brisk_dedup_handovers_total"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_calls_fast_and_they_recover_after_restart() {
    let mut server = RedisServer::start().unwrap();
    let client = redis::Client::open(server.url()).unwrap();
    let conn = ConnectionManager::new(client).await.unwrap();
    let flight: RedisFlight<_, _, String, String> =
        RedisFlight::builder(conn.clone(), RedisStore::new(conn))
            .lease_ttl(Duration::from_millis(500))
            .build()
            .unwrap();
    assert_eq!(
        flight
            .run("k", || async { Ok("before".to_owned()) })
            .await
            .unwrap(),
        "before"
    );
    server.kill();
    let during = tokio::time::timeout(
        Duration::from_secs(30),
        flight.run("k", || async { Ok("during".to_owned()) }),
    )
    .await
    .expect("a call during the outage ends with an error instead of hanging");
    match during {
        Err(Error::Redis { op, .. }) => assert_eq!(op, "acquire lease"),
        other => panic!("expected a redis error, got {other:?}"),
    }
    server.restart().unwrap();
    let mut after = None;
    for _ in 0..200 {
        match flight.run("k", || async { Ok("after".to_owned()) }).await {
            Ok(value) => {
                after = Some(value);
                break;
            }
            // The connection manager reconnects in the background.
            Err(Error::Redis { .. }) => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(other) => panic!("unexpected error after restart: {other:?}"),
        }
    }
    assert_eq!(after.as_deref(), Some("after"));
}

/// Out-of-range settings are refused by `build()`, naming the setting, never clamped.
#[tokio::test]
async fn out_of_range_settings_are_refused_not_clamped() {
    let server = RedisServer::start().unwrap();
    let conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let builder = || {
        RedisFlight::<_, _, String, String>::builder(conn.clone(), RedisStore::new(conn.clone()))
    };
    let ms = Duration::from_millis;
    for (built, setting) in [
        (builder().lease_ttl(ms(2)).build(), "lease_ttl"),
        (
            builder()
                .poll_interval(Duration::from_micros(50), ms(1))
                .build(),
            "poll_interval",
        ),
        (
            builder().poll_interval(ms(5), ms(1)).build(),
            "poll_interval",
        ),
        (builder().redis_timeout(ms(0)).build(), "redis_timeout"),
    ] {
        match built.err() {
            Some(Error::Config { setting: got, .. }) => assert_eq!(got, setting),
            other => panic!("{setting}: {other:?}"),
        }
    }
    assert!(builder().lease_ttl(ms(3)).build().is_ok());
}

/// Redis dies while the leader works: its value still reaches its caller, and the release it
/// could not make is counted (followers would take over when the lease expires).
#[tokio::test]
async fn a_release_that_fails_is_counted_and_the_leader_keeps_its_value() {
    let server = std::sync::Mutex::new(RedisServer::start().unwrap());
    let url = server.lock().unwrap().url();
    let registry = Registry::new();
    let flight = instance(&url, Duration::from_secs(10), &registry).await;
    let value = flight
        .run("report", || async {
            server.lock().unwrap().kill();
            Ok::<_, String>("done".to_owned())
        })
        .await;
    assert_eq!(value.unwrap(), "done");
    assert_eq!(count(&registry, "brisk_dedup_release_failures_total"), 1);
    assert_eq!(count(&registry, "brisk_dedup_executions_total"), 1);
}

type Managed = RedisFlight<ConnectionManager, RedisStore<ConnectionManager>, String, String>;

/// A connection that retries reconnecting every 100 ms for as long as Redis is down, so a
/// command sent during an outage waits until Redis is back: only `redis_timeout` bounds it.
async fn patient_connection(url: &str) -> ConnectionManager {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_min_delay(Duration::from_millis(100))
        .set_max_delay(Duration::from_millis(100))
        .set_number_of_retries(100_000);
    ConnectionManager::new_with_config(redis::Client::open(url).unwrap(), config)
        .await
        .unwrap()
}

/// An instance on a patient connection, reporting to `registry`, with `local_fallback` on
/// or off.
async fn managed(url: &str, registry: &Registry, local_fallback: bool) -> Managed {
    let conn = patient_connection(url).await;
    RedisFlight::builder(conn.clone(), RedisStore::new(conn))
        .lease_ttl(Duration::from_secs(10))
        .poll_interval(Duration::from_millis(1), Duration::from_millis(20))
        .redis_timeout(Duration::from_millis(300))
        .local_fallback(local_fallback)
        .metrics(registry, "test")
        .build()
        .unwrap()
}

/// Calls `flight` until a call runs without falling back, i.e. its connection reaches Redis.
async fn until_redis_serves(flight: &Managed, registry: &Registry) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let before = count(registry, "brisk_dedup_local_fallbacks_total");
        let value = flight
            .run("probe", || async { Ok("probe".to_owned()) })
            .await;
        assert_eq!(value.unwrap(), "probe");
        if count(registry, "brisk_dedup_local_fallbacks_total") == before {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnection in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A connection that waits out an outage would hold every caller until Redis is back;
/// `redis_timeout` turns the wait into `Error::Redis` (a timeout), and the default stays an
/// error rather than a local execution.
#[tokio::test]
async fn redis_timeout_bounds_a_call_that_waits_for_a_reconnection() {
    let mut server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let strict = managed(&server.url(), &registry, false).await;
    assert_eq!(
        strict
            .run("k", || async { Ok("v".to_owned()) })
            .await
            .unwrap(),
        "v"
    );
    server.kill();
    // The first command meets the dropped connection (broken pipe); the next ones wait for
    // the reconnection.
    let first = strict.run("k", || async { Ok("v".to_owned()) }).await;
    assert!(matches!(first, Err(Error::Redis { .. })), "{first:?}");
    let ran = AtomicUsize::new(0);
    let result = strict
        .run("k", || async {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok("v".to_owned())
        })
        .await;
    match result {
        Err(Error::Redis { op, source, .. }) => {
            assert_eq!(op, "acquire lease");
            assert!(source.is_timeout(), "{source}");
        }
        other => panic!("expected a Redis timeout, got {other:?}"),
    }
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "without local_fallback nothing runs"
    );
    assert_eq!(count(&registry, "brisk_dedup_local_fallbacks_total"), 0);
}

/// Redis is killed while instance A leads and instance B's callers follow it. With
/// `local_fallback`, B's callers stop following and run the work once in B; A's callers get
/// A's value; nobody gets an error. Calls made during the outage run locally too, and once
/// Redis is back the instances share executions again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_local_fallback_a_redis_outage_runs_the_work_in_each_process() {
    let mut server = RedisServer::start().unwrap();
    let (registry_a, registry_b) = (Registry::new(), Registry::new());
    let a = Arc::new(managed(&server.url(), &registry_a, true).await);
    let b = Arc::new(managed(&server.url(), &registry_b, true).await);
    let release = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for (name, flight) in [("a", &a), ("b", &b)] {
        for _ in 0..10 {
            let (flight, release) = (Arc::clone(flight), Arc::clone(&release));
            tasks.push(tokio::spawn(async move {
                flight
                    .run("report", || async move {
                        // A's execution waits for the outage; B's, run after it, does not.
                        if name == "a" {
                            release.notified().await;
                        }
                        Ok(format!("from {name}"))
                    })
                    .await
            }));
        }
        // A leads: its callers have joined and its leader holds the lease (it counts the
        // execution once it has) before B's callers start.
        wait_for(&registry_a, "brisk_dedup_coalesced_total", 9).await;
        wait_for(&registry_a, "brisk_dedup_executions_total", 1).await;
    }
    // B's 9 local callers joined B's caller, which follows A's lease.
    wait_for(&registry_b, "brisk_dedup_coalesced_total", 10).await;
    server.kill();
    wait_for(&registry_b, "brisk_dedup_local_fallbacks_total", 1).await;
    release.notify_one();
    let mut values = Vec::new();
    for task in tasks {
        values.push(task.await.unwrap().expect("no caller sees the outage"));
    }
    assert!(values[..10].iter().all(|v| v == "from a"), "{values:?}");
    assert!(values[10..].iter().all(|v| v == "from b"), "{values:?}");
    assert_eq!(count(&registry_a, "brisk_dedup_executions_total"), 1);
    assert_eq!(count(&registry_b, "brisk_dedup_executions_total"), 1);
    assert_eq!(count(&registry_b, "brisk_dedup_local_fallbacks_total"), 1);
    assert_eq!(count(&registry_a, "brisk_dedup_release_failures_total"), 1);

    // A call while Redis is down runs here, without an error.
    let during = a.run("other", || async { Ok("during".to_owned()) }).await;
    assert_eq!(during.unwrap(), "during");
    assert_eq!(count(&registry_a, "brisk_dedup_local_fallbacks_total"), 1);

    // Back: once both connections have reconnected, A and B share one execution again.
    server.restart().unwrap();
    until_redis_serves(&a, &registry_a).await;
    until_redis_serves(&b, &registry_b).await;
    let started = count(&registry_a, "brisk_dedup_executions_total");
    let release = Arc::new(Notify::new());
    let leader = tokio::spawn({
        let (a, release) = (Arc::clone(&a), Arc::clone(&release));
        async move {
            a.run("after", || async move {
                release.notified().await;
                Ok("shared".to_owned())
            })
            .await
        }
    });
    wait_for(&registry_a, "brisk_dedup_executions_total", started + 1).await;
    let follower = tokio::spawn({
        let b = Arc::clone(&b);
        async move {
            b.run("after", || async { Ok("not shared".to_owned()) })
                .await
        }
    });
    wait_for(&registry_b, "brisk_dedup_coalesced_total", 11).await;
    release.notify_one();
    assert_eq!(leader.await.unwrap().unwrap(), "shared");
    assert_eq!(follower.await.unwrap().unwrap(), "shared");
}

/// Waits until `flight`'s subscription is live.
async fn until_subscribed<C, S>(flight: &RedisFlight<C, S, String, String>)
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync,
    S: brisk_dedup::redis::ResultStore<String>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !flight.is_subscribed() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not subscribed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A follower that polls only every 30 s gets the leader's value as soon as the leader
/// releases, because the release is published; after Redis restarts, the subscription comes
/// back and wakes followers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribed_followers_are_woken_by_the_release_not_their_next_poll() {
    let mut server = RedisServer::start().unwrap();
    let (registry_a, registry_b) = (Registry::new(), Registry::new());
    let mut a = Arc::new(instance(&server.url(), Duration::from_secs(60), &registry_a).await);
    let b = {
        let conn = patient_connection(&server.url()).await;
        Arc::new(
            RedisFlight::builder(conn.clone(), RedisStore::new(conn))
                .poll_interval(Duration::from_secs(30), Duration::from_secs(30))
                .subscribe(redis::Client::open(server.url()).unwrap())
                .metrics(&registry_b, "test")
                .build()
                .unwrap(),
        )
    };
    assert!(
        !b.is_subscribed(),
        "the subscription starts with the first follower"
    );

    for round in 0..2 {
        let key = format!("report-{round}");
        let b_ran_before = count(&registry_b, "brisk_dedup_executions_total");
        let release = Arc::new(Notify::new());
        let leader = tokio::spawn({
            let (a, release, key) = (Arc::clone(&a), Arc::clone(&release), key.clone());
            async move {
                a.run(&key, || async move {
                    release.notified().await;
                    Ok(format!("from a, round {round}"))
                })
                .await
            }
        });
        wait_for(&registry_a, "brisk_dedup_executions_total", round + 1).await;
        let follower = tokio::spawn({
            let (b, key) = (Arc::clone(&b), key.clone());
            async move { b.run(&key, || async { Ok("from b".to_owned()) }).await }
        });
        wait_for(&registry_b, "brisk_dedup_coalesced_total", round + 1).await;
        until_subscribed(&b).await;
        release.notify_one();
        assert_eq!(
            leader.await.unwrap().unwrap(),
            format!("from a, round {round}")
        );
        // Its next poll is 30 s away: only the published release can wake it before then.
        let followed = tokio::time::timeout(Duration::from_secs(20), follower)
            .await
            .expect("the follower was woken by the release")
            .unwrap();
        assert_eq!(followed.unwrap(), format!("from a, round {round}"));
        assert_eq!(
            count(&registry_b, "brisk_dedup_executions_total"),
            b_ran_before,
            "B ran nothing"
        );

        if round == 0 {
            // Redis restarts: the subscription drops and is made again.
            server.kill();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while b.is_subscribed() {
                assert!(tokio::time::Instant::now() < deadline, "still subscribed");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server.restart().unwrap();
            // A's plain multiplexed connection does not reconnect: A gets a new one. B's
            // reconnects on its own; once a call of B's succeeds, it is back.
            a = Arc::new(instance(&server.url(), Duration::from_secs(60), &registry_a).await);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while b
                .run("probe", || async { Ok(String::new()) })
                .await
                .is_err()
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "B did not reconnect"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
}

/// A second connection, as another process (or an eviction, or a failover) would touch Redis.
async fn other_connection(url: &str) -> MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Issue 30 item 1: the lease key deleted while the leader works. The leader finishes its work
/// and answers its own callers (it and a local waiter); the loss is counted; nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_is_deleted_finishes_and_answers_its_callers() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let a = instance(&server.url(), Duration::from_millis(150), &registry).await;
    let mut other = other_connection(&server.url()).await;
    let finish = Notify::new();
    let executions = AtomicUsize::new(0);
    let leader = a.run("k", || async {
        executions.fetch_add(1, Ordering::SeqCst);
        finish.notified().await;
        Ok("finished anyway".to_owned())
    });
    let local_waiter = async {
        wait_for(&registry, "brisk_dedup_lease_lost_total", 1).await;
        a.run("k", || async { Ok("must not run".to_owned()) }).await
    };
    let lose_the_lease = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let deleted: u32 = redis::cmd("DEL")
                .arg("brisk:dedup:{k}:lease")
                .query_async(&mut other)
                .await
                .unwrap();
            if deleted == 1 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no lease in 60 s");
            tokio::task::yield_now().await;
        }
        // The leader learns of it at its next extension, then finishes.
        wait_for(&registry, "brisk_dedup_lease_lost_total", 1).await;
        wait_for(&registry, "brisk_dedup_coalesced_total", 1).await;
        finish.notify_one();
    };
    let (leader, local_waiter, ()) = tokio::join!(leader, local_waiter, lose_the_lease);
    assert_eq!(leader.unwrap(), "finished anyway");
    assert_eq!(local_waiter.unwrap(), "finished anyway");
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    assert_eq!(count(&registry, "brisk_dedup_lease_lost_total"), 1);
    assert_eq!(count(&registry, "brisk_dedup_panics_total"), 0);
}

/// Issue 30 item 1: the lease taken by another holder while the leader works. The leader
/// finishes and keeps its value; its release leaves the new holder's lease alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_was_taken_leaves_the_new_holders_lease_alone() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let a = instance(&server.url(), Duration::from_millis(150), &registry).await;
    let mut other = other_connection(&server.url()).await;
    let started = Notify::new();
    let finish = Notify::new();
    let leader = a.run("k", || async {
        started.notify_one();
        finish.notified().await;
        Ok("mine".to_owned())
    });
    let take_the_lease = async {
        started.notified().await;
        let () = redis::cmd("SET")
            .arg("brisk:dedup:{k}:lease")
            .arg("another-holder")
            .query_async(&mut other)
            .await
            .unwrap();
        wait_for(&registry, "brisk_dedup_lease_lost_total", 1).await;
        finish.notify_one();
    };
    let (leader, ()) = tokio::join!(leader, take_the_lease);
    assert_eq!(leader.unwrap(), "mine");
    let holder: Option<String> = redis::cmd("GET")
        .arg("brisk:dedup:{k}:lease")
        .query_async(&mut other)
        .await
        .unwrap();
    assert_eq!(holder.as_deref(), Some("another-holder"));
}

/// Waits until nobody holds the lease of `key`. A leaked lease here lives for the test's
/// lease TTL (10 min), so the 60 s bound only turns a leak into a failure instead of a hang.
async fn until_lease_released(conn: &mut MultiplexedConnection, key: &str) {
    let lease = format!("brisk:dedup:{{{key}}}:lease");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&lease)
            .query_async(conn)
            .await
            .unwrap();
        if !exists {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{lease} is still held 60 s after its leader was dropped"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A connection that, when armed, lets its next command run on the server and then never
/// delivers the reply: the caller can be dropped right after Redis acted on its command.
#[derive(Clone)]
struct Stalling {
    inner: MultiplexedConnection,
    armed: Arc<std::sync::atomic::AtomicBool>,
    stalled: Arc<Notify>,
}

impl redis::aio::ConnectionLike for Stalling {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let reply = self.inner.req_packed_command(cmd).await;
            if self.armed.swap(false, Ordering::SeqCst) {
                self.stalled.notify_one();
                std::future::pending::<()>().await;
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.inner.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// A store whose `save` never ends, once armed: the leader can be dropped while saving.
struct StallingStore {
    inner: RedisStore<MultiplexedConnection>,
    armed: Arc<std::sync::atomic::AtomicBool>,
    saving: Arc<Notify>,
}

impl brisk_dedup::redis::ResultStore<String> for StallingStore {
    type Error = redis::RedisError;

    async fn save(&self, key: &str, value: &String) -> Result<(), Self::Error> {
        if self.armed.load(Ordering::SeqCst) {
            self.saving.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.save(key, value).await
    }

    async fn load(&self, key: &str) -> Result<Option<String>, Self::Error> {
        self.inner.load(key).await
    }
}

/// Issue 30 item 5: a leader dropped at each of its await points (its lease acquired on the
/// server but the reply not yet read, in the work, while saving the result) releases its lease
/// at once, so callers elsewhere need not wait out `lease_ttl` (10 min here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_dropped_at_any_await_point_releases_its_lease() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let stall_reply = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stall_save = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (stalled, saving) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let conn = Stalling {
        inner: other_connection(&server.url()).await,
        armed: stall_reply.clone(),
        stalled: stalled.clone(),
    };
    let store = StallingStore {
        inner: RedisStore::new(other_connection(&server.url()).await),
        armed: stall_save.clone(),
        saving: saving.clone(),
    };
    let a = RedisFlight::<_, _, String, String>::builder(conn, store)
        .lease_ttl(Duration::from_secs(600))
        .metrics(&registry, "test")
        .build()
        .unwrap();
    let b = instance(&server.url(), Duration::from_secs(600), &registry).await;
    let mut conn = other_connection(&server.url()).await;
    // Loads the scripts, so that the next command of `a` is the lease's script itself.
    assert_eq!(
        a.run("warm-up", || async { Ok("ok".to_owned()) })
            .await
            .unwrap(),
        "ok"
    );

    for point in ["acquire reply", "work", "save"] {
        let key = format!("dropped-in-{point}");
        let working = Notify::new();
        let run = a.run(&key, || async {
            working.notify_one();
            if point == "work" {
                std::future::pending::<()>().await;
            }
            Ok("never seen".to_owned())
        });
        let reached = async {
            match point {
                "acquire reply" => stalled.notified().await,
                "work" => working.notified().await,
                _ => saving.notified().await,
            }
        };
        stall_reply.store(point == "acquire reply", Ordering::SeqCst);
        stall_save.store(point == "save", Ordering::SeqCst);
        tokio::select! {
            result = run => panic!("{point}: the leader finished: {result:?}"),
            () = reached => {}
        }
        // The leader's future is dropped here, as a cancelled request's would be.
        stall_save.store(false, Ordering::SeqCst);
        until_lease_released(&mut conn, &key).await;
        assert_eq!(a.in_flight(), 0, "{point}");
        assert!(!a.is_in_flight(&key), "{point}");
        assert_eq!(
            b.run(&key, || async { Ok("from b".to_owned()) })
                .await
                .unwrap(),
            "from b",
            "{point}"
        );
    }
}

/// Issue 30 item 9: `Duration::MAX` as the wait timeout (and as the slow end of the poll
/// interval) means no limit; computing a deadline from it panicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_too_long_for_a_deadline_mean_no_limit() {
    let server = RedisServer::start().unwrap();
    let registry = Registry::new();
    let unlimited = || async {
        let conn = other_connection(&server.url()).await;
        RedisFlight::<_, _, String, String>::builder(conn.clone(), RedisStore::new(conn))
            .wait_timeout(Duration::MAX)
            .poll_interval(Duration::from_millis(1), Duration::MAX)
            .metrics(&registry, "test")
            .subscribe(redis::Client::open(server.url()).unwrap())
            .build()
            .unwrap()
    };
    let (a, b) = (unlimited().await, unlimited().await);
    let finish = Notify::new();
    let leader = a.run("k", || async {
        finish.notified().await;
        Ok("v".to_owned())
    });
    let local_waiter = async {
        wait_for(&registry, "brisk_dedup_executions_total", 1).await;
        a.run("k", || async { Ok("must not run".to_owned()) }).await
    };
    let follower = async {
        wait_for(&registry, "brisk_dedup_executions_total", 1).await;
        b.run("k", || async { Ok("must not run".to_owned()) }).await
    };
    let release = async {
        wait_for(&registry, "brisk_dedup_coalesced_total", 2).await;
        until_subscribed(&b).await;
        finish.notify_one();
    };
    let (leader, local_waiter, follower, ()) =
        tokio::join!(leader, local_waiter, follower, release);
    assert_eq!(leader.unwrap(), "v");
    assert_eq!(local_waiter.unwrap(), "v");
    assert_eq!(follower.unwrap(), "v");
}

/// A connection that counts the replies it delivered: how a test knows a caller has read
/// what Redis answered.
#[derive(Clone)]
struct Counting {
    inner: MultiplexedConnection,
    replies: Arc<AtomicUsize>,
}

impl redis::aio::ConnectionLike for Counting {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let reply = self.inner.req_packed_command(cmd).await;
            self.replies.fetch_add(1, Ordering::SeqCst);
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        Box::pin(async move {
            let replies = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.replies.fetch_add(1, Ordering::SeqCst);
            replies
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// Review finding 4: a follower whose next poll lies beyond its wait deadline still listens
/// for the release until the deadline, and observes once more before it gives up. With
/// `poll_interval(_, Duration::MAX)` and a live subscription, every wait is such a last
/// stretch: the follower used to sleep out its whole wait deaf, and fail with `WaitTimeout`
/// although the leader had finished long before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_hears_the_release_in_the_last_stretch_of_its_wait() {
    let server = RedisServer::start().unwrap();
    let (registry_a, registry_b) = (Registry::new(), Registry::new());
    let a = instance(&server.url(), Duration::from_secs(60), &registry_a).await;
    let replies = Arc::new(AtomicUsize::new(0));
    let b = {
        let conn = other_connection(&server.url()).await;
        let counting = Counting {
            inner: conn.clone(),
            replies: Arc::clone(&replies),
        };
        RedisFlight::<_, _, String, String>::builder(counting, RedisStore::new(conn))
            .poll_interval(Duration::from_millis(2), Duration::MAX)
            // Long enough that the release always comes well before it; the follower used to
            // wait all of it and then fail.
            .wait_timeout(Duration::from_secs(10))
            .subscribe(redis::Client::open(server.url()).unwrap())
            .metrics(&registry_b, "test")
            .build()
            .unwrap()
    };

    for (round, key) in ["warm-up", "k"].into_iter().enumerate() {
        let round = round as u64;
        let before = replies.load(Ordering::SeqCst);
        let finish = Notify::new();
        let leader = a.run(key, || async {
            finish.notified().await;
            Ok(format!("{key} from a"))
        });
        let follower = async {
            wait_for(&registry_a, "brisk_dedup_executions_total", round + 1).await;
            b.run(key, || async { Ok("from b".to_owned()) }).await
        };
        let release = async {
            wait_for(&registry_b, "brisk_dedup_coalesced_total", round + 1).await;
            // The first follower starts the subscription; in the second round it is live
            // before B looks at the lease, so B's first wait is already its last stretch.
            until_subscribed(&b).await;
            if round == 1 {
                // B has read the answers to its acquire and its observe: it is waiting.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while replies.load(Ordering::SeqCst) < before + 2 {
                    assert!(tokio::time::Instant::now() < deadline, "B never observed");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            finish.notify_one();
        };
        let (leader, follower, ()) = tokio::join!(leader, follower, release);
        assert_eq!(leader.unwrap(), format!("{key} from a"));
        match follower {
            Ok(value) => assert_eq!(value, format!("{key} from a")),
            Err(error) => panic!("the follower did not get the leader's value: {error:?}"),
        }
    }
    assert_eq!(count(&registry_b, "brisk_dedup_executions_total"), 0);
    assert_eq!(count(&registry_b, "brisk_dedup_wait_timeouts_total"), 0);
}

/// The other side of finding 4: a follower that listens until its deadline and looks once
/// more still gives up then, with `WaitTimeout`, even when its next poll would be decades
/// away, whether or not its subscription is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_a_leader_that_does_not_finish_gives_up_at_its_wait_timeout() {
    let server = RedisServer::start().unwrap();
    let (registry_a, registry_b) = (Registry::new(), Registry::new());
    let a = instance(&server.url(), Duration::from_secs(60), &registry_a).await;
    let timeout = Duration::from_millis(300);
    let b = {
        let conn = other_connection(&server.url()).await;
        RedisFlight::<_, _, String, String>::builder(conn.clone(), RedisStore::new(conn))
            .poll_interval(Duration::from_millis(2), Duration::MAX)
            .wait_timeout(timeout)
            .subscribe(redis::Client::open(server.url()).unwrap())
            .metrics(&registry_b, "test")
            .build()
            .unwrap()
    };
    let finish = Notify::new();
    let leader = a.run("k", || async {
        finish.notified().await;
        Ok("from a".to_owned())
    });
    let followers = async {
        wait_for(&registry_a, "brisk_dedup_executions_total", 1).await;
        let mut outcomes = Vec::new();
        // The first waits while the subscription comes up, the second with it live.
        for _ in 0..2 {
            outcomes.push(b.run("k", || async { Ok("from b".to_owned()) }).await);
            until_subscribed(&b).await;
        }
        finish.notify_one();
        outcomes
    };
    let (leader, outcomes) = tokio::join!(leader, followers);
    assert_eq!(leader.unwrap(), "from a");
    for outcome in outcomes {
        match outcome {
            Err(Error::WaitTimeout { waited, .. }) => assert!(waited >= timeout, "{waited:?}"),
            other => panic!("expected WaitTimeout, got {other:?}"),
        }
    }
    assert_eq!(count(&registry_b, "brisk_dedup_wait_timeouts_total"), 2);
    assert_eq!(count(&registry_b, "brisk_dedup_executions_total"), 0);
}
