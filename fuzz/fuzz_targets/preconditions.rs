//! Any `If-Match`, `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since` values: the
//! RFC 9110 §13.2.2 evaluation answers without panicking, and a 304 is only ever the answer
//! to a GET or HEAD.
#![no_main]

use brisk_cache::http::{EntityTag, Precondition, Validators, evaluate};
use http::{HeaderMap, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 4] = [
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    // The rest is split on 0xFF bytes into header values, assigned to the names in turn.
    let mut headers = HeaderMap::new();
    for (at, value) in rest.split(|&byte| byte == 0xFF).enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(NAMES[at % NAMES.len()], value);
        }
    }
    let method = match selector % 4 {
        0 => Method::GET,
        1 => Method::HEAD,
        2 => Method::POST,
        _ => Method::PUT,
    };
    let tag = EntityTag::weak("v1").expect("a valid tag");
    let current = Validators {
        etag: (selector & 4 != 0).then_some(&tag),
        last_modified: (selector & 8 != 0).then_some(std::time::UNIX_EPOCH),
    };
    let exists = selector & 16 != 0;
    let answer = evaluate(&method, &headers, exists.then_some(&current));
    if answer == Precondition::NotModified {
        assert!(method == Method::GET || method == Method::HEAD);
    }
});
