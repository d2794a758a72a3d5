//! The response cache's key and storage decisions on any request target, `Host`, varied
//! header values and response headers: no panic; a key is never made from a `Host` that is
//! no authority, nor longer than the bound; two requests that differ in host, path and query
//! or in a varied header's values never share a key; and a response stored for a request
//! with credentials says any user may have it or varies on them, with a lifetime of its own.
#![no_main]

use brisk_cache::http::{
    directives,
    fuzzing::{MAX_KEY, base_key, host, storable, variant_key},
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use libfuzzer_sys::fuzz_target;

const VARIED: [HeaderName; 2] = [header::ACCEPT_LANGUAGE, header::COOKIE];

/// A request as the key sees it, read from `parts`: target, host, then values of the varied
/// headers in turn.
struct Asked {
    uri: Uri,
    headers: HeaderMap,
}

fn asked(parts: &[&[u8]]) -> Option<Asked> {
    let (target, rest) = parts.split_first()?;
    let uri = Uri::try_from(*target).ok()?;
    let mut headers = HeaderMap::new();
    let (host_value, values) = rest.split_first()?;
    // An empty part is no `Host`; a part starting with 0xFE is two.
    match host_value.split_first() {
        None => {}
        Some((0xFE, twice)) => {
            for _ in 0..2 {
                headers.append(header::HOST, HeaderValue::from_bytes(twice).ok()?);
            }
        }
        Some(_) => {
            headers.insert(header::HOST, HeaderValue::from_bytes(host_value).ok()?);
        }
    }
    for (at, value) in values.iter().enumerate() {
        headers.append(
            VARIED[at % VARIED.len()].clone(),
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    Some(Asked { uri, headers })
}

/// What tells two requests apart: host as sent, path and query, the varied values in order.
fn identity(asked: &Asked) -> (Option<Vec<u8>>, String, Vec<Vec<Vec<u8>>>) {
    let host = asked
        .uri
        .authority()
        .map(|authority| authority.as_str().as_bytes().to_vec())
        .or_else(|| {
            asked
                .headers
                .get(header::HOST)
                .map(|value| value.as_bytes().to_vec())
        });
    let path = asked
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let path = if path.is_empty() {
        "/".to_owned()
    } else {
        path
    };
    let values = VARIED
        .iter()
        .map(|name| {
            asked
                .headers
                .get_all(name)
                .iter()
                .map(|value| value.as_bytes().to_vec())
                .collect()
        })
        .collect();
    (host, path, values)
}

fn key(asked: &Asked) -> Option<String> {
    let base = base_key(&asked.uri, &asked.headers)?;
    let host = host(&asked.uri, &asked.headers).expect("a key from a valid host only");
    if let Some(host) = &host {
        assert!(!host.is_empty());
        assert!(!host.bytes().any(|byte| matches!(
            byte,
            b'/' | b'?' | b'#' | b'@' | b' ' | b'\t' | b'\\' | b'%'
        ) || !byte.is_ascii()));
    }
    assert!(base.len() <= MAX_KEY);
    let mut names = VARIED.to_vec();
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let variant = variant_key(&base, &names, &asked.headers)?;
    assert!(variant.len() <= MAX_KEY);
    assert!(variant.starts_with(&base));
    Some(variant)
}

fuzz_target!(|input: &[u8]| {
    let Some((&selector, rest)) = input.split_first() else {
        return;
    };
    // Two requests, split on 0xFD; their parts on 0xFF.
    let mut halves = rest.splitn(2, |&byte| byte == 0xFD);
    let first: Vec<&[u8]> = halves
        .next()
        .unwrap_or_default()
        .split(|&byte| byte == 0xFF)
        .collect();
    let second: Vec<&[u8]> = halves
        .next()
        .unwrap_or_default()
        .split(|&byte| byte == 0xFF)
        .collect();
    let (a, b) = (asked(&first), asked(&second));
    let keys = [a.as_ref().and_then(key), b.as_ref().and_then(key)];
    if let (Some(a), Some(b), [Some(key_a), Some(key_b)]) = (&a, &b, &keys) {
        assert_eq!(
            key_a == key_b,
            identity(a) == identity(b),
            "{key_a:?} / {key_b:?}"
        );
    }

    // The second half's parts as response headers to the first request.
    let Some(request) = a else { return };
    let mut response = HeaderMap::new();
    const NAMES: [HeaderName; 6] = [
        header::CACHE_CONTROL,
        header::EXPIRES,
        header::DATE,
        header::VARY,
        header::SET_COOKIE,
        header::CACHE_CONTROL,
    ];
    for (at, value) in second.iter().enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            response.append(NAMES[at % NAMES.len()].clone(), value);
        }
    }
    let status = StatusCode::from_u16(100 + u16::from(selector) * 2).unwrap_or(StatusCode::OK);
    let fresh_for = (selector & 1 != 0).then(|| std::time::Duration::from_secs(60));
    let length = (selector & 2 == 0).then_some(u64::from(selector) << 12);
    let Some((lifetime, vary)) = storable(status, &response, &request.headers, length, fresh_for)
    else {
        return;
    };
    assert!(!lifetime.is_zero());
    assert!(!response.contains_key(header::SET_COOKIE));
    let names: Vec<String> = response
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|text| directives(text).map(|directive| directive.name.into_owned()))
        .collect();
    assert!(
        !names
            .iter()
            .any(|d| d == "no-store" || d == "private" || d == "no-cache")
    );
    if request.headers.contains_key(header::COOKIE)
        || request.headers.contains_key(header::AUTHORIZATION)
    {
        let shared = names.iter().any(|d| d == "public" || d == "s-maxage");
        let varies = request
            .headers
            .contains_key(header::AUTHORIZATION)
            .then_some(header::AUTHORIZATION)
            .into_iter()
            .chain(
                request
                    .headers
                    .contains_key(header::COOKIE)
                    .then_some(header::COOKIE),
            )
            .all(|name| vary.contains(&name));
        assert!(shared || varies, "a personal response stored: {response:?}");
    }
});
