//! `WriteBehind` through source outages (issue 29): retries land every row once, a batch that
//! fails for good reaches the failure callback and the metrics, a full queue answers a typed
//! error with memory bounded, and shutdown drains everything acknowledged.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_cache::{
    Error, FailedBatch, MemoryCache, NoRemote, Source, Tiered, WriteBehind, WriteFailure,
};
use brisk_metrics::Registry;
use tokio::sync::Semaphore;

/// A table in memory that can be taken down: `save_many` is all-or-nothing, and every row it
/// takes is logged, so a row written twice shows.
struct Table {
    rows: Mutex<HashMap<u64, String>>,
    /// Every key `save_many` stored, in order, repeats included.
    log: Mutex<Vec<u64>>,
    attempts: AtomicUsize,
    /// Refuse this many of the next batches.
    fail_next: AtomicUsize,
    /// Refuse every batch while set.
    down: AtomicBool,
    /// Each batch write takes a permit: with none, writes wait.
    gate: Semaphore,
    /// Panic on a batch holding this key.
    poison: Option<u64>,
}

impl Table {
    fn new() -> Self {
        Self {
            rows: Mutex::default(),
            log: Mutex::default(),
            attempts: AtomicUsize::new(0),
            fail_next: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            gate: Semaphore::new(Semaphore::MAX_PERMITS),
            poison: None,
        }
    }

    fn failing(times: usize) -> Self {
        let table = Self::new();
        table.fail_next.store(times, Ordering::SeqCst);
        table
    }

    fn logged(&self) -> Vec<u64> {
        let mut log = self.log.lock().unwrap().clone();
        log.sort_unstable();
        log
    }
}

/// The handle the store owns; the test keeps another.
struct Db(Arc<Table>);

impl std::ops::Deref for Db {
    type Target = Table;

    fn deref(&self) -> &Table {
        &self.0
    }
}

impl Source<u64, String> for Db {
    type Error = String;

    async fn load(&self, key: &u64) -> Result<Option<String>, String> {
        Ok(self.rows.lock().unwrap().get(key).cloned())
    }

    async fn save(&self, key: &u64, value: &String) -> Result<(), String> {
        self.save_many(&[(*key, value.clone())]).await
    }

    async fn delete(&self, key: &u64) -> Result<(), String> {
        self.rows.lock().unwrap().remove(key);
        Ok(())
    }

