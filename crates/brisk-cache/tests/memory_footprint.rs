//! The memory an empty `MemoryCache` takes, read as the process's resident set
//! (`VmRSS` of `/proc/self/status`) before and after `build()`: what the cache holds before
//! its first entry (sketches, maps, locks). A counting global allocator would be more exact,
//! but the workspace forbids `unsafe` code, tests included. One test in this binary, so that
//! no other test allocates meanwhile (nextest runs each test in a process of its own anyway).
#![cfg(target_os = "linux")]

use brisk_cache::MemoryCache;

/// The process's resident set, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// The configuration: 64 MiB by a byte weigher over 64 shards. The frequency sketch
/// was sized per unit of weight (a 1 MiB shard got a sketch for a million entries, 8 MiB, all
/// of it written at build): over 100 MiB resident before the first insert. Sized by the
/// entries a shard holds, an empty cache keeps its bookkeeping under 8 MiB.
#[test]
fn an_empty_weighted_cache_keeps_its_bookkeeping_small() {
    let before = resident();
    let cache: MemoryCache<String, Vec<u8>> = MemoryCache::builder()
        .max_weight(64 << 20)
        .weigher(|key: &String, value: &Vec<u8>| (key.len() + value.len()) as u32)
        .shards(64)
        .build()
        .unwrap();
    let held = resident().saturating_sub(before);
    assert!(
        held < 8 << 20,
        "an empty 64 MiB weighted cache on 64 shards holds {held} bytes ({} MiB)",
        held >> 20
    );
    // And it still works: the sketch grows with the entries it counts.
    for n in 0..10_000u32 {
        cache.insert(n.to_string(), vec![0; 1024]);
    }
    for n in 0..10_000u32 {
        assert!(cache.get(&n.to_string()).is_some(), "{n} missing");
    }
    assert!(cache.weighted_size() <= 64 << 20);
    assert_eq!(cache.len(), 10_000, "all fit (about 10 MiB of 64)");
}
