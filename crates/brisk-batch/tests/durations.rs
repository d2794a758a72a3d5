//! Durations too long to add to a clock (`Duration::MAX` as "no limit") neither panic nor
//! hang (issue 30, item 9). Every wait is wrapped in a generous hang guard.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_batch::{BatchLoad, BatchWrite, Loaded, Loader, WriteBatcher};

/// A hang guard, not a timing assertion: far longer than any of these steps takes.
async fn guarded<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
}

#[derive(Default)]
struct Sink {
    written: Mutex<Vec<u64>>,
}

impl BatchWrite for Sink {
    type Item = u64;
    type Output = ();
    type Error = String;

    async fn write(&self, items: &[u64]) -> Result<Vec<()>, String> {
        self.written.lock().unwrap().extend_from_slice(items);
        Ok(vec![(); items.len()])
    }
}

#[tokio::test]
async fn a_max_delay_of_duration_max_means_no_time_limit_and_flush_and_shutdown_complete() {
    let batcher = WriteBatcher::builder(Sink::default())
        .max_delay(Duration::MAX)
        .max_batch_size(10)
        .build()
        .unwrap();
    guarded("enqueue", batcher.enqueue(1)).await.unwrap();
    guarded("enqueue", batcher.enqueue(2)).await.unwrap();
    // Both wait in a batch with no deadline: flush writes them.
    guarded("flush", batcher.flush()).await;
    let mut written = batcher.write_fn().written.lock().unwrap().clone();
    written.sort_unstable();
    assert_eq!(written, [1, 2]);
    // A submitter queued before a flush is answered by it.
    let (submitted, ()) = guarded("submit and flush", async {
        tokio::join!(batcher.submit(3), batcher.flush())
    })
    .await;
    submitted.unwrap();
    guarded("enqueue after the flush", batcher.enqueue(4))
        .await
        .unwrap();
    guarded("shutdown", batcher.shutdown()).await;
    let mut written = batcher.write_fn().written.lock().unwrap().clone();
    written.sort_unstable();
    assert_eq!(written, [1, 2, 3, 4]);
}

#[tokio::test]
async fn a_full_batch_is_still_written_at_once_without_a_time_limit() {
    let batcher = WriteBatcher::builder(Sink::default())
        .max_delay(Duration::MAX)
        .max_batch_size(2)
        .build()
        .unwrap();
    let (a, b) = guarded("a full batch", async {
        tokio::join!(batcher.submit(1), batcher.submit(2))
    })
    .await;
    assert!(a.is_ok() && b.is_ok());
    guarded("shutdown", batcher.shutdown()).await;
}

struct Ids(Arc<AtomicUsize>);

impl BatchLoad for Ids {
    type Key = u64;
    type Value = u64;
    type Error = String;

    async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64, String>, String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(keys.iter().map(|&key| (key, key)).collect())
    }
}

#[tokio::test]
async fn a_loader_with_a_max_delay_of_duration_max_still_answers() {
    let loader = Loader::builder(Ids(Arc::default()))
        .max_delay(Duration::MAX)
        .build()
        .unwrap();
    let (a, b) = guarded("two loads", async {
        tokio::join!(loader.load(1), loader.load(2))
    })
    .await;
    assert_eq!((a.unwrap(), b.unwrap()), (Some(1), Some(2)));
    let full = Loader::builder(Ids(Arc::default()))
        .max_delay(Duration::MAX)
        .fixed_window(true)
        .max_batch_size(2)
        .build()
        .unwrap();
    let (a, b) = guarded("a full fixed-window batch", async {
        tokio::join!(full.load(1), full.load(2))
    })
    .await;
    assert_eq!((a.unwrap(), b.unwrap()), (Some(1), Some(2)));
}
