//! The in-process group: coalescing, shared errors and panics, handover on cancellation, wait
//! timeouts, forget, retention, metrics, and a stress test with random cancellations.

use std::{
    future::Future,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use brisk_dedup::{Error, SingleFlight};
use brisk_metrics::Registry;
use tokio::sync::{Notify, oneshot};

type Group = SingleFlight<String, u64, String>;

/// Counts executions and checks that no two of one key ever overlap.
#[derive(Default)]
struct Probe {
    executions: AtomicUsize,
    running: AtomicUsize,
    overlaps: AtomicUsize,
}

impl Probe {
    async fn work(&self, value: u64, gate: &Notify) -> Result<u64, String> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        if self.running.fetch_add(1, Ordering::SeqCst) != 0 {
            self.overlaps.fetch_add(1, Ordering::SeqCst);
        }
        let _running = Decrement(&self.running);
        gate.notified().await;
        Ok(value)
    }
}

struct Decrement<'a>(&'a AtomicUsize);
impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Polls a future once, so that a test controls exactly who got in first.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_share_one_execution() {
    let registry = Registry::new();
    let group = Arc::new(Group::builder().metrics(&registry, "hot").build().unwrap());
    let executions = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (group, executions, gate) = (group.clone(), executions.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            group
                .run("hot", || async move {
                    executions.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    Ok(7)
                })
                .await
        }));
    }
    // The work finishes only once all other 999 callers have joined it.
    let joined = || {
        registry
            .snapshot()
            .counter("brisk_dedup_coalesced_total", &[("name", "hot")])
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while joined() != Some(999) {
        assert!(
            std::time::Instant::now() < deadline,
            "only {:?} of 999 callers joined in 60 s",
            joined()
        );
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 7);
    }
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    assert_eq!(group.in_flight(), 0);
}

#[tokio::test]
async fn callers_that_join_receive_the_leaders_value_and_distinct_keys_run_apart() {
    let group = Group::new();
    let probe = Probe::default();
    let gate = Notify::new();
    let mut a1 = pin!(group.run("a", || probe.work(1, &gate)));
    let mut a2 = pin!(group.run("a", || probe.work(2, &gate)));
    let mut b = pin!(group.run("b", || probe.work(3, &gate)));
    assert!(poll_once(a1.as_mut()).is_pending());
    assert!(poll_once(a2.as_mut()).is_pending());
    assert!(poll_once(b.as_mut()).is_pending());
    assert_eq!(probe.executions.load(Ordering::SeqCst), 2, "a once, b once");
    assert_eq!(group.in_flight(), 2);
    gate.notify_waiters();
    assert_eq!(a1.await.unwrap(), 1);
    assert_eq!(
        a2.await.unwrap(),
        1,
        "the joiner gets the leader's value, not its own"
    );
    assert_eq!(b.await.unwrap(), 3);
    assert_eq!(group.in_flight(), 0);
}