    async fn save_many(&self, rows: &[(u64, String)]) -> Result<(), String> {
        let _permit = self.gate.acquire().await.unwrap();
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(poison) = self.poison {
            assert!(
                !rows.iter().any(|(key, _)| *key == poison),
                "the table choked on key {poison}"
            );
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing || self.down.load(Ordering::SeqCst) {
            return Err(format!("connection refused writing {} rows", rows.len()));
        }
        let mut table = self.rows.lock().unwrap();
        let mut log = self.log.lock().unwrap();
        for (key, value) in rows {
            table.insert(*key, value.clone());
            log.push(*key);
        }
        Ok(())
    }
}

type Store = WriteBehind<u64, String, Db, NoRemote>;

fn cache() -> Tiered<u64, Option<String>, NoRemote> {
    Tiered::<u64, Option<String>, NoRemote>::builder()
        .memory(MemoryCache::builder().max_entries(10_000).build().unwrap())
        .build()
        .unwrap()
}

fn counter(registry: &Registry, metric: &str) -> u64 {
    registry
        .snapshot()
        .counter(metric, &[("name", "orders")])
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_source_that_fails_n_times_then_succeeds_gets_every_row_once() {
    // With `new`'s defaults (5 retries): the first batch is refused 3 times, then lands.
    let table = Arc::new(Table::failing(3));
    let store: Store = WriteBehind::new(cache(), Db(Arc::clone(&table)));
    for key in 0..250 {
        store.put(key, format!("v{key}")).await.unwrap();
    }
    store.flush().await;
    assert_eq!(
        table.logged(),
        (0..250).collect::<Vec<_>>(),
        "lost or doubled"
    );
    assert_eq!(
        table.attempts.load(Ordering::SeqCst),
        3 + 3,
        "3 batches, 3 refusals"
    );

    // The same through the builder, counted.
    let registry = Registry::new();
    let table = Arc::new(Table::failing(2));
    let store: Store = WriteBehind::builder(cache(), Db(Arc::clone(&table)))
        .max_batch_size(10)
        .retries(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(15))
        .metrics(&registry, "orders")
        .on_failure(|batch| panic!("no batch may fail: {batch:?}"))
        .build()
        .unwrap();
    for key in 0..25 {
        store.put(key, format!("v{key}")).await.unwrap();
    }
    store.flush().await;
    assert_eq!(table.logged(), (0..25).collect::<Vec<_>>());
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_queued_total"),
        25
    );
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_written_total"),
        25
    );
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_retries_total"),
        2
    );
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_failed_batches_total"),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_down_longer_than_the_retries_hands_exactly_the_failed_rows_to_the_callback() {
    let logs = brisk_testkit::LogCapture::this_thread();
    let registry = Registry::new();
    let table = Arc::new(Table::new());
    table.down.store(true, Ordering::SeqCst);
    let failed: Arc<Mutex<Vec<FailedBatch<u64, String, String>>>> = Arc::default();
    let store: Store = WriteBehind::builder(cache(), Db(Arc::clone(&table)))
        .max_batch_size(10)
        .max_delay(Duration::from_secs(3600))
        .retries(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .metrics(&registry, "orders")
        .on_failure({
            let failed = Arc::clone(&failed);
            move |batch| failed.lock().unwrap().push(batch)
        })
        .build()
        .unwrap();
    // One batch of 10 puts over 9 keys: key 0 written twice, the second value wins.
    store.put(0, "first".to_owned()).await.unwrap();
    for key in 1..9 {
        store.put(key, format!("v{key}")).await.unwrap();
    }
    store.put(0, "last".to_owned()).await.unwrap();
    store.flush().await;
    {
        let failed = failed.lock().unwrap();
        assert_eq!(failed.len(), 1, "{failed:?}");
        let batch = &failed[0];
        let mut rows = batch.rows.clone();
        rows.sort();
        let mut expected: Vec<(u64, String)> = (1..9).map(|key| (key, format!("v{key}"))).collect();
        expected.insert(0, (0, "last".to_owned()));
        assert_eq!(rows, expected);
        assert_eq!(batch.attempts, 3);
        assert!(
            matches!(&batch.cause, WriteFailure::Source(error) if error.contains("refused")),
            "{:?}",
            batch.cause
        );
    }
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_failed_batches_total"),
        1
    );
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_failed_rows_total"),
        9
    );
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_retries_total"),
        2
    );
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_written_total"),
        0
    );
    assert!(table.logged().is_empty());
    assert!(
        logs.lines()
            .iter()
            .any(|line| line.contains("write-behind batch failed") && line.contains("rows=9")),
        "an operator sees the failure: {:?}",
        logs.lines()
    );

    // Back up: later rows land, and the callback hears of nothing more.
    table.down.store(false, Ordering::SeqCst);
    for key in 100..105 {
        store.put(key, format!("v{key}")).await.unwrap();
    }
    store.shutdown().await;
    assert_eq!(table.logged(), (100..105).collect::<Vec<_>>());
    assert_eq!(failed.lock().unwrap().len(), 1);
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_written_total"),
        5
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_reaches_the_callback_and_the_writer_goes_on() {
    let table = Arc::new(Table {
        poison: Some(13),
        ..Table::new()
    });
    let failed: Arc<Mutex<Vec<FailedBatch<u64, String, String>>>> = Arc::default();
    let store: Store = WriteBehind::builder(cache(), Db(Arc::clone(&table)))
        .max_batch_size(2)
        .on_failure({
            let failed = Arc::clone(&failed);
            move |batch| failed.lock().unwrap().push(batch)
        })
        .build()
        .unwrap();
    for key in [12, 13, 14, 15] {
        store.put(key, format!("v{key}")).await.unwrap();
    }
    store.shutdown().await;
    let failed = failed.lock().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].attempts, 1, "a panic is not retried");
    assert!(
        matches!(&failed[0].cause, WriteFailure::Panicked(message) if message.contains("key 13")),
        "{:?}",
        failed[0].cause
    );
    assert_eq!(table.logged(), [14, 15]);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_answers_queue_full_and_memory_stays_bounded() {
    let registry = Registry::new();
    let table = Arc::new(Table::new());
    // The database hangs: no batch write finishes until the gate opens.
    table.gate.forget_permits(Semaphore::MAX_PERMITS);
    let store: Arc<Store> = Arc::new(
        WriteBehind::builder(cache(), Db(Arc::clone(&table)))
            .max_batch_size(2)
            .queue_capacity(4)
            .enqueue_timeout(Duration::ZERO)
            .metrics(&registry, "orders")
            .build()
            .unwrap(),
    );
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for key in 0..1_000u64 {
        match store.put(key, format!("v{key}")).await {
            Ok(()) => accepted.push(key),
            Err(Error::QueueFull { capacity, .. }) => {
                assert_eq!(capacity, 4);
                refused.push(key);
            }
            Err(other) => panic!("{other:?}"),
        }
        // Let the writer take what it can.
        tokio::task::yield_now().await;
    }
    // The queue, the batch the writer holds, and the batch being written: no more.
    assert!(
        (4..=4 + 2 * 2).contains(&accepted.len()),
        "{} rows held",
        accepted.len()
    );
    assert_eq!(accepted.len() + refused.len(), 1_000);
    assert_eq!(
        counter(&registry, "brisk_cache_write_behind_rejected_total"),
        refused.len() as u64
    );
    // A refused row was not cached either.
    assert_eq!(store.get(refused[0]).await.unwrap(), None);

    table.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    store.shutdown().await;
    assert_eq!(table.logged(), accepted, "every acknowledged row, once");
}

