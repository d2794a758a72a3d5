//! Caches that keep a service's hot data close: an in-process level that is fast on every hit
//! and keeps the popular entries when scans and one-off keys pass through.
//!
//! ```
//! use std::time::Duration;
//! use brisk_cache::{Cause, MemoryCache};
//!
//! let cache: MemoryCache<String, Vec<u8>> = MemoryCache::builder()
//!     .max_weight(64 << 20) // 64 MiB of values
//!     .weigher(|key: &String, value: &Vec<u8>| (key.len() + value.len()) as u32)
//!     .ttl(Duration::from_secs(600))
//!     .tti(Duration::from_secs(60))
//!     .eviction_listener(|key, _value, cause| {
//!         if cause == Cause::Size {
//!             // e.g. count evictions under memory pressure
//!             let _ = key;
//!         }
//!     })
//!     .build()?;
//! cache.insert("user:1".to_owned(), b"{\"name\":\"Ada\"}".to_vec());
//! assert!(cache.get(&"user:1".to_owned()).is_some());
//! # Ok::<(), brisk_cache::Error>(())
//! ```
//!
//! # What is in the box
//! - [`Cache`]: the async trait every level implements (get, insert with an optional TTL,
//!   remove, get_many, insert_many).
//! - [`MemoryCache`]: sharded; each shard a W-TinyLFU window (sized by hill climbing) and main
//!   space on `lru`; hits take a shared lock only; bounded by entries or by weight; TTL per cache or entry and TTI;
//!   eviction listener with the [`Cause`]; `invalidate_all`, `invalidate_if`, iteration; a
//!   background cleanup of expired entries.
//! - Loading: [`MemoryCache::get_with`] and [`MemoryCache::try_get_with`] run one load per key
//!   however many callers miss it at once (brisk-dedup's single-flight); a failing or
//!   panicking loader reaches every waiter and caches nothing.
//! - Metrics into brisk-metrics with [`MemoryCacheBuilder::metrics`].
//! - [`Tiered`]: memory in front of a [`Remote`] level (the Redis one), read through to a
//!   loader; either level may be left out. Its levels hold [`Stamped`] values, so that it can
//!   refresh early (XFetch), serve stale values while revalidating or when the loader fails
//!   or is slow (fail-safe, soft and hard timeouts), and agree on freshness across instances.
//! - [`WriteThrough`]: a tiered cache kept in step with a [`Source`] (the table behind it).
//! - [`WriteBehind`]: writes cached at once and written to the [`Source`] in coalesced
//!   batches, retried with backoff; a batch that fails for good reaches a failure callback
//!   and the metrics, and a full queue answers `Error::QueueFull` (bounded memory).
//! - [`Cached`]: an async function memoized by its arguments.
//!
//! # Feature flags
//! - `http`: `http::ConditionalLayer` (ETags from the handler or a body hash, 304 and 412
//!   answers, `Cache-Control` policies), `http::ResponseCacheLayer` (whole responses in a
//!   [`Tiered`] cache, shared by every instance with the Redis level), and `http::evaluate`,
//!   RFC 9110 §13's preconditions.
//! - `redis`: `redis::RedisCache`, a level in Redis shared by every instance (values
//!   serialized with postcard and compressed with brisk-compress, a circuit breaker, tags and
//!   prefix invalidation); `redis::Backplane`, which keeps every instance's memory level in
//!   step; loads run once across instances
//!   ([`TieredBuilder::load_across_instances`]).
//!
//! # Guarantees
//! - **Bounded.** The entry count (or weight) never exceeds the bound: each shard holds its
//!   share. An entry heavier than a shard can hold is refused and reported, never stored.
//! - **Every departure is told once.** Each entry that leaves (expired, evicted, refused,
//!   replaced, removed) reaches the eviction listener exactly once, after the shard's lock is
//!   released.
//! - **No expired value is returned**, whether or not it has been removed yet.
//! - **No panics on input**: invalid configuration is an [`Error::Config`] from `build`.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "redis")]
mod across;
#[cfg(feature = "redis")]
mod backplane;
#[cfg(feature = "redis")]
mod breaker;
mod cache;
mod cached;
mod catch;
mod epochs;
mod error;
mod flight;
mod fresh;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod jitter;
mod memory;
mod metrics;
mod recovery;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod sketch;
mod source;
mod tiered;
mod write_behind;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

pub use cache::{Cache, NoRemote, Remote, WithTtl, WriteFence};
pub use cached::Cached;
pub use error::{Error, Result};
pub use fresh::Stamped;
pub use memory::{Cause, Iter, MemoryCache, MemoryCacheBuilder};
pub use metrics::METRICS;
pub use source::{Source, WriteThrough};
pub use tiered::{Tiered, TieredBuilder};
pub use write_behind::{FailedBatch, WriteBehind, WriteBehindBuilder, WriteFailure};
