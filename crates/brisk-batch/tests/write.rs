//! WriteBatcher: batching by size and delay, backpressure, flush, shutdown, retries, faults.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_batch::{BatchWrite, Error, Retry, WriteBatcher};
use brisk_metrics::Registry;
use tokio::{sync::Semaphore, time::Instant};

/// Records every batch it writes; each item's output is the item times ten. Item 666 panics,
/// item 777 makes the batch return one output too few.
struct Sink {
    batches: Mutex<Vec<Vec<u64>>>,
    attempts: AtomicUsize,
    /// Fail this many of the next attempts.
    fail_next: AtomicUsize,
    /// Whether those failures may be retried.
    retryable: bool,
    /// Each write takes a permit: with none, writes wait.
    gate: Arc<Semaphore>,
}

impl Sink {
    fn new() -> Self {
        Self::gated(Semaphore::MAX_PERMITS)
    }

    fn gated(permits: usize) -> Self {
        Self {
            batches: Mutex::new(Vec::new()),
            attempts: AtomicUsize::new(0),
            fail_next: AtomicUsize::new(0),
            retryable: true,
            gate: Arc::new(Semaphore::new(permits)),
        }
    }

    fn batches(&self) -> Vec<Vec<u64>> {
        self.batches.lock().unwrap().clone()
    }

    fn written(&self) -> Vec<u64> {
        let mut items: Vec<u64> = self.batches().concat();
        items.sort_unstable();
        items
    }
}

impl BatchWrite for Sink {
    type Item = u64;
    type Output = u64;
    type Error = String;

    async fn write(&self, items: &[u64]) -> Result<Vec<u64>, String> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await.unwrap();
        assert!(!items.contains(&666), "the write function hit item 666");
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(format!("connection reset writing {} items", items.len()));
        }
        self.batches.lock().unwrap().push(items.to_vec());
        let mut outputs: Vec<u64> = items.iter().map(|item| item * 10).collect();
        if items.contains(&777) {
            outputs.pop();
        }
        Ok(outputs)
    }

    fn is_retryable(&self, _: &String) -> bool {
        self.retryable
    }
}

/// Submits each item from its own task.
fn submit_all(
    batcher: &WriteBatcher<Sink>,
    items: impl IntoIterator<Item = u64>,
) -> Vec<tokio::task::JoinHandle<Result<u64, Error<String>>>> {
    items
        .into_iter()
        .map(|item| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(item).await })
        })
        .collect()
}

