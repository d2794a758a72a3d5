//! Single-flight: concurrent identical requests share one execution.
//!
//! When a hot key expires or a popular page is requested by a hundred clients at once, each
//! request would otherwise hit the database with the same query. A [`SingleFlight`] group runs
//! the work once per key and hands every concurrent caller a clone of the result;
//! [`RedisFlight`] does the same across processes that share one Redis.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use brisk_dedup::SingleFlight;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), brisk_dedup::Error<String>> {
//! let group: SingleFlight<String, String, String> = SingleFlight::new();
//! let queries = AtomicUsize::new(0);
//! let load = || async {
//!     queries.fetch_add(1, Ordering::Relaxed);
//!     tokio::task::yield_now().await; // a database round trip
//!     Ok::<_, String>("Ada".to_owned())
//! };
//! let (a, b, c) = tokio::join!(
//!     group.run("user:1", load),
//!     group.run("user:1", load),
//!     group.run("user:1", load),
//! );
//! assert_eq!((a?, b?, c?), ("Ada".into(), "Ada".into(), "Ada".into()));
//! assert_eq!(queries.load(Ordering::Relaxed), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//! - At most one execution per key at a time, in one group; across instances with
//!   [`RedisFlight`], while the lease holds (see its docs for what happens when it expires,
//!   is lost, or its holder is cancelled).
//! - Nothing is retained after an execution completes: this is not a cache. Put brisk-cache
//!   (or any cache) in front, and use single-flight for the misses.
//! - The work runs inside the leading caller's task. If that caller is dropped, a waiting
//!   caller takes over; if it panics, every caller gets [`Error::Panicked`].
//!
//! # Feature flags
//! - `redis`: [`RedisFlight`], single-flight across processes through a Redis lease per key.
//!
//! # Metrics
//! [`SingleFlightBuilder::metrics`] reports executions, coalesced callers, handovers, panics and wait
//! timeouts to any [`brisk_metrics::Recorder`].
//!
#![cfg_attr(feature = "redis", doc = "[`RedisFlight`]: crate::redis::RedisFlight")]
#![cfg_attr(
    not(feature = "redis"),
    doc = "[`RedisFlight`]: #feature-flags \"needs the redis feature\""
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

mod catch;
mod error;
mod group;
mod metrics;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;

pub use crate::metrics::METRICS;
pub use crate::{
    error::{Error, Result},
    group::{SingleFlight, SingleFlightBuilder},
};
