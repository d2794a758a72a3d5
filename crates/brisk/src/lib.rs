//! brisk makes Rust backend services fast: each performance problem every service hits is
//! solved by one small crate, and this facade re-exports them behind features of the same name.
//!
//! ```toml
//! [dependencies]
//! brisk = { version = "0.1", features = ["full"] }
//! ```
//!
//! # Feature flags
//! No feature is on by default. `full` enables every crate below; each crate also works on its
//! own from crates.io.
//!
//! | feature | crate | solves |
//! |---|---|---|
//! | `batch` | [`brisk-batch`](https://docs.rs/brisk-batch) | DataLoader batching (N+1 queries become one per batch, batches run concurrently) and write batching with backpressure |
//! | `cache` | [`brisk-cache`](https://docs.rs/brisk-cache) | an in-process cache whose hits take a shared lock only, with W-TinyLFU admission (scans do not flush the hot set), TTL/TTI and an eviction listener |
//! | `compress` | [`brisk-compress`](https://docs.rs/brisk-compress) | gzip/brotli/zstd/deflate negotiated per RFC 9110 with size and type thresholds, streams that flush when idle, tower layers (its own feature `tower`) with bomb-safe request decoding, framed cache values |
//! | `dedup` | [`brisk-dedup`](https://docs.rs/brisk-dedup) | single-flight: concurrent identical requests share one execution, in one process or across instances through Redis (its own feature `redis`) |
//! | `metrics` | [`brisk-metrics`](https://docs.rs/brisk-metrics) | latency histograms, counters, Prometheus text, performance budgets |
//! | `pool` | [`brisk-pool`](https://docs.rs/brisk-pool) | connection pools for diesel-async PostgreSQL and SQLite and for Redis (its own features `postgres`, `sqlite`, `redis`), validating only idle connections |
//! | `stream` | [`brisk-stream`](https://docs.rs/brisk-stream) | signed, query-bound pagination cursors; JSON/NDJSON/CSV encoding of row streams in bounded memory, where a failure aborts the body; field selection; bounded parallelism |
//!
//! (Crates appear in this table as they are released.)
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "batch")]
#[cfg_attr(docsrs, doc(cfg(feature = "batch")))]
pub use brisk_batch as batch;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use brisk_cache as cache;
#[cfg(feature = "compress")]
#[cfg_attr(docsrs, doc(cfg(feature = "compress")))]
pub use brisk_compress as compress;
#[cfg(feature = "dedup")]
#[cfg_attr(docsrs, doc(cfg(feature = "dedup")))]
pub use brisk_dedup as dedup;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use brisk_metrics as metrics;
#[cfg(feature = "pool")]
#[cfg_attr(docsrs, doc(cfg(feature = "pool")))]
pub use brisk_pool as pool;
#[cfg(feature = "stream")]
#[cfg_attr(docsrs, doc(cfg(feature = "stream")))]
pub use brisk_stream as stream;
