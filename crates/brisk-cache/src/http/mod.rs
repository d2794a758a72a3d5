//! HTTP caching (feature `http`): entity tags and conditional requests per RFC 9110 §13,
//! `Cache-Control` policies, and [`ConditionalLayer`], a tower layer that gives responses
//! validators and answers conditional requests with 304 and 412.
//!
//! ```
//! use brisk_cache::http::{EntityTag, Precondition, Validators, evaluate};
//! use http::{HeaderMap, HeaderValue, Method, header::IF_NONE_MATCH};
//!
//! let current = EntityTag::strong("v42")?;
//! let mut headers = HeaderMap::new();
//! headers.insert(IF_NONE_MATCH, HeaderValue::from_static(r#"W/"v41", "v42""#));
//! let validators = Validators { etag: Some(&current), last_modified: None };
//! // The client holds the current representation: answer 304, no body.
//! assert_eq!(evaluate(&Method::GET, &headers, Some(&validators)), Precondition::NotModified);
//! # Ok::<(), brisk_cache::http::InvalidEntityTag>(())
//! ```

mod body;
mod cache_control;
mod directives;
mod etag;
#[doc(hidden)]
pub mod fuzzing;
mod key;
mod layer;
mod precondition;
mod response_cache;

pub use body::CacheBody;
pub use cache_control::CacheControl;
pub use directives::{Directive, directives};
pub use etag::{EntityTag, EntityTagRef, InvalidEntityTag};
pub use layer::{Conditional, ConditionalLayer, ConditionalLayerBuilder};
pub use precondition::{Precondition, Validators, evaluate, http_date};
pub use response_cache::{
    CachedResponse, ResponseCache, ResponseCacheLayer, ResponseCacheLayerBuilder, X_CACHE,
};

/// An error from a response body: the one alias of every brisk crate, from brisk-metrics.
use brisk_metrics::BoxError;
