//! Bounded parallelism: never more than the limit in flight, order kept where promised, and
//! the first error ends the work and cancels what was still running.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_stream::{Error, Parallel};
use futures_util::{StreamExt, stream};
use tokio::task::JoinError;

/// Counts jobs started, running at once (and the most ever), finished, and dropped.
#[derive(Default)]
struct Jobs {
    started: AtomicUsize,
    running: AtomicUsize,
    most: AtomicUsize,
    finished: AtomicUsize,
    dropped: AtomicUsize,
}

/// Held by a job while it runs: its drop counts even when the job is cancelled.
struct Running(Arc<Jobs>);

impl Running {
    fn start(jobs: &Arc<Jobs>) -> Self {
        jobs.started.fetch_add(1, Ordering::SeqCst);
        let now = jobs.running.fetch_add(1, Ordering::SeqCst) + 1;
        jobs.most.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(jobs))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
        self.0.dropped.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, PartialEq)]
enum JobError {
    Failed(u64),
    Panicked,
}

impl From<JoinError> for JobError {
    fn from(error: JoinError) -> Self {
        assert!(error.is_panic(), "only a panic reaches the caller: {error}");
        Self::Panicked
    }
}

/// Job `n`: takes longer the smaller `n` is, so jobs finish out of input order; fails when
/// `n == fail`; never finishes when `n >= forever`.
async fn job(jobs: Arc<Jobs>, n: u64, fail: u64, forever: u64) -> Result<u64, JobError> {
    let _running = Running::start(&jobs);
    if n == fail {
        tokio::time::sleep(Duration::from_millis(5)).await;
        return Err(JobError::Failed(n));
    }
    if n >= forever {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(Duration::from_millis(100 - n)).await;
    jobs.finished.fetch_add(1, Ordering::SeqCst);
    Ok(n * 10)
}

fn parallel(limit: usize) -> Parallel {
    Parallel::builder().limit(limit).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn map_keeps_input_order_with_at_most_limit_in_flight() {
    let jobs = Arc::new(Jobs::default());
    let results: Vec<_> = parallel(4)
        .map(stream::iter(0..40), |n| {
            job(jobs.clone(), n, u64::MAX, u64::MAX)
        })
        .collect()
        .await;
    assert_eq!(results, (0..40).map(|n| Ok(n * 10)).collect::<Vec<_>>());
    assert_eq!(jobs.most.load(Ordering::SeqCst), 4);
    assert_eq!(jobs.finished.load(Ordering::SeqCst), 40);
}

#[tokio::test(start_paused = true)]
async fn map_unordered_yields_as_jobs_finish() {
    let jobs = Arc::new(Jobs::default());
    let results: Vec<u64> = parallel(3)
        .map_unordered(stream::iter(0..3), |n| {
            job(jobs.clone(), n, u64::MAX, u64::MAX)
        })
        .map(Result::unwrap)
        .collect()
        .await;
    // Job 2 sleeps least.
    assert_eq!(results, [20, 10, 0]);
}

#[tokio::test(start_paused = true)]
async fn the_first_error_ends_the_stream_and_cancels_the_jobs_in_flight() {
    for unordered in [false, true] {
        let jobs = Arc::new(Jobs::default());
        let source = stream::iter(0..1000);
        let work = |n| job(jobs.clone(), n, 2, 3);
        let results: Vec<_> = if unordered {
            parallel(5).map_unordered(source, work).collect().await
        } else {
            parallel(5).map(source, work).collect().await
        };
        // Jobs 0 and 1 would finish after job 2 fails: even in input order, the error is
        // what comes first, at once.
        assert_eq!(
            results,
            [Err(JobError::Failed(2))],
            "unordered: {unordered}"
        );
        // Five started (the limit); none started after the error; all of them were dropped.
        assert_eq!(
            jobs.started.load(Ordering::SeqCst),
            5,
            "unordered: {unordered}"
        );
        assert_eq!(jobs.dropped.load(Ordering::SeqCst), 5);
        assert_eq!(jobs.running.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn try_join_all_returns_results_in_order_or_the_first_error() {
    let jobs = Arc::new(Jobs::default());
    let calls = (0..20).map(|n| job(jobs.clone(), n, u64::MAX, u64::MAX));
    assert_eq!(
        parallel(6).try_join_all(calls).await,
        Ok((0..20).map(|n| n * 10).collect())
    );
    assert_eq!(jobs.most.load(Ordering::SeqCst), 6);

    let jobs = Arc::new(Jobs::default());
    let calls = (0..20).map(|n| job(jobs.clone(), n, 4, 5));
    assert_eq!(
        parallel(6).try_join_all(calls).await,
        Err(JobError::Failed(4))
    );
    assert_eq!(jobs.started.load(Ordering::SeqCst), 6);
    assert_eq!(
        jobs.running.load(Ordering::SeqCst),
        0,
        "the calls in flight were cancelled"
    );
}

#[tokio::test(start_paused = true)]
async fn join_all_runs_every_call() {
    let jobs = Arc::new(Jobs::default());
    let calls = (0..10).map(|n| job(jobs.clone(), n, 3, u64::MAX));
    let outputs = parallel(2).join_all(calls).await;
    assert_eq!(outputs.len(), 10);
    assert_eq!(outputs[3], Err(JobError::Failed(3)));
    assert_eq!(outputs[9], Ok(90));
    assert_eq!(jobs.most.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_jobs_run_on_tasks_and_are_aborted_when_the_work_ends() {
    // A panicking job becomes an error, and the jobs still in flight are aborted.
    let jobs = Arc::new(Jobs::default());
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let results: Vec<_> = parallel(3)
        .spawn_map(stream::iter(0..100_u64), |n| {
            let jobs = jobs.clone();
            let sender = sender.clone();
            async move {
                let _running = Running::start(&jobs);
                let _ = sender.send(n);
                if n == 1 {
                    // Wait until all three have started, then fail.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                    while jobs.started.load(Ordering::SeqCst) < 3 {
                        assert!(
                            std::time::Instant::now() < deadline,
                            "the three jobs did not all start in 60 s"
                        );
                        tokio::task::yield_now().await;
                    }
                    panic!("job 1 panicked");
                }
                std::future::pending::<()>().await;
                Ok::<u64, JobError>(n)
            }
        })
        .collect()
        .await;
    drop(receiver);
    assert_eq!(results, [Err(JobError::Panicked)]);
    // Aborted tasks drop their futures on their own workers: wait for the count to settle.
    tokio::time::timeout(Duration::from_secs(30), async {
        while jobs.running.load(Ordering::SeqCst) > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the aborted jobs were dropped");
    assert_eq!(jobs.started.load(Ordering::SeqCst), 3);
    assert_eq!(jobs.dropped.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_jobs_keep_input_order() {
    let results: Vec<_> = parallel(8)
        .spawn_map(stream::iter(0..200_u64), |n| async move {
            tokio::task::yield_now().await;
            Ok::<_, JobError>(n * 2)
        })
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(results, (0..200).map(|n| n * 2).collect::<Vec<_>>());
    let mut unordered: Vec<_> = parallel(8)
        .spawn_map_unordered(
            stream::iter(0..200_u64),
            |n| async move { Ok::<_, JobError>(n) },
        )
        .map(Result::unwrap)
        .collect()
        .await;
    unordered.sort_unstable();
    assert_eq!(unordered, (0..200).collect::<Vec<_>>());
}

#[test]
fn a_limit_of_zero_is_refused() {
    assert!(matches!(
        Parallel::builder().limit(0).build(),
        Err(Error::Config {
            setting: "limit",
            ..
        })
    ));
    assert_eq!(Parallel::default().limit(), 16);
}
