//! The response cache's key and storage decisions, reachable from the `response_cache_key`
//! fuzz target (hidden, for it alone: nothing here is a stable API).

use std::time::Duration;

use http::{HeaderMap, HeaderName, StatusCode, Uri};

use super::{key, response_cache};

/// The longest key stored, in bytes.
pub const MAX_KEY: usize = key::MAX_KEY;

/// The request's host as the cache reads it: `Ok(None)` without one, `Err(())` when it is
/// no authority (the request then passes).
#[allow(clippy::result_unit_err)]
pub fn host(uri: &Uri, headers: &HeaderMap) -> Result<Option<String>, ()> {
    key::host(uri, headers).map_err(|_| ())
}

/// The request's base key (host, path and query), `None` when it has none.
pub fn base_key(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    key::base_key(uri, headers).ok()
}

/// The key of the variant of `base` that `headers` select on `names` (sorted, deduplicated),
/// `None` past [`MAX_KEY`].
pub fn variant_key(base: &str, names: &[HeaderName], headers: &HeaderMap) -> Option<String> {
    key::variant_key(base, names, headers, &super::response_cache::CREDENTIALS, 0).ok()
}

/// Whether a response to a request with `request` headers is stored, with the layer's
/// default credential headers and a 1 MiB `max_body`: its lifetime and the request headers
/// it varies on.
pub fn storable(
    status: StatusCode,
    response: &HeaderMap,
    request: &HeaderMap,
    body_length: Option<u64>,
    fresh_for: Option<Duration>,
) -> Option<(Duration, Vec<HeaderName>)> {
    let credentials: Vec<HeaderName> = response_cache::CREDENTIALS
        .into_iter()
        .filter(|name| request.contains_key(name))
        .collect();
    response_cache::storable(
        1 << 20,
        fresh_for,
        &credentials,
        status,
        response,
        body_length,
    )
}
