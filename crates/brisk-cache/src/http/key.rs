//! The response cache's keys: a request's host (validated), path and query, and the values of
//! the request headers a response varies on, encoded so that no two requests share a key
//! unless they ask for the same resource and variant.
//!
//! - Base key: `GET <host> <path-and-query>`. The host is a validated authority (no space),
//!   the path and query come from a parsed URI (no space, no control character): the space
//!   after the host ends it, whatever the path holds. A request without any host (HTTP/1.0)
//!   has an empty one.
//! - Variant key: the base key, then `\n@` and the URL's generation of variants in hex (a
//!   new one each time its `Vary` list is stored, so that variants stored before an unsafe
//!   request invalidated the URL are never read again), then for each varied header name
//!   (sorted) `\n<name>:<count>`
//!   and, for each of its values in order, `,` and the value with every byte outside
//!   `!`..=`~`, and `%` and `,` themselves, written `%XX`. Names cannot hold `\n`, `:` or `,`
//!   and escaped values cannot hold `,` or `\n`, so the key reads back one way only: `a,b` in
//!   one header line and `a` + `b` in two are `1,a%2Cb` and `2,a,b`; an absent header is `0`
//!   and an empty one `1,`.
//! - Forwarding headers a handler may read its host or scheme from (`Forwarded`,
//!   `X-Forwarded-Host`, `-Port`, `-Prefix`, `-Proto`) are part of the base key, encoded as a
//!   varied header is: a client that sends its own gets an entry of its own, never another
//!   URL's (behind a proxy that sets them, they are the same for every request to a host).
//! - The values of credential headers (`Authorization`, `Cookie`, those the layer names)
//!   are keyed by their XXH3-128 hash, written `%H` and 32 hex digits (`%H` is no escape a
//!   value can produce), never in clear: keys reach Redis and error messages.
//! - Both are at most [`MAX_KEY`] bytes; a longer one is no key (the request passes).

use http::{HeaderMap, HeaderName, Uri, header::HOST, uri::Authority};

/// The longest key (bytes) the response cache stores a response under: a request whose key
/// (host, path, query and varied header values, encoded) is longer passes to the handler.
pub(crate) const MAX_KEY: usize = 8192;

/// Why a request has no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoKey {
    /// Its `Host` (or the authority of an absolute-form target) is not an authority, there
    /// are two of them, or the two disagree.
    Host,
    /// The key would be longer than [`MAX_KEY`].
    TooLong,
}

/// The request's host, as sent: from the absolute-form target's authority and the `Host`
/// header, which must be the same when both are there (RFC 9112 §3.2.2 lets the server
/// ignore `Host` there, but the handler may read it). `Ok(None)`: neither is there
/// (HTTP/1.0).
///
/// A host is an authority without user information: a DNS name or IPv4 address (ASCII
/// letters, digits, `-`, `.`, `_`) or a bracketed IPv6 literal (hex digits, `:`, `.`),
/// then an optional `:port` of 1 to 5 digits up to 65535. A default port is kept as sent
/// (`site` and `site:80` are two keys: the layer does not know the scheme), and so is its
/// case: `SITE` and `site` are two keys, so that a handler that writes the host it was sent
/// into its page (links, redirects) never hands one client's spelling to another.
pub(crate) fn host(uri: &Uri, headers: &HeaderMap) -> Result<Option<String>, NoKey> {
    let mut hosts = headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(NoKey::Host);
    }
    let header = header
        .map(|value| authority(value.as_bytes()).ok_or(NoKey::Host))
        .transpose()?;
    let target = uri
        .authority()
        .map(|target| authority(target.as_str().as_bytes()).ok_or(NoKey::Host))
        .transpose()?;
    match (target, header) {
        (Some(target), Some(header)) if target != header => Err(NoKey::Host),
        (Some(host), _) | (None, Some(host)) => Ok(Some(host)),
        (None, None) => Ok(None),
    }
}

/// `text` if it is an authority as [`host`] describes.
fn authority(text: &[u8]) -> Option<String> {
    let (name, port) = match text.first()? {
        b'[' => {
            let close = text.iter().position(|&byte| byte == b']')?;
            let literal = &text[1..close];
            if literal.is_empty()
                || !literal
                    .iter()
                    .all(|&byte| byte.is_ascii_hexdigit() || byte == b':' || byte == b'.')
            {
                return None;
            }
            (&text[..=close], &text[close + 1..])
        }
        _ => {
            let colon = text.iter().position(|&byte| byte == b':');
            let name = &text[..colon.unwrap_or(text.len())];
            if name.is_empty()
                || !name
                    .iter()
                    .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_'))
            {
                return None;
            }
            (name, &text[name.len()..])
        }
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(b":")?;
        if digits.is_empty()
            || digits.len() > 5
            || !digits.iter().all(u8::is_ascii_digit)
            || std::str::from_utf8(digits).ok()?.parse::<u32>().ok()? > 65535
        {
            return None;
        }
    }
    debug_assert!(!name.is_empty());
    // The `http` crate's reading agrees (no user information, no path).
    let parsed = Authority::try_from(text).ok()?;
    if parsed.as_str().len() != text.len() {
        return None;
    }
    Some(parsed.as_str().to_owned())
}

