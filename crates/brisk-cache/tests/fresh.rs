//! Freshness in `Tiered` (memory alone, on paused time): fail-safe with its throttle and
//! maximum age, stale-while-revalidate with one refresh behind, soft and hard load timeouts,
//! XFetch early refresh, and settings that cannot work together.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use brisk_cache::{Cache, Error, MemoryCache, NoRemote, Stamped, Tiered, TieredBuilder};
use brisk_metrics::Registry;
use tokio::{sync::Notify, time::Instant};

const NAME: (&str, &str) = ("name", "products");

fn builder(registry: &Registry) -> TieredBuilder<u64, String, NoRemote> {
    let memory: MemoryCache<u64, Stamped<String>> =
        MemoryCache::builder().max_entries(1000).build().unwrap();
    Tiered::builder()
        .memory(memory)
        .fresh_for(Duration::from_secs(10))
        .metrics(registry, "products")
}

fn counter(registry: &Registry, name: &str) -> u64 {
    registry.snapshot().counter(name, &[NAME]).unwrap()
}

fn stale_served(registry: &Registry, reason: &str) -> u64 {
    registry
        .snapshot()
        .counter(
            "brisk_cache_tiered_stale_served_total",
            &[NAME, ("reason", reason)],
        )
        .unwrap()
}

/// A loader that counts its runs and answers `answer`.
#[derive(Clone, Default)]
struct Source {
    loads: Arc<AtomicUsize>,
}

impl Source {
    fn load(
        &self,
        answer: Result<&'static str, &'static str>,
    ) -> impl FnOnce() -> std::future::Ready<Result<String, String>> + Send + 'static {
        let loads = Arc::clone(&self.loads);
        move || {
            loads.fetch_add(1, Ordering::SeqCst);
            std::future::ready(answer.map(str::to_owned).map_err(str::to_owned))
        }
    }

    fn loads(&self) -> usize {
        self.loads.load(Ordering::SeqCst)
    }
}

/// What `cache` answers for key 1 while the database is down.
async fn while_down(
    cache: &Tiered<u64, String>,
    source: &Source,
) -> Result<String, Error<Arc<String>>> {
    cache.try_get_with(1, source.load(Err("down"))).await
}

#[tokio::test(start_paused = true)]
async fn fail_safe_answers_the_stale_value_throttled_and_up_to_its_max_age() {
    let registry = Registry::new();
    let cache = builder(&registry)
        .fail_safe(Duration::from_secs(60))
        .fail_safe_throttle(Duration::from_secs(5))
        .build()
        .unwrap();
    let source = Source::default();
    assert_eq!(
        cache.try_get_with(1, source.load(Ok("v1"))).await.unwrap(),
        "v1"
    );

    // Stale at 11 s, and the database is down: the stale value answers.
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        cache.get(&1).await.unwrap(),
        None,
        "`get` answers fresh values only"
    );
    assert_eq!(while_down(&cache, &source).await.unwrap(), "v1");
    assert_eq!(source.loads(), 2);
    assert_eq!(stale_served(&registry, "load_failed"), 1);
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_load_failures_total"),
        1
    );

    // Throttled: the next 5 s answer it without asking the database.
    for _ in 0..10 {
        assert_eq!(while_down(&cache, &source).await.unwrap(), "v1");
    }
    assert_eq!(source.loads(), 2);

    // After the throttle the database is asked again; still down, still the stale value.
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(while_down(&cache, &source).await.unwrap(), "v1");
    assert_eq!(source.loads(), 3);

    // 60 s after it went stale (at 10 s), throttles included, fail-safe lets it go.
    tokio::time::advance(Duration::from_secs(54)).await;
    let failed = while_down(&cache, &source).await;
    assert!(
        matches!(&failed, Err(Error::Load { source, .. }) if source.as_str() == "down"),
        "{failed:?}"
    );
    assert_eq!(stale_served(&registry, "load_failed"), 2);

    // The database is back: a fresh value again.
    assert_eq!(
        cache.try_get_with(1, source.load(Ok("v2"))).await.unwrap(),
        "v2"
    );
    assert_eq!(cache.get(&1).await.unwrap().as_deref(), Some("v2"));
}