async fn outputs(
    tasks: Vec<tokio::task::JoinHandle<Result<u64, Error<String>>>>,
) -> Vec<Result<u64, Error<String>>> {
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(start_paused = true)]
async fn items_submitted_together_are_written_in_one_batch_with_their_own_outputs() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_delay(Duration::from_millis(50))
        .build()
        .unwrap();
    let results = outputs(submit_all(&batcher, 1..=10)).await;
    let results: Vec<u64> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(results, (1..=10).map(|i| i * 10).collect::<Vec<_>>());
    assert_eq!(batcher.write_fn().batches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_is_written_without_waiting_for_the_delay() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_batch_size(3)
        .max_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let start = Instant::now();
    let results = outputs(submit_all(&batcher, [1, 2, 3])).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(batcher.write_fn().batches(), [vec![1, 2, 3]]);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_is_written_after_the_max_delay() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let start = Instant::now();
    assert_eq!(batcher.submit(4).await.unwrap(), 40);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_holds_submitters_back() {
    let registry = Registry::new();
    // Writes are blocked until the gate opens.
    let batcher = WriteBatcher::builder(Sink::gated(0))
        .max_batch_size(2)
        .queue_capacity(4)
        .max_delay(Duration::from_millis(1))
        .metrics(&registry, "events")
        .build()
        .unwrap();
    let tasks = submit_all(&batcher, 0..20);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = registry
        .snapshot()
        .counter("brisk_batch_write_items_total", &[("name", "events")]);
    // One batch being written, one waiting for its turn, four in the queue; 12 submitters wait.
    assert_eq!(queued, Some(8));
    batcher
        .write_fn()
        .gate
        .add_permits(Semaphore::MAX_PERMITS / 2);
    let results = outputs(tasks).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(batcher.write_fn().written(), (0..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn flush_writes_what_is_queued_now() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let tasks = submit_all(&batcher, [1, 2, 3]);
    tokio::task::yield_now().await;
    let start = Instant::now();
    batcher.flush().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(batcher.write_fn().written(), [1, 2, 3]);
    assert!(outputs(tasks).await.iter().all(Result::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_everything_queued_then_refuses_new_items() {
    let registry = Registry::new();
    let batcher = WriteBatcher::builder(Sink::new())
        .max_delay(Duration::from_secs(3600))
        .metrics(&registry, "events")
        .build()
        .unwrap();
    let tasks = submit_all(&batcher, 0..250);
    // Wait until all 250 are queued (two full batches are written, 50 wait for the delay); a
    // submit that has not been queued when the shutdown is would rightly be refused.
    let queued = || {
        registry
            .snapshot()
            .counter("brisk_batch_write_items_total", &[("name", "events")])
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while queued() < Some(250) {
        assert!(
            std::time::Instant::now() < deadline,
            "the 250 items were not all queued in 60 s"
        );
        tokio::task::yield_now().await;
    }
    batcher.shutdown().await;
    assert_eq!(batcher.write_fn().written(), (0..250).collect::<Vec<_>>());
    assert!(outputs(tasks).await.iter().all(Result::is_ok));
    assert!(matches!(batcher.submit(1).await, Err(Error::Closed)));
    batcher.shutdown().await;
    batcher.flush().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_handle_still_writes_everything_queued() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    let sink_batches = {
        let tasks = submit_all(&batcher, 0..5);
        tokio::task::yield_now().await;
        // Keep a view of what is written, then drop every handle but the submitters'.
        let view = batcher.clone();
        drop(batcher);
        let results = outputs(tasks).await;
        assert!(results.iter().all(Result::is_ok));
        view.write_fn().written()
    };
    assert_eq!(sink_batches, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_is_reported_to_every_submitter() {
    let sink = Sink::new();
    sink.fail_next.store(1, Ordering::SeqCst);
    let batcher = WriteBatcher::builder(sink)
        .max_batch_size(3)
        .build()
        .unwrap();
    for result in outputs(submit_all(&batcher, [1, 2, 3])).await {
        let error = result.unwrap_err();
        assert!(matches!(&error, Error::Batch { size: 3, .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the batch function failed for a batch of 3: connection reset writing 3 items"
        );
    }
    assert_eq!(
        batcher.submit(4).await.unwrap(),
        40,
        "the next batch is written"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_is_retried_with_backoff_per_the_policy() {
    let registry = Registry::new();
    let sink = Sink::new();
    sink.fail_next.store(2, Ordering::SeqCst);
    let batcher = WriteBatcher::builder(sink)
        .max_batch_size(2)
        .retry(Retry::times(3).backoff(Duration::from_millis(10), Duration::from_secs(1)))
        .metrics(&registry, "events")
        .build()
        .unwrap();
    let start = Instant::now();
    let results = outputs(submit_all(&batcher, [1, 2])).await;
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        [10, 20]
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(30),
        "waited 10 ms, then 20 ms"
    );
    assert_eq!(batcher.write_fn().attempts.load(Ordering::SeqCst), 3);
    let snapshot = registry.snapshot();
    let counter = |name| snapshot.counter(name, &[("name", "events")]);
    assert_eq!(counter("brisk_batch_write_retries_total"), Some(2));
    assert_eq!(counter("brisk_batch_writes_total"), Some(3));
    assert_eq!(counter("brisk_batch_write_failures_total"), Some(0));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_limit_and_report_the_error() {
    let sink = Sink::new();
    sink.fail_next.store(10, Ordering::SeqCst);
    let batcher = WriteBatcher::builder(sink)
        .retry(Retry::times(2))
        .build()
        .unwrap();
    assert!(matches!(batcher.submit(1).await, Err(Error::Batch { .. })));
    assert_eq!(batcher.write_fn().attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn errors_that_are_not_retryable_are_reported_at_once() {
    let mut sink = Sink::new();
    sink.fail_next.store(1, Ordering::SeqCst);
    sink.retryable = false;
    let batcher = WriteBatcher::builder(sink)
        .retry(Retry::times(5))
        .build()
        .unwrap();
    assert!(matches!(batcher.submit(1).await, Err(Error::Batch { .. })));
    assert_eq!(batcher.write_fn().attempts.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_number_of_outputs_fails_the_batch() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_batch_size(2)
        .build()
        .unwrap();
    for result in outputs(submit_all(&batcher, [1, 777])).await {
        assert!(matches!(
            result,
            Err(Error::OutputCount {
                expected: 2,
                got: 1
            })
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_write_reaches_its_submitters_and_the_batcher_goes_on() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_batch_size(2)
        .build()
        .unwrap();
    for result in outputs(submit_all(&batcher, [1, 666])).await {
        assert!(
            matches!(&result, Err(Error::Panicked { size: 2, message }) if message.contains("666")),
            "{result:?}"
        );
    }
    assert_eq!(batcher.submit(3).await.unwrap(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_submitter_that_gives_up_does_not_withdraw_its_item() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_delay(Duration::from_millis(100))
        .build()
        .unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(10), batcher.submit(9)).await;
    assert!(gave_up.is_err());
    batcher.flush().await;
    assert_eq!(batcher.write_fn().written(), [9]);
}

#[tokio::test(start_paused = true)]
async fn one_write_at_a_time_keeps_submission_order() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_batch_size(3)
        .build()
        .unwrap();
    for item in 0..10 {
        // Submitted in order, each queued before the next (the result is not awaited here).
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.submit(item).await });
        tokio::task::yield_now().await;
    }
    batcher.flush().await;
    assert_eq!(
        batcher.write_fn().batches().concat(),
        (0..10).collect::<Vec<_>>()
    );
}

/// Many tasks submitting concurrently on two threads: every item is written exactly once and
/// every submitter gets its own item's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_every_item_is_written_once_with_its_own_output() {
    let batcher = WriteBatcher::builder(Sink::new())
        .max_batch_size(64)
        .queue_capacity(128)
        .max_concurrent_writes(4)
        .max_delay(Duration::from_millis(1))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for task in 0..50u64 {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..100u64 {
                let item = task * 1000 + round;
                assert_eq!(batcher.submit(item).await.unwrap(), item * 10);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    batcher.shutdown().await;
    let mut expected: Vec<u64> = (0..50)
        .flat_map(|task| (0..100).map(move |round| task * 1000 + round))
        .collect();
    expected.sort_unstable();
    assert_eq!(batcher.write_fn().written(), expected);
    assert!(batcher.write_fn().batches().iter().all(|b| b.len() <= 64));
}

#[tokio::test]
async fn enqueued_items_are_written_without_their_submitter_waiting() {
    let sink = Arc::new(Sink::gated(0));
    let batcher = WriteBatcher::builder(ArcSink(Arc::clone(&sink)))
        .max_batch_size(10)
        .build()
        .unwrap();
    // The writes are held at the gate, yet every enqueue returns.
    for item in 0..25 {
        batcher.enqueue(item).await.unwrap();
    }
    assert!(sink.written().is_empty());
    sink.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    batcher.shutdown().await;
    assert_eq!(sink.written(), (0..25).collect::<Vec<_>>());
    assert!(matches!(batcher.enqueue(99).await, Err(Error::Closed)));
}

/// A shared `Sink`, so the test can watch what the batcher writes.
struct ArcSink(Arc<Sink>);

impl BatchWrite for ArcSink {
    type Item = u64;
    type Output = u64;
    type Error = String;

    async fn write(&self, items: &[u64]) -> Result<Vec<u64>, String> {
        self.0.write(items).await
    }
}

/// Out-of-range settings are refused by `build()`, naming the setting, never clamped.
#[tokio::test]
async fn out_of_range_settings_are_refused_not_clamped() {
    let refused = |builder: brisk_batch::WriteBatcherBuilder<Sink>| match builder.build() {
        Err(brisk_batch::Error::Config { setting, value, .. }) => (setting, value),
        Ok(_) => panic!("built"),
        Err(other) => panic!("{other:?}"),
    };
    assert_eq!(
        refused(WriteBatcher::builder(Sink::new()).max_batch_size(0)),
        ("max_batch_size", "0".to_owned())
    );
    assert_eq!(
        refused(WriteBatcher::builder(Sink::new()).queue_capacity(0)),
        ("queue_capacity", "0".to_owned())
    );
    assert_eq!(
        refused(WriteBatcher::builder(Sink::new()).queue_capacity(usize::MAX)),
        ("queue_capacity", usize::MAX.to_string())
    );
    assert_eq!(
        refused(WriteBatcher::builder(Sink::new()).max_concurrent_writes(0)),
        ("max_concurrent_writes", "0".to_owned())
    );
    let built = WriteBatcher::builder(Sink::new())
        .queue_capacity(1)
        .max_concurrent_writes(2)
        .build()
        .unwrap();
    built.shutdown().await;
}

/// Per-item failures: a write function whose `Output` is a `Result` fails some items and
/// not the rest. Each submitter gets its own item's outcome; the batch itself succeeded, so
/// it is neither retried nor failed for the others.
#[tokio::test(start_paused = true)]
async fn an_output_of_result_fails_items_one_by_one() {
    struct Checked {
        attempts: AtomicUsize,
    }
    impl BatchWrite for Checked {
        type Item = i64;
        type Output = Result<i64, String>;
        type Error = String;

        async fn write(&self, items: &[i64]) -> Result<Vec<Result<i64, String>>, String> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            Ok(items
                .iter()
                .map(|&item| {
                    if item < 0 {
                        Err(format!("{item} is negative"))
                    } else {
                        Ok(item * 10)
                    }
                })
                .collect())
        }
    }
    let batcher = WriteBatcher::builder(Checked {
        attempts: AtomicUsize::new(0),
    })
    .max_delay(Duration::from_millis(50))
    .retry(Retry::times(3))
    .build()
    .unwrap();
    let tasks: Vec<_> = [-1_i64, 2, -3, 4]
        .into_iter()
        .map(|item| {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(item).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("the batch itself succeeded"));
    }
    assert_eq!(
        results,
        [
            Err("-1 is negative".to_owned()),
            Ok(20),
            Err("-3 is negative".to_owned()),
            Ok(40)
        ]
    );
    assert_eq!(batcher.write_fn().attempts.load(Ordering::SeqCst), 1);
    batcher.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reservation_queues_without_waiting_and_a_full_queue_is_refused_at_once() {
    // Writes are blocked until the gate opens: one batch in its write, one waiting for its
    // turn in the worker, then the queue of 2 fills.
    let batcher = WriteBatcher::builder(Sink::gated(0))
        .max_batch_size(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let mut reserved = 0;
    loop {
        match batcher.try_reserve() {
            Ok(room) => {
                room.enqueue(reserved);
                reserved += 1;
                // Let the worker take what it can.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(Error::QueueFull { capacity }) => {
                assert_eq!(capacity, 2);
                break;
            }
            Err(other) => panic!("{other:?}"),
        }
        assert!(reserved <= 4, "the queue never filled");
    }
    assert_eq!(
        reserved, 4,
        "one writing, one waiting for its turn, two queued"
    );
    // A reservation given back unused leaves the room to others.
    batcher.write_fn().gate.add_permits(1);
    tokio::time::sleep(Duration::from_millis(1)).await;
    drop(batcher.try_reserve().expect("room after one write"));
    let room = batcher.reserve().await.unwrap();
    room.enqueue(99);
    batcher
        .write_fn()
        .gate
        .add_permits(Semaphore::MAX_PERMITS / 2);
    batcher.shutdown().await;
    assert_eq!(batcher.write_fn().written(), [0, 1, 2, 3, 99]);
    assert!(matches!(batcher.try_reserve(), Err(Error::Closed)));
    assert!(matches!(batcher.reserve().await, Err(Error::Closed)));
}

#[tokio::test(start_paused = true)]
async fn a_max_batch_size_of_usize_max_is_taken_and_its_rows_are_written() {
    // `build` accepts any size from 1: the worker must not preallocate a batch that large.
    let batcher = WriteBatcher::builder(Sink::new())
        .max_batch_size(usize::MAX)
        .build()
        .unwrap();
    batcher.enqueue(1).await.unwrap();
    // A guard against a hang (on the paused clock it fires only when nothing else can run).
    tokio::time::timeout(Duration::from_secs(60), batcher.shutdown())
        .await
        .expect("shutdown completes");
    assert_eq!(batcher.write_fn().written(), [1]);
}

#[test]
fn flush_and_shutdown_return_once_the_runtime_of_the_worker_is_gone() {
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let batcher = first.block_on(async {
        WriteBatcher::builder(Sink::new())
            .max_delay(Duration::from_secs(3600))
            .build()
            .unwrap()
    });
    // The worker is dropped with its runtime, before it ran.
    drop(first);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    second.block_on(async {
        tokio::time::timeout(Duration::from_secs(60), batcher.flush())
            .await
            .expect("flush returns");
        tokio::time::timeout(Duration::from_secs(60), batcher.shutdown())
            .await
            .expect("shutdown returns");
        assert!(matches!(batcher.enqueue(1).await, Err(Error::Closed)));
    });
}