#[tokio::test(start_paused = true)]
async fn a_put_waits_for_room_up_to_its_timeout_then_answers_queue_full() {
    let table = Arc::new(Table::new());
    table.gate.forget_permits(Semaphore::MAX_PERMITS);
    let store: Store = WriteBehind::builder(cache(), Db(Arc::clone(&table)))
        .max_batch_size(1)
        .queue_capacity(1)
        .enqueue_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let mut accepted = 0;
    let error = loop {
        match store.put(accepted, "v".to_owned()).await {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted <= 3, "the queue never filled");
    };
    assert!(
        matches!(&error, Error::QueueFull { capacity: 1, waited, .. } if *waited == Duration::from_millis(250)),
        "{error:?}"
    );
    table.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    store.shutdown().await;
    assert_eq!(table.logged(), (0..accepted).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_everything_acknowledged_retries_included() {
    let table = Arc::new(Table::failing(2));
    let store: Store = WriteBehind::builder(cache(), Db(Arc::clone(&table)))
        .max_delay(Duration::from_secs(3600))
        .build()
        .unwrap();
    for key in 0..30 {
        store.put(key, format!("v{key}")).await.unwrap();
    }
    assert!(table.logged().is_empty(), "held for the batch's delay");
    store.shutdown().await;
    assert_eq!(table.logged(), (0..30).collect::<Vec<_>>());
    let after = store.put(99, "late".to_owned()).await;
    assert!(matches!(after, Err(Error::Closed { .. })), "{after:?}");
    assert_eq!(store.get(99).await.unwrap(), None, "not cached");
}

#[tokio::test]
async fn out_of_range_settings_are_refused_by_build() {
    let refused = |builder: brisk_cache::WriteBehindBuilder<_, _, _, _>| match builder.build() {
        Err(Error::Config { setting, .. }) => setting,
        Ok(_) => panic!("built"),
        Err(other) => panic!("{other:?}"),
    };
    let table = || Db(Arc::new(Table::new()));
    let builder = || WriteBehind::<u64, String, Db, NoRemote>::builder(cache(), table());
    assert_eq!(refused(builder().max_batch_size(0)), "max_batch_size");
    assert_eq!(refused(builder().queue_capacity(0)), "queue_capacity");
    assert_eq!(
        refused(builder().backoff(Duration::from_secs(2), Duration::from_secs(1))),
        "backoff"
    );
}

#[tokio::test(start_paused = true)]
async fn puts_racing_on_one_key_each_wait_at_most_the_timeout_in_all() {
    // The per-key ordering lock is taken within the same bound: ten puts of one key against
    // a full queue all answer within one timeout (on the paused clock), not one after another.
    let table = Arc::new(Table::new());
    table.gate.forget_permits(Semaphore::MAX_PERMITS);
    let store: Arc<Store> = Arc::new(
        WriteBehind::builder(cache(), Db(Arc::clone(&table)))
            .max_batch_size(1)
            .queue_capacity(1)
            .enqueue_timeout(Duration::from_millis(250))
            .build()
            .unwrap(),
    );
    let mut filler = 100;
    while store.put(filler, "v".to_owned()).await.is_ok() {
        filler += 1;
        assert!(filler < 110, "the queue never filled");
    }
    let start = tokio::time::Instant::now();
    let racers: Vec<_> = (0..10)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.put(7, "hot".to_owned()).await })
        })
        .collect();
    for racer in racers {
        let result = racer.await.unwrap();
        assert!(matches!(result, Err(Error::QueueFull { .. })), "{result:?}");
    }
    assert!(
        start.elapsed() <= Duration::from_millis(250),
        "waited {:?}",
        start.elapsed()
    );
    table.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    store.shutdown().await;
}

