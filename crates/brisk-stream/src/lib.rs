//! Large results without large memory: stream rows out as they come, page with signed cursors
//! instead of offsets, let clients pick fields, and run independent work with a bounded number
//! in flight.
//!
//! ```
//! use brisk_stream::{Cursor, Cursors, Encoder, Fields, Scope};
//! use futures_util::{StreamExt, stream};
//!
//! #[derive(serde::Serialize)]
//! struct Product { id: i64, name: String, price_cents: i64 }
//! const OFFERED: &[&str] = &["id", "name", "price_cents"];
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // The next page starts after the last row this one sent, by (price, id).
//! let cursors = Cursors::builder().key(1, *b"a 32-byte secret from the config").build()?;
//! let scope = Scope::new("products by price_cents, id");
//! let next = cursors.encode(&scope, &Cursor::after((1999_i64, 7_i64)))?;
//! let position: Cursor<(i64, i64)> = cursors.decode(&scope, &next)?;
//! assert_eq!(position.key, (1999, 7));
//!
//! // `?fields=id,name`, streamed as a JSON array in chunks of bounded size.
//! let rows = stream::iter([Product { id: 7, name: "Lamp".into(), price_cents: 1999 }])
//!     .map(Ok::<_, std::io::Error>);
//! let fields = Fields::parse("id,name", OFFERED)?;
//! let body = Encoder::default().json_array(rows).select(fields);
//! let chunks: Vec<_> = body.collect().await;
//! assert_eq!(chunks.len(), 1);
//! assert_eq!(&chunks[0].as_ref().unwrap()[..], br#"[{"id":7,"name":"Lamp"}]"#);
//! # Ok::<(), brisk_stream::Error>(())
//! # }).unwrap();
//! ```
//!
//! # What is here
//! - [`Cursors`]: opaque, URL-safe cursors, signed (HMAC-SHA-256, key rotation by key id),
//!   bound to their query's sort order and filter ([`Scope`]), with an optional time to live;
//!   every refusal is typed ([`CursorRejection`]) and counted.
//! - [`Encoder`]: JSON array (optionally in an envelope with a trailer such as the next
//!   cursor), NDJSON and CSV from any stream of `Serialize` rows, in chunks of bounded size. A
//!   failure mid-stream ends the byte stream with an error, which makes a server abort the
//!   response: a client never mistakes a truncated body for a complete one. CSV cells that a
//!   spreadsheet would run as formulas are neutralised by default.
//! - [`Fields`]: `?fields=id,name` checked against what the endpoint offers and applied while
//!   each row is serialized, to every record in it (through `Option`, newtypes, enum variants
//!   and sequences).
//! - [`Parallel`]: at most N jobs in flight over a stream or a list, ordered or unordered; the
//!   first error ends the work and cancels the rest.
//!
//! # Feature flags
//! - `csv`: [`Encoder::csv`].
//! - `axum`: encoded streams and [`Error`] are axum responses ([`axum`] module).
//!
//! # Guarantees
//! - **Memory**: an encoder holds one chunk plus one row, whatever the number of rows; a
//!   cursor longer than its codec's `max_len` is refused before it is decoded; a field list can
//!   only hold the fields an endpoint offers.
//! - **Cancellation**: dropping an encoded stream drops the row stream; dropping a
//!   [`Parallel`] stream or future cancels its jobs in flight.
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;
mod cursor;
#[cfg(feature = "diesel")]
#[cfg_attr(docsrs, doc(cfg(feature = "diesel")))]
pub mod diesel;
mod encode;
mod error;
mod fields;
mod keyset;
mod metrics;
#[cfg(feature = "csv")]
mod neutralise;
mod parallel;
mod rows;

/// The README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;

/// docs/streaming.md's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/streaming.md")]
struct GuideDoctest;

pub use cursor::{Cursor, Cursors, CursorsBuilder, Direction, Scope};
pub use encode::{Encode, Encoder, EncoderBuilder};
pub use error::{BoxError, CursorRejection, Error, Result};
pub use fields::{Fields, Selected};
pub use keyset::{
    KeyValue, Keyset, KeysetBuilder, Nulls, OffsetPage, OffsetPaging, OffsetPagingBuilder,
    OffsetPlan, Page, Placeholders, Plan, SortOrder,
};
pub use metrics::METRICS;
pub use parallel::{Parallel, ParallelBuilder};
pub use rows::KeysetStream;
