//! The fault harness shared by the PostgreSQL and Redis tests.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

/// Concurrent tasks sending requests while the server goes down and comes back.
const TASKS: usize = 16;
/// Requests that must succeed after the restart before the test ends.
const AFTER_RESTART: usize = 2000;

/// Runs `request` (given its task's index) in a loop from 16 tasks while `outage` (which
/// blocks: it kills the server, waits, restarts it and hands it back) runs on a blocking
/// thread. Requires that no request hangs (a guard far above any acquire timeout, not a
/// performance assertion) and that every request started after the restart succeeds.
/// Returns the server and the number of requests that failed during the outage.
pub(crate) async fn load_through_restart<S, R, Fut>(
    request: R,
    outage: impl FnOnce() -> S + Send + 'static,
) -> (S, usize)
where
    S: Send + 'static,
    R: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let after_restart = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let ok_after_restart = Arc::new(AtomicUsize::new(0));
    let failed_during_outage = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let request = request.clone();
        let (after_restart, stop) = (Arc::clone(&after_restart), Arc::clone(&stop));
        let (ok_after, failed) = (
            Arc::clone(&ok_after_restart),
            Arc::clone(&failed_during_outage),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let started_after_restart = after_restart.load(Ordering::SeqCst);
                let outcome = tokio::time::timeout(Duration::from_secs(10), request(task))
                    .await
                    .expect("a request hung far past the acquire timeout");
                match outcome {
                    Ok(()) if started_after_restart => {
                        ok_after.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(()) => {}
                    Err(error) if started_after_restart => {
                        panic!("failed after the restart: {error}")
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    let server = tokio::task::spawn_blocking(outage).await.unwrap();
    after_restart.store(true, Ordering::SeqCst);
    while ok_after_restart.load(Ordering::SeqCst) < AFTER_RESTART {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
    (server, failed_during_outage.load(Ordering::SeqCst))
}
