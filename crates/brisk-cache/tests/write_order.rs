//! Loads against writes in `Tiered` (memory alone): a load that read its source before a
//! write completed never puts the old value back after it, and a load its callers gave up on
//! at a timeout stays the one load of its key.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_cache::{Cache, Error, MemoryCache, NoRemote, Stamped, Tiered, TieredBuilder};
use tokio::sync::{Barrier, Notify};

/// The table behind the cache.
#[derive(Clone, Default)]
struct Table(Arc<Mutex<HashMap<u64, String>>>);

impl Table {
    fn set(&self, key: u64, value: &str) {
        self.0.lock().unwrap().insert(key, value.to_owned());
    }

    fn read(&self, key: u64) -> Option<String> {
        self.0.lock().unwrap().get(&key).cloned()
    }
}

fn builder() -> TieredBuilder<u64, String, NoRemote> {
    let memory: MemoryCache<u64, Stamped<String>> =
        MemoryCache::builder().max_entries(1000).build().unwrap();
    Tiered::builder().memory(memory)
}

/// A loader that reads the table, then waits at `read` (both sides) and for `release`
/// before it returns what it read: a load that read the old row while a write runs.
fn held_loader(
    table: &Table,
    read: &Arc<Barrier>,
    release: &Arc<Notify>,
) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
+ Send
+ 'static {
    let (table, read, release) = (table.clone(), Arc::clone(read), Arc::clone(release));
    move || {
        Box::pin(async move {
            let row = table.read(1).ok_or("no row")?;
            read.wait().await;
            release.notified().await;
            Ok(row)
        })
    }
}

/// What a read through the cache answers once every write has completed.
async fn read_after(cache: &Tiered<u64, String>, table: &Table) -> String {
    let table = table.clone();
    cache
        .try_get_with(1, move || async move { table.read(1).ok_or("no row") })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_read_the_old_row_does_not_store_it_after_a_remove() {
    let cache = builder().build().unwrap();
    let table = Table::default();
    table.set(1, "old");
    let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
    let loading = tokio::spawn({
        let (cache, load) = (cache.clone(), held_loader(&table, &read, &release));
        async move { cache.try_get_with(1, load).await }
    });
    read.wait().await;
    // The write: the row first, then the cached copy.
    table.set(1, "new");
    cache.remove(&1).await.unwrap();
    release.notify_one();
    // The load began before the write: its caller may be answered the old row…
    assert_eq!(loading.await.unwrap().unwrap(), "old");
    // …but the cache does not keep it.
    assert_eq!(cache.get(&1).await.unwrap(), None);
    assert_eq!(read_after(&cache, &table).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_read_the_old_row_does_not_overwrite_an_insert() {
    let cache = builder().build().unwrap();
    let table = Table::default();
    table.set(1, "old");
    let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
    let loading = tokio::spawn({
        let (cache, load) = (cache.clone(), held_loader(&table, &read, &release));
        async move { cache.try_get_with(1, load).await }
    });
    read.wait().await;
    table.set(1, "new");
    cache.insert(1, "new".to_owned(), None).await.unwrap();
    release.notify_one();
    assert_eq!(loading.await.unwrap().unwrap(), "old");
    assert_eq!(cache.get(&1).await.unwrap().as_deref(), Some("new"));
    assert_eq!(read_after(&cache, &table).await, "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_value_is_not_kept_for_revalidation_after_a_remove() {
    // Within stale-while-revalidate a stale value is kept in L1 while a refresh runs: a
    // refresh that read the old row, finishing after a remove, must not bring it back.
    let cache = builder()
        .fresh_for(Duration::from_millis(1))
        .stale_while_revalidate(Duration::from_secs(3600))
        .build()
        .unwrap();
    let table = Table::default();
    table.set(1, "old");
    assert_eq!(read_after(&cache, &table).await, "old");
    tokio::time::sleep(Duration::from_millis(5)).await; // stale now
    let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
    // Answered stale at once; the refresh behind it reads the old row and waits.
    let stale = cache
        .try_get_with(1, held_loader(&table, &read, &release))
        .await
        .unwrap();
    assert_eq!(stale, "old");
    read.wait().await;
    table.set(1, "new");
    cache.remove(&1).await.unwrap();
    release.notify_one();
    // The refresh ends; whatever it did, no read answers the old row after the remove.
    for _ in 0..50 {
        tokio::task::yield_now().await;
        assert_ne!(cache.get(&1).await.unwrap().as_deref(), Some("old"));
    }
    assert_eq!(read_after(&cache, &table).await, "new");
}

#[tokio::test(start_paused = true)]
async fn a_load_past_its_hard_timeout_is_still_the_one_load_of_its_key() {
    let cache = builder()
        .load_hard_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let source_back = Arc::new(Notify::new());
    let call = || {
        let (loads, source_back) = (Arc::clone(&loads), Arc::clone(&source_back));
        let cache = cache.clone();
        async move {
            cache
                .try_get_with(1, move || async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // A source that hangs until it comes back.
                    source_back.notified().await;
                    Ok::<_, String>("v".to_owned())
                })
                .await
        }
    };
    // 13 calls over 2 s, each timing out: one load runs for all of them.
    for _ in 0..13 {
        let answered = call().await;
        assert!(
            matches!(answered, Err(Error::LoadTimeout { .. })),
            "{answered:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    // The source comes back: the one load stores its value, and the next call reads it.
    source_back.notify_waiters();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(call().await.unwrap(), "v");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_waiting_for_a_load_behind_gets_its_value_within_its_own_timeout() {
    let cache = builder()
        .load_hard_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |after: Duration| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(after).await;
            Ok::<_, String>("v".to_owned())
        }
    };
    // The first caller gives up at 100 ms; its load ends at 150 ms.
    let first = cache
        .try_get_with(1, load(Duration::from_millis(150)))
        .await;
    assert!(matches!(first, Err(Error::LoadTimeout { .. })), "{first:?}");
    // The second caller, at 100 ms, waits for that load and is answered by it at 150 ms.
    let second = cache.try_get_with(1, load(Duration::from_secs(60))).await;
    assert_eq!(second.unwrap(), "v");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}