/// Request headers a handler may take its host, port, path prefix or scheme from: keyed
/// (sorted, as varied headers are), so that no client's value reaches another's answer.
pub(crate) const FORWARDING: [HeaderName; 5] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-proto"),
];

/// The request's base key (see the module's docs); the method is GET's for GET and HEAD.
pub(crate) fn base_key(uri: &Uri, headers: &HeaderMap) -> Result<String, NoKey> {
    let host = host(uri, headers)?.unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |path| path.as_str());
    let path = if path.is_empty() { "/" } else { path };
    let length = 4 + host.len() + 1 + path.len();
    if length > MAX_KEY {
        return Err(NoKey::TooLong);
    }
    let mut key = String::with_capacity(length);
    key.push_str("GET ");
    key.push_str(&host);
    key.push(' ');
    key.push_str(path);
    for name in &FORWARDING {
        if headers.contains_key(name) {
            push_values(&mut key, name, headers, false)?;
        }
    }
    Ok(key)
}

/// Appends `\n<name>:<count>` and each value of `name` in `headers` (see the module's docs;
/// `hashed`: by hash).
fn push_values(
    key: &mut String,
    name: &HeaderName,
    headers: &HeaderMap,
    hashed: bool,
) -> Result<(), NoKey> {
    use std::fmt::Write;

    let values = headers.get_all(name);
    let _ = write!(key, "\n{}:{}", name.as_str(), values.iter().count());
    for value in values {
        key.push(',');
        if hashed {
            let hash = xxhash_rust::xxh3::xxh3_128(value.as_bytes());
            let _ = write!(key, "%H{hash:032x}");
        } else {
            for &byte in value.as_bytes() {
                if byte.is_ascii_graphic() && byte != b'%' && byte != b',' {
                    key.push(char::from(byte));
                } else {
                    let _ = write!(key, "%{byte:02X}");
                }
            }
        }
        if key.len() > MAX_KEY {
            return Err(NoKey::TooLong);
        }
    }
    if key.len() > MAX_KEY {
        return Err(NoKey::TooLong);
    }
    Ok(())
}

