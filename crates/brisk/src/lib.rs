//! brisk makes Rust backend services fast: each performance problem every service hits is
//! solved by one small crate, and this facade re-exports them behind features of the same name.
//!
//! ```toml
//! [dependencies]
//! brisk = { version = "0.1", features = ["metrics", "stream-axum", "pool-postgres"] }
//! ```
//!
//! ```
//! # #[cfg(all(feature = "metrics", feature = "stream"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use brisk::metrics::{Key, Recorder, Registry, Unit};
//! use brisk::stream::{Cursor, Cursors, Scope};
//!
//! // One registry for the service; every brisk crate records into it.
//! let registry = Registry::new();
//! let cursors = Cursors::builder()
//!     .key(1, *b"a 32-byte secret from the config")
//!     .metrics(&registry, "orders")
//!     .build()?;
//! let latency = registry.histogram(&Key::new("page_seconds")?, Unit::Seconds);
//! let timer = latency.start_timer();
//! let next = cursors.encode(&Scope::new("orders by id"), &Cursor::after(42_i64))?;
//! drop(timer);
//! let text = registry.prometheus_text(); // serve at /metrics
//! assert!(text.contains("brisk_stream_cursors_issued_total{name=\"orders\"} 1"));
//! # let _ = next;
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "metrics", feature = "stream")))]
//! # fn main() {}
//! ```
//!
//! # Feature flags
//! No feature is on by default. Each crate has a feature of its own name, and each of its
//! optional parts a feature `<crate>-<part>` that turns on the crate too; `full` enables all.
//! Each crate also works on its own from crates.io.
//!
//! | feature | crate | solves | parts |
//! |---|---|---|---|
//! | `batch` | [`brisk-batch`](https://docs.rs/brisk-batch) | DataLoader batching (N+1 queries become one per batch, batches run concurrently) and write batching with backpressure | `batch-dataloader` (run `dataloader` `BatchFn`s) |
//! | `cache` | [`brisk-cache`](https://docs.rs/brisk-cache) | an in-process cache whose hits take a shared lock only, with W-TinyLFU admission, TTL/TTI, a tiered cache over Redis, caching patterns and HTTP caching | `cache-redis`, `cache-http` |
//! | `compress` | [`brisk-compress`](https://docs.rs/brisk-compress) | gzip/brotli/zstd/deflate negotiated per RFC 9110 with size and type thresholds, streams that flush when idle, bomb-safe decoding, framed cache values | `compress-tower` (layers) |
//! | `dedup` | [`brisk-dedup`](https://docs.rs/brisk-dedup) | single-flight: concurrent identical requests share one execution, in one process or across instances | `dedup-redis` |
//! | `metrics` | [`brisk-metrics`](https://docs.rs/brisk-metrics) | latency histograms, counters, Prometheus text, performance budgets | `metrics-tower` (`LatencyLayer`), `metrics-rs` (to the `metrics` facade), `metrics-process` (process CPU, memory, fds), `metrics-runtime` (tokio runtime gauges) |
//! | `pool` | [`brisk-pool`](https://docs.rs/brisk-pool) | connection pools for diesel-async PostgreSQL and SQLite and for Redis, validating only idle connections | `pool-postgres`, `pool-postgres-rustls` (TLS), `pool-sqlite`, `pool-redis` |
//! | `stream` | [`brisk-stream`](https://docs.rs/brisk-stream) | keyset pagination with signed cursors, row streams and JSON/NDJSON/CSV encoding in bounded memory, field selection, bounded parallelism | `stream-csv`, `stream-diesel`, `stream-diesel-async`, `stream-axum` |
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

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