/// A remote level in memory whose inserts store the value, then tell `stored` and never
/// answer: a put dropped in its cache write after the value reached the level.
#[derive(Clone, Default)]
struct StoresThenHangs {
    entries: Arc<Mutex<HashMap<u64, brisk_cache::Stamped<Option<String>>>>>,
    stored: Arc<tokio::sync::Notify>,
}

impl brisk_cache::Cache<u64, brisk_cache::Stamped<Option<String>>> for StoresThenHangs {
    async fn get(
        &self,
        key: &u64,
    ) -> brisk_cache::Result<Option<brisk_cache::Stamped<Option<String>>>> {
        Ok(self.entries.lock().unwrap().get(key).cloned())
    }

    async fn insert(
        &self,
        key: u64,
        value: brisk_cache::Stamped<Option<String>>,
        _: Option<Duration>,
    ) -> brisk_cache::Result<()> {
        self.entries.lock().unwrap().insert(key, value);
        self.stored.notify_one();
        std::future::pending().await
    }

    async fn remove(&self, key: &u64) -> brisk_cache::Result<()> {
        self.entries.lock().unwrap().remove(key);
        Ok(())
    }

    async fn get_many(
        &self,
        keys: &[u64],
    ) -> brisk_cache::Result<Vec<Option<brisk_cache::Stamped<Option<String>>>>> {
        let entries = self.entries.lock().unwrap();
        Ok(keys.iter().map(|key| entries.get(key).cloned()).collect())
    }

    async fn insert_many(
        &self,
        entries: Vec<(u64, brisk_cache::Stamped<Option<String>>)>,
        _: Option<Duration>,
    ) -> brisk_cache::Result<()> {
        self.entries.lock().unwrap().extend(entries);
        Ok(())
    }
}

impl brisk_cache::Remote<u64, brisk_cache::Stamped<Option<String>>> for StoresThenHangs {
    async fn get_with_ttl(
        &self,
        key: &u64,
    ) -> brisk_cache::Result<Option<brisk_cache::WithTtl<brisk_cache::Stamped<Option<String>>>>>
    {
        Ok(brisk_cache::Cache::get(self, key)
            .await?
            .map(|stamped| (stamped, None)))
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[u64],
    ) -> brisk_cache::Result<Vec<Option<brisk_cache::WithTtl<brisk_cache::Stamped<Option<String>>>>>>
    {
        Ok(brisk_cache::Cache::get_many(self, keys)
            .await?
            .into_iter()
            .map(|found| found.map(|stamped| (stamped, None)))
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_dropped_after_its_cache_write_began_still_reaches_the_source() {
    // The remote level takes "v2" and never answers; the put is dropped there. The cache (L2)
    // now says "v2": the source must get it too, not keep "v1" for good.
    let remote = StoresThenHangs::default();
    let cache = Tiered::<u64, Option<String>>::builder()
        .memory(MemoryCache::builder().max_entries(100).build().unwrap())
        .remote(remote.clone())
        .no_auto_recovery()
        .build()
        .unwrap();
    let table = Arc::new(Table::new());
    table.rows.lock().unwrap().insert(7, "v1".to_owned());
    let store = Arc::new(
        WriteBehind::builder(cache, Db(Arc::clone(&table)))
            .build()
            .unwrap(),
    );
    let put = tokio::spawn({
        let store = Arc::clone(&store);
        async move { store.put(7, "v2".to_owned()).await }
    });
    remote.stored.notified().await;
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    let cached = brisk_cache::Cache::get(&remote, &7).await.unwrap();
    assert_eq!(
        cached.map(|stamped| stamped.value().clone()),
        Some(Some("v2".to_owned())),
        "the remote level took the write"
    );
    store.flush().await;
    assert_eq!(
        table.rows.lock().unwrap().get(&7).map(String::as_str),
        Some("v2"),
        "the source must get the value the cache holds"
    );
}