/// The key of the variant of `base` that `headers` select on `names` (sorted, deduplicated
/// header names, as `Vary` is read) in the URL's `generation` of variants (`\n@` and its
/// hex: `@` is in no header name); the values of `credentials` by hash.
pub(crate) fn variant_key(
    base: &str,
    names: &[HeaderName],
    headers: &HeaderMap,
    credentials: &[HeaderName],
    generation: u64,
) -> Result<String, NoKey> {
    use std::fmt::Write;

    let mut key = String::from(base);
    let _ = write!(key, "\n@{generation:x}");
    for name in names {
        push_values(&mut key, name, headers, credentials.contains(name))?;
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hosts_are_authorities_or_no_key() {
        let uri: Uri = "/x".parse().unwrap();
        let host_of = |value: &[u8]| host(&uri, &headers(&[("host", value)]));
        assert_eq!(
            host_of(b"Shop.Example"),
            Ok(Some("Shop.Example".to_owned()))
        );
        assert_eq!(
            host_of(b"shop.example:8080"),
            Ok(Some("shop.example:8080".to_owned()))
        );
        assert_eq!(host_of(b"[::1]:443"), Ok(Some("[::1]:443".to_owned())));
        assert_eq!(host_of(b"10.0.0.1"), Ok(Some("10.0.0.1".to_owned())));
        for bad in [
            &b""[..],
            b"site/static",
            b"site?x",
            b"site#x",
            b"user@site",
            b"site x",
            b"site:",
            b"site:99999",
            b"site:8x",
            b"site:80:80",
            b"[::1",
            b"[]",
            b"[::1]x",
            b"[::g]",
            b"s\xc3\xa9",
            b"%73ite",
            b":80",
        ] {
            assert_eq!(
                host_of(bad),
                Err(NoKey::Host),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(host(&uri, &HeaderMap::new()), Ok(None));
        let absolute: Uri = "http://site/x".parse().unwrap();
        assert_eq!(
            host(&absolute, &HeaderMap::new()),
            Ok(Some("site".to_owned()))
        );
        assert_eq!(
            host(&absolute, &headers(&[("host", b"site")])),
            Ok(Some("site".to_owned()))
        );
        assert_eq!(
            host(&absolute, &headers(&[("host", b"SITE")])),
            Err(NoKey::Host)
        );
        assert_eq!(
            host(&absolute, &headers(&[("host", b"other")])),
            Err(NoKey::Host)
        );
        let userinfo: Uri = "http://user@site/x".parse().unwrap();
        assert_eq!(host(&userinfo, &HeaderMap::new()), Err(NoKey::Host));
        assert_eq!(
            host(&uri, &headers(&[("host", b"a"), ("host", b"a")])),
            Err(NoKey::Host)
        );
    }

    #[test]
    fn keys_are_bounded() {
        let long: Uri = format!("/{}", "x".repeat(MAX_KEY)).parse().unwrap();
        assert_eq!(base_key(&long, &HeaderMap::new()), Err(NoKey::TooLong));
        let base = base_key(&"/x".parse().unwrap(), &HeaderMap::new()).unwrap();
        assert_eq!(base, "GET  /x");
        let huge = headers(&[("accept-language", &vec![b'a'; MAX_KEY][..])]);
        assert_eq!(
            variant_key(
                &base,
                &[HeaderName::from_static("accept-language")],
                &huge,
                &[],
                0
            ),
            Err(NoKey::TooLong)
        );
    }

    /// A request as far as keys go: host, path and query, and values of two headers.
    #[derive(Debug, Clone)]
    struct Asked {
        host: Option<String>,
        path: String,
        first: Vec<Vec<u8>>,
        second: Vec<Vec<u8>>,
    }

    fn value() -> impl Strategy<Value = Vec<u8>> {
        // Header-value bytes: tab, visible ASCII, space, obs-text; separators likely.
        proptest::collection::vec(
            prop_oneof![
                3 => prop::sample::select(b",:%\n \t=;".to_vec())
                    .prop_filter("no newline in a header value", |byte| *byte != b'\n'),
                3 => 0x20u8..0x7f,
                1 => 0x80u8..=0xff,
            ],
            0..6,
        )
    }

    fn asked() -> impl Strategy<Value = Asked> {
        (
            proptest::option::of("[a-cA-C.:/?@ \\[\\]0-9-]{0,8}"),
            "/[a-c/ %?=&.]{0,8}",
            proptest::collection::vec(value(), 0..3),
            proptest::collection::vec(value(), 0..3),
        )
            .prop_map(|(host, path, first, second)| Asked {
                host,
                path: path.replace(' ', "%20"),
                first,
                second,
            })
    }

    /// Host, path and query, and the two headers' values.
    type Identity = (String, String, Vec<Vec<u8>>, Vec<Vec<u8>>);

    const FIRST: HeaderName = HeaderName::from_static("accept-language");
    const SECOND: HeaderName = HeaderName::from_static("x-other");

    impl Asked {
        fn parts(&self) -> Option<(Uri, HeaderMap)> {
            let uri: Uri = self.path.parse().ok()?;
            let mut map = HeaderMap::new();
            if let Some(host) = &self.host {
                map.insert(HOST, HeaderValue::from_str(host).ok()?);
            }
            for (name, values) in [(FIRST, &self.first), (SECOND, &self.second)] {
                for value in values {
                    map.append(name.clone(), HeaderValue::from_bytes(value).ok()?);
                }
            }
            Some((uri, map))
        }

        /// What the resource and variant are, as the handler would tell them apart.
        fn identity(&self, uri: &Uri) -> Identity {
            (
                self.host.clone().unwrap_or_default(),
                uri.path_and_query().unwrap().as_str().to_owned(),
                self.first.clone(),
                self.second.clone(),
            )
        }

        fn key(&self) -> Option<(String, Identity)> {
            let (uri, headers) = self.parts()?;
            let base = base_key(&uri, &headers).ok()?;
            let names = [FIRST, SECOND];
            let key = variant_key(&base, &names, &headers, &[], 0).ok()?;
            Some((key, self.identity(&uri)))
        }
    }

    proptest! {
        /// Two requests share a key only if they have the same host, path
        /// and query, and the same values of the varied headers, in the same order; a key
        /// is never made from a host that is not an authority.
        #[test]
        fn keys_are_injective(a in asked(), b in asked()) {
            if let (Some((key_a, id_a)), Some((key_b, id_b))) = (a.key(), b.key()) {
                prop_assert_eq!(key_a == key_b, id_a == id_b, "{:?} / {:?}", a, b);
            }
            for asked in [&a, &b] {
                if let Some((uri, headers)) = asked.parts()
                    && base_key(&uri, &headers).is_ok()
                    && let Some(host) = &asked.host
                {
                    prop_assert!(authority(host.as_bytes()).is_some(), "{:?}", host);
                    prop_assert!(!host.contains(['/', '?', '#', '@', ' ']), "{:?}", host);
                }
            }
        }

        /// Any bytes as `Host`: an answer, no panic; an accepted host has no separator.
        #[test]
        fn any_host_is_read(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Some(host) = authority(&bytes) {
                prop_assert!(!host.contains(['/', '?', '#', '@', ' ', '\t']));
                prop_assert!(host.len() == bytes.len());
            }
        }
    }
}