#[tokio::test(start_paused = true)]
async fn without_fail_safe_a_failed_load_of_a_stale_value_is_an_error() {
    let registry = Registry::new();
    let cache = builder(&registry).build().unwrap();
    let source = Source::default();
    cache.try_get_with(1, source.load(Ok("v1"))).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(while_down(&cache, &source).await.is_err());
    assert_eq!(stale_served(&registry, "load_failed"), 0);
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_while_one_refresh_runs() {
    let registry = Registry::new();
    let cache = builder(&registry)
        .stale_while_revalidate(Duration::from_secs(30))
        .build()
        .unwrap();
    let source = Source::default();
    cache.try_get_with(1, source.load(Ok("v1"))).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;

    // 100 readers of the stale value: each answered at once, one refresh behind them.
    let gate = Arc::new(Notify::new());
    let refreshes = Arc::new(AtomicUsize::new(0));
    for _ in 0..100 {
        let (gate, refreshes) = (Arc::clone(&gate), Arc::clone(&refreshes));
        let started = Instant::now();
        let value = cache
            .try_get_with(1, move || async move {
                refreshes.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Ok::<_, String>("v2".to_owned())
            })
            .await
            .unwrap();
        assert_eq!(value, "v1");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "answered without waiting"
        );
    }
    // Let the background refresh start and park on the gate.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while refreshes.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the background refresh did not start in 60 s"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(stale_served(&registry, "stale_while_revalidate"), 100);
    gate.notify_waiters();
    // The refresh stores its value; readers get it from then on.
    let mut answer = String::new();
    for _ in 0..100 {
        answer = cache.get(&1).await.unwrap().unwrap_or_default();
        if answer == "v2" {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(answer, "v2");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1, "exactly one refresh");

    // Past the bound (30 s after going stale) the caller waits for a load.
    tokio::time::advance(Duration::from_secs(10 + 31)).await;
    assert_eq!(
        cache.try_get_with(1, source.load(Ok("v3"))).await.unwrap(),
        "v3"
    );
    assert_eq!(stale_served(&registry, "stale_while_revalidate"), 100);
}

#[tokio::test(start_paused = true)]
async fn past_the_soft_timeout_the_stale_value_answers_and_the_load_finishes_behind() {
    let registry = Registry::new();
    let cache = builder(&registry)
        .fail_safe(Duration::from_secs(60))
        .load_soft_timeout(Duration::from_millis(100))
        .load_hard_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let source = Source::default();
    cache.try_get_with(1, source.load(Ok("v1"))).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;

    let started = Instant::now();
    let slow = cache
        .try_get_with(1, || async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<_, String>("v2".to_owned())
        })
        .await
        .unwrap();
    assert_eq!(slow, "v1");
    assert_eq!(started.elapsed(), Duration::from_millis(100));
    assert_eq!(stale_served(&registry, "load_timeout"), 1);
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_load_timeouts_total"),
        1
    );

    // The load went on and stored its value, though nobody waited for it.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(cache.get(&1).await.unwrap().as_deref(), Some("v2"));
    assert_eq!(
        registry
            .snapshot()
            .histogram("brisk_cache_tiered_load_duration_seconds", &[NAME])
            .unwrap()
            .count,
        2
    );
}

#[tokio::test(start_paused = true)]
async fn past_the_hard_timeout_with_nothing_stale_the_caller_gets_an_error() {
    let registry = Registry::new();
    let cache = builder(&registry)
        .load_hard_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let timed_out = cache
        .try_get_with(1, || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, String>("late".to_owned())
        })
        .await;
    assert!(
        matches!(&timed_out, Err(Error::LoadTimeout { after, .. }) if *after == Duration::from_secs(1)),
        "{timed_out:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_load_timeouts_total"),
        1
    );
    // Its value arrives later and is kept.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(cache.get(&1).await.unwrap().as_deref(), Some("late"));
}

