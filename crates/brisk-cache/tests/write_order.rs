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

/// A model of the guarantee, checked under random interleavings: writers update a row (a
/// version per key, one writer at a time per key, as a database row lock orders them) and
/// then insert or remove it in the cache; readers read through the cache with a loader that
/// reads the row and yields a random number of times before returning it. A read that starts
/// after a write completed never returns an older version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_no_read_returns_a_version_older_than_a_completed_write() {
    const KEYS: u64 = 4;
    for seed in 1..=20_u64 {
        let cache: Tiered<u64, u64> = builder_versions().build().unwrap();
        let model = Arc::new(Model::new(KEYS));
        let mut tasks = Vec::new();
        for writer in 0..2 {
            let (cache, model) = (cache.clone(), Arc::clone(&model));
            tasks.push(tokio::spawn(async move {
                let mut random = Rng(seed * 31 + writer);
                for _ in 0..100 {
                    let key = random.below(KEYS);
                    let _row_lock = model.locks[key as usize].lock().await;
                    let version = model.write_row(key);
                    random.yields().await;
                    if random.below(2) == 0 {
                        cache.insert(key, version, None).await.unwrap();
                    } else {
                        cache.remove(&key).await.unwrap();
                    }
                    model.completed[key as usize].fetch_max(version, Ordering::SeqCst);
                }
            }));
        }
        for reader in 0..3 {
            let (cache, model) = (cache.clone(), Arc::clone(&model));
            tasks.push(tokio::spawn(async move {
                let mut random = Rng(seed * 77 + reader);
                for _ in 0..150 {
                    let key = random.below(KEYS);
                    let floor = model.completed[key as usize].load(Ordering::SeqCst);
                    let read = if random.below(3) == 0 {
                        cache.get(&key).await.unwrap()
                    } else {
                        let (model, mut random) = (Arc::clone(&model), Rng(random.next()));
                        Some(
                            cache
                                .try_get_with(key, move || async move {
                                    let row = model.read_row(key);
                                    random.yields().await;
                                    Ok::<_, String>(row)
                                })
                                .await
                                .unwrap(),
                        )
                    };
                    if let Some(version) = read {
                        assert!(
                            version >= floor,
                            "seed {seed}: key {key} read version {version} after version {floor} was written"
                        );
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}

fn builder_versions() -> TieredBuilder<u64, u64, NoRemote> {
    let memory: MemoryCache<u64, Stamped<u64>> =
        MemoryCache::builder().max_entries(1000).build().unwrap();
    Tiered::builder().memory(memory)
}

/// The rows (a version per key) and, per key, the newest version whose write completed.
struct Model {
    rows: Mutex<Vec<u64>>,
    locks: Vec<tokio::sync::Mutex<()>>,
    completed: Vec<std::sync::atomic::AtomicU64>,
}

impl Model {
    fn new(keys: u64) -> Self {
        Self {
            rows: Mutex::new(vec![0; keys as usize]),
            locks: (0..keys).map(|_| tokio::sync::Mutex::new(())).collect(),
            completed: (0..keys)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    fn write_row(&self, key: u64) -> u64 {
        let mut rows = self.rows.lock().unwrap();
        rows[key as usize] += 1;
        rows[key as usize]
    }

    fn read_row(&self, key: u64) -> u64 {
        self.rows.lock().unwrap()[key as usize]
    }
}

/// xorshift64: the interleavings differ by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// Yields to the scheduler 0 to 3 times.
    async fn yields(&mut self) {
        for _ in 0..self.below(4) {
            tokio::task::yield_now().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_level_alone_does_not_store_a_load_that_read_before_a_remove_or_insert() {
    for insert in [false, true] {
        let memory: MemoryCache<u64, String> =
            MemoryCache::builder().max_entries(1000).build().unwrap();
        let table = Table::default();
        table.set(1, "old");
        let (read, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
        let loading = tokio::spawn({
            let (memory, load) = (memory.clone(), held_loader(&table, &read, &release));
            async move { memory.try_get_with(1, load).await }
        });
        read.wait().await;
        table.set(1, "new");
        if insert {
            memory.insert(1, "new".to_owned());
        } else {
            memory.remove(&1);
        }
        release.notify_one();
        assert_eq!(loading.await.unwrap().unwrap(), "old");
        let expected = insert.then(|| "new".to_owned());
        assert_eq!(memory.get(&1), expected, "insert: {insert}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_load_that_never_returns_stops_counting_as_its_keys_load_after_a_minute() {
    let cache = builder()
        .load_hard_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let hung = {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<String, String>>().await
        }
    };
    let first = cache.try_get_with(1, hung).await;
    assert!(matches!(first, Err(Error::LoadTimeout { .. })), "{first:?}");
    // For a minute (or ten deadlines if longer), callers wait for the hung load; past that,
    // one loads anew.
    tokio::time::sleep(Duration::from_secs(59)).await;
    let loads_again = Arc::clone(&loads);
    let answered = cache
        .try_get_with(1, move || async move {
            loads_again.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>("v".to_owned())
        })
        .await;
    assert!(
        matches!(answered, Err(Error::LoadTimeout { .. })),
        "{answered:?}"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loads_again = Arc::clone(&loads);
    let answered = cache
        .try_get_with(1, move || async move {
            loads_again.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>("v".to_owned())
        })
        .await;
    assert_eq!(answered.unwrap(), "v");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

/// The value whose insert is held, where it waits once stored, and what releases it.
type Hold = (String, Arc<Barrier>, Arc<Notify>);

/// A remote level in memory whose next insert of a chosen value stores, then waits for a
/// release; and whose removals can be made to hang.
#[derive(Clone, Default)]
struct HeldRemote {
    entries: Arc<Mutex<HashMap<u64, Stamped<String>>>>,
    hold: Arc<Mutex<Option<Hold>>>,
    removals_hang: Arc<std::sync::atomic::AtomicBool>,
}

impl HeldRemote {
    fn hold_insert_of(&self, value: &str) -> (Arc<Barrier>, Arc<Notify>) {
        let (stored, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
        *self.hold.lock().unwrap() =
            Some((value.to_owned(), Arc::clone(&stored), Arc::clone(&release)));
        (stored, release)
    }

    fn value(&self, key: u64) -> Option<String> {
        self.entries
            .lock()
            .unwrap()
            .get(&key)
            .map(|stamped| stamped.value().clone())
    }
}

impl Cache<u64, Stamped<String>> for HeldRemote {
    async fn get(&self, key: &u64) -> brisk_cache::Result<Option<Stamped<String>>> {
        Ok(self.entries.lock().unwrap().get(key).cloned())
    }

    async fn insert(
        &self,
        key: u64,
        value: Stamped<String>,
        _: Option<Duration>,
    ) -> brisk_cache::Result<()> {
        let held = {
            let mut hold = self.hold.lock().unwrap();
            match &*hold {
                Some((held, _, _)) if held == value.value() => hold.take(),
                _ => None,
            }
        };
        self.entries.lock().unwrap().insert(key, value);
        if let Some((_, stored, release)) = held {
            stored.wait().await;
            release.notified().await;
        }
        Ok(())
    }

    async fn remove(&self, key: &u64) -> brisk_cache::Result<()> {
        if self.removals_hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.entries.lock().unwrap().remove(key);
        Ok(())
    }

    async fn get_many(&self, keys: &[u64]) -> brisk_cache::Result<Vec<Option<Stamped<String>>>> {
        let entries = self.entries.lock().unwrap();
        Ok(keys.iter().map(|key| entries.get(key).cloned()).collect())
    }

    async fn insert_many(
        &self,
        entries: Vec<(u64, Stamped<String>)>,
        _: Option<Duration>,
    ) -> brisk_cache::Result<()> {
        self.entries.lock().unwrap().extend(entries);
        Ok(())
    }
}

impl brisk_cache::Remote<u64, Stamped<String>> for HeldRemote {
    async fn get_with_ttl(
        &self,
        key: &u64,
    ) -> brisk_cache::Result<Option<brisk_cache::WithTtl<Stamped<String>>>> {
        Ok(self.get(key).await?.map(|stamped| (stamped, None)))
    }

    async fn get_many_with_ttl(
        &self,
        keys: &[u64],
    ) -> brisk_cache::Result<Vec<Option<brisk_cache::WithTtl<Stamped<String>>>>> {
        Ok(self
            .get_many(keys)
            .await?
            .into_iter()
            .map(|found| found.map(|stamped| (stamped, None)))
            .collect())
    }
}

fn over(remote: &HeldRemote) -> Tiered<u64, String, HeldRemote> {
    Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .remote(remote.clone())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_inserts_of_one_key_leave_memory_agreeing_with_the_remote_level() {
    let remote = HeldRemote::default();
    let cache = over(&remote);
    // The first insert has reached L2 and waits; the second runs to the end meanwhile.
    let (stored, release) = remote.hold_insert_of("v1");
    let first = tokio::spawn({
        let cache = cache.clone();
        async move { cache.insert(1, "v1".to_owned(), None).await }
    });
    stored.wait().await;
    cache.insert(1, "v2".to_owned(), None).await.unwrap();
    release.notify_one();
    first.await.unwrap().unwrap();
    // L2 holds the later write; memory must not answer the earlier one.
    assert_eq!(remote.value(1).as_deref(), Some("v2"));
    assert_eq!(cache.get(&1).await.unwrap().as_deref(), Some("v2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_caller_is_dropped_while_it_undoes_its_store_leaves_no_old_value() {
    let remote = HeldRemote::default();
    let cache = over(&remote);
    // The load's L2 store of "old" waits; a write of "new" completes meanwhile; then the
    // load finds the write and undoes its store, and its caller is dropped in the undo.
    let (stored, release) = remote.hold_insert_of("old");
    let loading = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .try_get_with(1, || async { Ok::<_, String>("old".to_owned()) })
                .await
        }
    });
    stored.wait().await;
    cache.insert(1, "new".to_owned(), None).await.unwrap();
    remote.removals_hang.store(true, Ordering::SeqCst);
    release.notify_one();
    // Give the load time to reach its undo, then drop it there.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    loading.abort();
    let _ = loading.await;
    assert_ne!(cache.get(&1).await.unwrap().as_deref(), Some("old"));
}

#[tokio::test(start_paused = true)]
async fn a_caller_after_a_remove_is_not_answered_the_stale_value_of_a_load_begun_before_it() {
    let cache = builder()
        .fresh_for(Duration::from_secs(10))
        .fail_safe(Duration::from_secs(60))
        .load_soft_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    cache
        .try_get_with(1, || async { Ok::<_, String>("stale".to_owned()) })
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    // A's load hangs; its answer at the soft timeout is the stale value.
    let started = Arc::new(Notify::new());
    let a = tokio::spawn({
        let (cache, started) = (cache.clone(), Arc::clone(&started));
        async move {
            cache
                .try_get_with(1, move || async move {
                    started.notify_one();
                    std::future::pending::<Result<String, String>>().await
                })
                .await
        }
    });
    started.notified().await;
    cache.remove(&1).await.unwrap();
    // C starts after the remove completed, and would join A's load.
    let c = tokio::spawn({
        let cache = cache.clone();
        async move {
            cache
                .try_get_with(1, || async { Ok::<_, String>("new".to_owned()) })
                .await
        }
    });
    assert_eq!(
        a.await.unwrap().unwrap(),
        "stale",
        "A began before the remove"
    );
    assert_eq!(c.await.unwrap().unwrap(), "new");
}

/// The value whose save waits, and what releases it.
type SaveHold = (String, Arc<Notify>);

/// A table whose save of `held` waits (after writing it) until released.
#[derive(Clone, Default)]
struct SlowSource {
    table: Table,
    hold: Arc<Mutex<Option<SaveHold>>>,
}

impl brisk_cache::Source<u64, String> for SlowSource {
    type Error = String;

    async fn load(&self, key: &u64) -> Result<Option<String>, String> {
        Ok(self.table.read(*key))
    }

    async fn save(&self, key: &u64, value: &String) -> Result<(), String> {
        self.table.set(*key, value);
        let held = {
            let mut hold = self.hold.lock().unwrap();
            match &*hold {
                Some((held, _)) if held == value => hold.take(),
                _ => None,
            }
        };
        if let Some((_, release)) = held {
            release.notified().await;
        }
        Ok(())
    }

    async fn delete(&self, key: &u64) -> Result<(), String> {
        self.table.0.lock().unwrap().remove(key);
        Ok(())
    }
}

#[tokio::test]
async fn two_write_through_puts_of_one_key_leave_the_cache_with_the_sources_value() {
    let source = SlowSource::default();
    let release = Arc::new(Notify::new());
    *source.hold.lock().unwrap() = Some(("v1".to_owned(), Arc::clone(&release)));
    let memory: MemoryCache<u64, Stamped<Option<String>>> =
        MemoryCache::builder().max_entries(1000).build().unwrap();
    let through = brisk_cache::WriteThrough::new(
        Tiered::builder().memory(memory).build().unwrap(),
        source.clone(),
    );
    // The first put has written v1 to the source and waits; the second runs meanwhile.
    let first = tokio::spawn({
        let through = through.clone();
        async move { through.put(1, "v1".to_owned()).await }
    });
    tokio::task::yield_now().await;
    let second = tokio::spawn({
        let through = through.clone();
        async move { through.put(1, "v2".to_owned()).await }
    });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    release.notify_one();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(source.table.read(1).as_deref(), Some("v2"));
    assert_eq!(
        through.cache().get(&1).await.unwrap(),
        Some(Some("v2".to_owned()))
    );
}

#[tokio::test]
async fn insert_many_keeps_every_value_in_memory() {
    // Thousands of keys share the epoch stripes: the batch's own bumps are not another
    // write's.
    let memory: MemoryCache<u64, Stamped<String>> =
        MemoryCache::builder().max_entries(20_000).build().unwrap();
    let cache = Tiered::builder().memory(memory).build().unwrap();
    let entries: Vec<(u64, String)> = (0..5000).map(|key| (key, key.to_string())).collect();
    cache.insert_many(entries, None).await.unwrap();
    for key in 0..5000_u64 {
        assert_eq!(
            cache.memory().unwrap().get(&key).map(Stamped::into_value),
            Some(key.to_string())
        );
    }
}