#[tokio::test]
async fn an_error_reaches_every_caller_of_the_execution() {
    let group = Group::new();
    let (tx, rx) = oneshot::channel::<()>();
    let leader = group.run("k", || async {
        rx.await.unwrap();
        Err::<u64, _>("db down".to_owned())
    });
    let follower = group.run("k", || async { Ok(1) });
    let (leader, follower, ()) = tokio::join!(leader, follower, async { tx.send(()).unwrap() });
    for result in [leader, follower] {
        let error = result.unwrap_err();
        assert_eq!(error.work_error().map(String::as_str), Some("db down"));
        assert_eq!(error.to_string(), r#"the work for key "k" failed: db down"#);
    }
    // Errors are not retained either: the next call runs again.
    assert_eq!(group.run("k", || async { Ok(5) }).await.unwrap(), 5);
}

#[tokio::test]
async fn a_panic_reaches_every_waiter_and_the_group_stays_usable() {
    let group = Group::new();
    let (tx, rx) = oneshot::channel::<()>();
    let leader = group.run("k", || async {
        rx.await.unwrap();
        panic!("boom in the loader");
    });
    let follower = group.run("k", || async { Ok(1) });
    let (leader, follower, ()) = tokio::join!(leader, follower, async { tx.send(()).unwrap() });
    for result in [leader, follower] {
        match result {
            Err(Error::Panicked { key, message }) => {
                assert_eq!(key, r#""k""#);
                assert_eq!(message, "boom in the loader");
            }
            other => panic!("expected a panic error, got {other:?}"),
        }
    }
    assert_eq!(group.in_flight(), 0);
    assert_eq!(group.run("k", || async { Ok(2) }).await.unwrap(), 2);
}

#[tokio::test]
async fn a_panic_while_creating_the_work_is_caught_too() {
    let group = Group::new();
    let result = group
        .run("k", || -> std::future::Ready<Result<u64, String>> {
            panic!("before any future exists")
        })
        .await;
    assert!(matches!(result, Err(Error::Panicked { .. })), "{result:?}");
    assert_eq!(group.in_flight(), 0);
}

#[tokio::test]
async fn a_waiter_takes_over_when_the_leader_is_dropped() {
    let group = Group::new();
    let probe = Probe::default();
    let gate = Notify::new();
    let mut leader = Box::pin(group.run("k", || probe.work(1, &gate)));
    let mut waiter = pin!(group.run("k", || probe.work(2, &gate)));
    assert!(poll_once(leader.as_mut()).is_pending());
    assert!(poll_once(waiter.as_mut()).is_pending());
    drop(leader);
    assert_eq!(
        probe.running.load(Ordering::SeqCst),
        0,
        "the work went with its caller"
    );
    // The waiter runs its own work now.
    assert!(poll_once(waiter.as_mut()).is_pending());
    assert_eq!(probe.executions.load(Ordering::SeqCst), 2);
    gate.notify_waiters();
    assert_eq!(waiter.await.unwrap(), 2);
    assert_eq!(probe.overlaps.load(Ordering::SeqCst), 0);
    assert_eq!(group.in_flight(), 0);
}

#[tokio::test]
async fn a_dropped_leader_with_nobody_waiting_leaves_nothing_behind() {
    let group = Group::new();
    let gate = Notify::new();
    let probe = Probe::default();
    let mut leader = Box::pin(group.run("k", || probe.work(1, &gate)));
    assert!(poll_once(leader.as_mut()).is_pending());
    assert_eq!(group.in_flight(), 1);
    drop(leader);
    assert_eq!(group.in_flight(), 0);
}

#[tokio::test]
async fn an_orphan_abandoned_by_its_last_waiter_is_removed() {
    let group = Group::new();
    let gate = Notify::new();
    let probe = Probe::default();
    let mut leader = Box::pin(group.run("k", || probe.work(1, &gate)));
    let mut waiter = Box::pin(group.run("k", || probe.work(2, &gate)));
    assert!(poll_once(leader.as_mut()).is_pending());
    assert!(poll_once(waiter.as_mut()).is_pending());
    drop(leader); // orphaned: the waiter would take over on its next poll...
    drop(waiter); // ...but it is dropped first
    assert_eq!(group.in_flight(), 0);
    assert_eq!(probe.executions.load(Ordering::SeqCst), 1);
}

/// Issue 30 item 4: a waiter that took over and is then dropped itself must remove the flight;
/// the extra reference the takeover path held made it look like another waiter was left.
#[tokio::test]
async fn a_cancelled_takeover_leader_leaves_nothing_behind() {
    let group = Group::new();
    let gate = Notify::new();
    let probe = Probe::default();
    let mut leader = Box::pin(group.run("k", || probe.work(1, &gate)));
    let mut waiter = Box::pin(group.run("k", || probe.work(2, &gate)));
    assert!(poll_once(leader.as_mut()).is_pending());
    assert!(poll_once(waiter.as_mut()).is_pending());
    drop(leader);
    assert!(poll_once(waiter.as_mut()).is_pending(), "took over");
    assert_eq!(probe.executions.load(Ordering::SeqCst), 2);
    drop(waiter);
    assert_eq!(probe.running.load(Ordering::SeqCst), 0);
    assert_eq!(group.in_flight(), 0);
    assert!(!group.is_in_flight("k"));
    assert_eq!(group.run("k", || async { Ok(3) }).await.unwrap(), 3);
}

/// Holds whoever drops it at a barrier: placed in a waiter's work closure, it keeps two
/// dropping waiters between their guard and the release of their reference to the flight.
struct MeetOnDrop(Arc<std::sync::Barrier>);

impl Drop for MeetOnDrop {
    fn drop(&mut self) {
        self.0.wait();
    }
}

/// Issue 30 item 4: the last two waiters of an orphaned flight, dropped at once on two
/// threads, each saw the other's reference and neither removed the flight.
#[test]
fn two_waiters_dropped_at_once_on_two_threads_leave_nothing_behind() {
    let group = Group::new();
    let gate = Notify::new();
    let probe = Probe::default();
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let waiter = |meet: MeetOnDrop| {
        Box::pin(group.run("k", move || {
            let _meet = &meet;
            std::future::ready(Ok(2))
        }))
    };
    let mut leader = Box::pin(group.run("k", || probe.work(1, &gate)));
    let mut a = waiter(MeetOnDrop(barrier.clone()));
    let mut b = waiter(MeetOnDrop(barrier));
    assert!(poll_once(leader.as_mut()).is_pending());
    assert!(poll_once(a.as_mut()).is_pending());
    assert!(poll_once(b.as_mut()).is_pending());
    drop(leader); // orphaned, with two waiters
    std::thread::scope(|s| {
        s.spawn(move || drop(a));
        s.spawn(move || drop(b));
    });
    assert_eq!(group.in_flight(), 0);
    assert!(!group.is_in_flight("k"));
    assert_eq!(probe.executions.load(Ordering::SeqCst), 1);
}

/// Issue 30 item 9: `Duration::MAX` (or any wait timeout past what `Instant` can hold) means
/// no limit; it panicked computing the deadline.
#[tokio::test]
async fn a_wait_timeout_too_long_for_a_deadline_means_no_limit() {
    for timeout in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let group: Group = SingleFlight::builder()
            .wait_timeout(timeout)
            .build()
            .unwrap();
        let gate = Notify::new();
        let probe = Probe::default();
        let mut leader = pin!(group.run("k", || probe.work(1, &gate)));
        let mut waiter = pin!(group.run("k", || probe.work(2, &gate)));
        assert!(poll_once(leader.as_mut()).is_pending());
        assert!(poll_once(waiter.as_mut()).is_pending());
        gate.notify_waiters();
        assert_eq!(leader.await.unwrap(), 1);
        assert_eq!(waiter.await.unwrap(), 1);
        assert_eq!(group.in_flight(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_times_out_leaves_and_the_work_goes_on_for_the_others() {
    let group: Group = SingleFlight::builder()
        .wait_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let gate = Notify::new();
    let probe = Probe::default();
    let mut leader = pin!(group.run("k", || probe.work(9, &gate)));
    assert!(poll_once(leader.as_mut()).is_pending());
    let impatient = group.run("k", || probe.work(1, &gate));
    match impatient.await {
        Err(Error::WaitTimeout { key, waited }) => {
            assert_eq!(key, r#""k""#);
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
        }
        other => panic!("expected a wait timeout, got {other:?}"),
    }
    let mut patient_late = pin!(group.run("k", || probe.work(2, &gate)));
    assert!(poll_once(patient_late.as_mut()).is_pending());
    gate.notify_waiters();
    assert_eq!(leader.await.unwrap(), 9);
    assert_eq!(patient_late.await.unwrap(), 9);
    assert_eq!(probe.executions.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn forget_starts_a_new_execution_while_old_waiters_keep_the_old_one() {
    let group = Group::new();
    let (old_gate, new_gate) = (Notify::new(), Notify::new());
    let probe = Probe::default();
    let mut old = pin!(group.run("k", || probe.work(1, &old_gate)));
    let mut old_waiter = pin!(group.run("k", || probe.work(0, &old_gate)));
    assert!(poll_once(old.as_mut()).is_pending());
    assert!(poll_once(old_waiter.as_mut()).is_pending());
    assert!(group.forget("k"));
    assert!(!group.forget("absent"));
    let mut new = pin!(group.run("k", || async {
        new_gate.notified().await;
        Ok(2)
    }));
    assert!(poll_once(new.as_mut()).is_pending());
    new_gate.notify_waiters();
    assert_eq!(new.await.unwrap(), 2);
    old_gate.notify_waiters();
    assert_eq!(old.await.unwrap(), 1);
    assert_eq!(old_waiter.await.unwrap(), 1);
    assert_eq!(
        group.in_flight(),
        0,
        "the forgotten leader removed nothing it did not own"
    );
}

#[tokio::test]
async fn is_in_flight_follows_one_key_from_start_to_end() {
    let group = Group::new();
    let gate = Notify::new();
    let probe = Probe::default();
    assert!(!group.is_in_flight("k"));
    let mut running = pin!(group.run("k", || probe.work(1, &gate)));
    assert!(poll_once(running.as_mut()).is_pending());
    assert!(group.is_in_flight("k"));
    assert!(!group.is_in_flight("other"));
    gate.notify_waiters();
    assert_eq!(running.await.unwrap(), 1);
    assert!(!group.is_in_flight("k"));
}

#[tokio::test]
async fn nothing_is_retained_after_completion() {
    let group = Group::new();
    let executions = AtomicUsize::new(0);
    for _ in 0..3 {
        let value = group
            .run("k", || async {
                Ok(executions.fetch_add(1, Ordering::SeqCst) as u64)
            })
            .await;
        assert!(value.is_ok());
        assert_eq!(group.in_flight(), 0);
    }
    assert_eq!(executions.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn metrics_count_executions_coalesced_callers_and_handovers() {
    let registry = Registry::new();
    let group: Group = SingleFlight::builder()
        .metrics(&registry, "users")
        .build()
        .unwrap();
    let gate = Notify::new();
    let probe = Probe::default();
    let mut leader = Box::pin(group.run("k", || probe.work(1, &gate)));
    let mut w1 = pin!(group.run("k", || probe.work(2, &gate)));
    let mut w2 = pin!(group.run("k", || probe.work(3, &gate)));
    assert!(poll_once(leader.as_mut()).is_pending());
    assert!(poll_once(w1.as_mut()).is_pending());
    assert!(poll_once(w2.as_mut()).is_pending());
    drop(leader);
    assert!(poll_once(w1.as_mut()).is_pending());
    assert!(poll_once(w2.as_mut()).is_pending());
    gate.notify_waiters();
    assert_eq!(w1.await.unwrap(), 2);
    assert_eq!(w2.await.unwrap(), 2);
    let _ = group
        .run("p", || async { panic!("counted") as Result<u64, String> })
        .await;

    let snapshot = registry.snapshot();
    let count = |name| snapshot.counter(name, &[("name", "users")]);
    assert_eq!(count("brisk_dedup_executions_total"), Some(3));
    assert_eq!(count("brisk_dedup_coalesced_total"), Some(2));
    assert_eq!(count("brisk_dedup_handovers_total"), Some(1));
    assert_eq!(count("brisk_dedup_panics_total"), Some(1));
    assert_eq!(count("brisk_dedup_wait_timeouts_total"), Some(0));
}

/// Many tasks over few keys, with random cancellations and timeouts: every caller that is not
/// cancelled gets a value, no key ever has two executions at once, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_with_random_cancellations() {
    const TASKS: usize = 4000;
    const KEYS: u64 = 16;
    let group = Arc::new(Group::new());
    let probes: Arc<Vec<Probe>> = Arc::new((0..KEYS).map(|_| Probe::default()).collect());
    let mut tasks = Vec::new();
    let mut uncancelled = 0;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    for i in 0..TASKS {
        // xorshift: a reproducible mix of keys, work lengths and cancellations.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let key = seed % KEYS;
        let work_us = (seed >> 8) % 300;
        let cancel_us = (seed >> 20).is_multiple_of(8).then_some((seed >> 24) % 400);
        uncancelled += usize::from(cancel_us.is_none());
        let (group, probes) = (group.clone(), probes.clone());
        let call = async move {
            let probe = &probes[key as usize];
            group
                .run(&format!("key-{key}"), || async move {
                    probe.executions.fetch_add(1, Ordering::SeqCst);
                    if probe.running.fetch_add(1, Ordering::SeqCst) != 0 {
                        probe.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    let _running = Decrement(&probe.running);
                    tokio::time::sleep(Duration::from_micros(work_us)).await;
                    tokio::task::yield_now().await;
                    Ok(key)
                })
                .await
        };
        tasks.push(tokio::spawn(async move {
            match cancel_us {
                Some(us) => tokio::time::timeout(Duration::from_micros(us), call)
                    .await
                    .ok(),
                None => Some(call.await),
            }
        }));
        if i % 64 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut completed = 0;
    for task in tasks {
        // A hang here is the failure this test exists to catch; nextest ends a slow test.
        if let Some(result) = task.await.unwrap() {
            let value = result.expect("the work never fails");
            assert!(value < KEYS);
            completed += 1;
        }
    }
    // Every caller without a timeout completes (those with one may or may not, as the
    // machine's speed decides), and they are most of them.
    assert!(uncancelled > TASKS / 2, "{uncancelled}");
    assert!(
        completed >= uncancelled,
        "{completed} completed, {uncancelled} had no timeout"
    );
    for (key, probe) in probes.iter().enumerate() {
        assert_eq!(
            probe.overlaps.load(Ordering::SeqCst),
            0,
            "key {key} ran twice at once"
        );
    }
    assert_eq!(group.in_flight(), 0);
}

/// Out-of-range settings are refused by `build()`, naming the setting, never clamped.
#[test]
fn zero_shards_are_refused_not_clamped() {
    match Group::builder().shards(0).build().err() {
        Some(brisk_dedup::Error::Config { setting, value, .. }) => {
            assert_eq!((setting, value.as_str()), ("shards", "0"));
        }
        other => panic!("{other:?}"),
    }
    assert!(Group::builder().shards(1).build().is_ok());
}