#[tokio::test(start_paused = true)]
async fn early_refresh_reloads_a_hot_key_before_it_goes_stale() {
    let registry = Registry::new();
    let cache = builder(&registry).early_refresh(1.0).build().unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |value: &'static str| {
        let loads = Arc::clone(&loads);
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            // Recorded as the value's cost: 20 ms (wall time; paused time does not count).
            std::thread::sleep(Duration::from_millis(20));
            Ok::<_, String>(value.to_owned())
        }
    };
    cache.try_get_with(1, load("v1")).await.unwrap();

    // Far from expiry (9 s ≫ 20 ms of load time), no reader refreshes.
    for _ in 0..1000 {
        assert_eq!(cache.try_get_with(1, load("v2")).await.unwrap(), "v1");
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_early_refreshes_total"),
        0
    );

    // 5 ms before it goes stale, each read refreshes with probability ≥ exp(−5/20) ≈ 0.78:
    // within 100 reads one does (the chance none does is below 1e-60), and only one runs.
    tokio::time::advance(Duration::from_millis(10_000 - 5)).await;
    for _ in 0..100 {
        assert_eq!(cache.try_get_with(1, load("v2")).await.unwrap(), "v1");
        if counter(&registry, "brisk_cache_tiered_early_refreshes_total") > 0 {
            break;
        }
    }
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_early_refreshes_total"),
        1
    );
    let mut refreshed = String::new();
    for _ in 0..100 {
        tokio::task::yield_now().await;
        refreshed = cache.get(&1).await.unwrap().unwrap_or_default();
        if refreshed == "v2" {
            break;
        }
    }
    assert_eq!(refreshed, "v2", "refreshed before it went stale");
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    // Fresh for another 10 s from the refresh: past the old expiry, no miss.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(cache.try_get_with(1, load("v3")).await.unwrap(), "v2");
    assert_eq!(counter(&registry, "brisk_cache_tiered_misses_total"), 1);
}

#[tokio::test]
async fn a_panicking_loader_counts_as_a_failure() {
    let registry = Registry::new();
    let cache = builder(&registry).build().unwrap();
    let panicked = cache
        .get_with(1, || async { panic!("bug in the loader") })
        .await;
    assert!(
        matches!(&panicked, Err(Error::LoadPanicked { message, .. }) if message.contains("bug")),
        "{panicked:?}"
    );
    assert_eq!(
        counter(&registry, "brisk_cache_tiered_load_failures_total"),
        1
    );
    assert_eq!(
        cache
            .get_with(1, || async { "ok".to_owned() })
            .await
            .unwrap(),
        "ok"
    );
}

#[test]
fn freshness_settings_that_cannot_work_together_are_refused() {
    let refused = |built: Result<Tiered<u64, String>, Error>| match built {
        Err(Error::Config { setting, .. }) => setting,
        other => panic!("accepted: {other:?}"),
    };
    let memory = || MemoryCache::builder().max_entries(10).build().unwrap();
    assert_eq!(
        refused(
            Tiered::builder()
                .memory(memory())
                .fail_safe(Duration::from_secs(60))
                .build()
        ),
        "fail_safe"
    );
    assert_eq!(
        refused(
            Tiered::builder()
                .memory(memory())
                .fresh_for(Duration::from_secs(10))
                .load_soft_timeout(Duration::from_millis(100))
                .build()
        ),
        "load_soft_timeout"
    );
    assert_eq!(
        refused(
            Tiered::builder()
                .memory(memory())
                .fresh_for(Duration::from_secs(10))
                .early_refresh(-1.0)
                .build()
        ),
        "early_refresh"
    );
}
