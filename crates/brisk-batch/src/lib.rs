//! Batching for async services: DataLoader batching for reads (kill N+1 queries) and write
//! batching for inserts and updates.
//!
//! A GraphQL resolver or a handler that loads the author of each of 50 posts sends 50 queries,
//! one per post: the N+1 problem. A [`Loader`] collects the keys asked for within a short
//! window (1 ms by default) into one call of a [`BatchLoad`] (`WHERE id = ANY($1)`), runs
//! batches concurrently, and hands each caller its own value. A [`WriteBatcher`] does the same
//! for writes: items submitted one by one become multi-row INSERTs, with a bounded queue.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use brisk_batch::{BatchLoad, Loaded, Loader};
//!
//! /// Stands in for `SELECT id, name FROM users WHERE id = ANY($1)`.
//! struct Users { queries: AtomicUsize }
//!
//! impl BatchLoad for Users {
//!     type Key = i64;
//!     type Value = String;
//!     type Error = std::convert::Infallible;
//!
//!     async fn load(&self, ids: &[i64]) -> Result<Loaded<i64, String>, Self::Error> {
//!         self.queries.fetch_add(1, Ordering::Relaxed);
//!         Ok(ids.iter().filter(|&&id| id < 100).map(|&id| (id, format!("user {id}"))).collect())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), brisk_batch::Error> {
//! let users = Loader::new(Users { queries: AtomicUsize::new(0) });
//! let (a, b, missing) = tokio::join!(users.load(1), users.load(2), users.load(404));
//! assert_eq!((a?, b?, missing?), (Some("user 1".into()), Some("user 2".into()), None));
//! assert_eq!(users.batch_fn().queries.load(Ordering::Relaxed), 1, "one query for three loads");
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//! - Every caller gets its own key's outcome: a value, `None` for a key the batch function
//!   did not return, that key's error, or the whole batch's error.
//! - Batch functions and writes run in tasks of their own: a caller that gives up never
//!   cancels a batch for the others, and a panic reaches the batch's callers as
//!   [`Error::Panicked`].
//! - A [`WriteBatcher`] never drops an item it accepted: [`shutdown`](WriteBatcher::shutdown)
//!   (and dropping the last handle) writes everything queued.
//!
//! # Feature flags
//! - `dataloader`: [`FromBatchFn`], which runs an existing `dataloader::BatchFn` (dataloader
//!   0.18) on brisk's [`Loader`] unchanged.
//!
//! # Metrics
//! [`LoaderBuilder::metrics`] and [`WriteBatcherBuilder::metrics`] report loads, cache hits, batches and
//! their sizes, retries and failures to any [`brisk_metrics::Recorder`].
//!
#![cfg_attr(
    feature = "dataloader",
    doc = "[`FromBatchFn`]: crate::dataloader::FromBatchFn"
)]
#![cfg_attr(
    not(feature = "dataloader"),
    doc = "[`FromBatchFn`]: #feature-flags \"needs the dataloader feature\""
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

#[cfg(feature = "dataloader")]
mod compat;
mod error;
mod load;
mod loader;
mod metrics;
mod write;

/// The `dataloader` crate's `BatchFn`s run on brisk's [`Loader`] (feature `dataloader`).
#[cfg(feature = "dataloader")]
#[cfg_attr(docsrs, doc(cfg(feature = "dataloader")))]
pub mod dataloader {
    pub use crate::compat::FromBatchFn;
}
pub use crate::metrics::METRICS;
pub use crate::{
    error::{Error, Result},
    load::{BatchLoad, Cache, Loaded},
    loader::{Loader, LoaderBuilder},
    write::{BatchWrite, Reservation, Retry, WriteBatcher, WriteBatcherBuilder},
};
