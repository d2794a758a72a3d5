//! Conditional requests (RFC 9110 §13): the preconditions of a request evaluated against what
//! the server holds, in the order of §13.2.2.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{
    HeaderMap, Method,
    header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE},
};

use super::etag::{EntityTag, TagList};

/// The four precondition headers [`evaluate`] reads (RFC 9110 §13.1).
pub(super) const PRECONDITIONS: [http::HeaderName; 4] = [
    IF_MATCH,
    IF_NONE_MATCH,
    IF_MODIFIED_SINCE,
    IF_UNMODIFIED_SINCE,
];

/// What the server holds of the selected representation: its validators.
#[derive(Debug, Clone, Copy, Default)]
pub struct Validators<'a> {
    /// Its entity tag, if it has one.
    pub etag: Option<&'a EntityTag>,
    /// When it last changed, if known (compared to the second, as HTTP dates are).
    pub last_modified: Option<SystemTime>,
}

/// What a request's preconditions call for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Every precondition holds (or there is none): handle the request.
    Proceed,
    /// `304 Not Modified`: the client's copy is current (GET and HEAD only).
    NotModified,
    /// `412 Precondition Failed`.
    Failed,
}

/// Evaluates the preconditions of a request with `method` and `headers` against `current`
/// (`None`: the resource has no current representation), in RFC 9110 §13.2.2's order:
///
/// 1. `If-Match` (strong comparison; `*` needs a current representation): false is 412.
/// 2. Without `If-Match`, `If-Unmodified-Since`: modified since is 412.
/// 3. `If-None-Match` (weak comparison; `*` matches any current representation): a match is
///    304 for GET and HEAD, 412 for other methods.
/// 4. Without `If-None-Match`, for GET and HEAD, `If-Modified-Since`: not modified since is
///    304.
///
/// Dates that are not valid HTTP dates (IMF-fixdate, or the obsolete RFC 850 and asctime
/// forms, all accepted), date fields sent more than once, and date conditions on a
/// representation without a modification time are ignored, as §13.1.3 and §13.1.4 require.
/// List members that are not entity tags match nothing. `If-Range` is left to the handler,
/// with `Range`. Per §13.2.1 the caller applies the result only where the response would
/// otherwise be a 2xx.
pub fn evaluate(
    method: &Method,
    headers: &HeaderMap,
    current: Option<&Validators<'_>>,
) -> Precondition {
    let get_or_head = *method == Method::GET || *method == Method::HEAD;
    let etag = current.and_then(|current| current.etag);
    let last_modified = current.and_then(|current| current.last_modified);
    // 1 and 2.
    if headers.contains_key(IF_MATCH) {
        let matched = lists(headers, IF_MATCH).any(|list| match list {
            TagList::Any => current.is_some(),
            TagList::Tags(_) => {
                etag.is_some_and(|etag| list.tags().any(|tag| etag.strong_eq(&tag)))
            }
        });
        if !matched {
            return Precondition::Failed;
        }
    } else if let (Some(since), Some(modified)) =
        (date(headers, IF_UNMODIFIED_SINCE), last_modified)
        && seconds(modified) > since
    {
        return Precondition::Failed;
    }
    // 3 and 4.
    if headers.contains_key(IF_NONE_MATCH) {
        let matched = lists(headers, IF_NONE_MATCH).any(|list| match list {
            TagList::Any => current.is_some(),
            TagList::Tags(_) => etag.is_some_and(|etag| list.tags().any(|tag| etag.weak_eq(&tag))),
        });
        if matched {
            return if get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if get_or_head
        && let (Some(since), Some(modified)) = (date(headers, IF_MODIFIED_SINCE), last_modified)
        && seconds(modified) <= since
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Every line of a list header, as a tag list (lines that are not text match nothing).
fn lists(headers: &HeaderMap, name: http::HeaderName) -> impl Iterator<Item = TagList<'_>> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
        .map(TagList::parse)
}

/// A date header's value in whole seconds since the epoch, if it is sent once and is a valid
/// HTTP date.
fn date(headers: &HeaderMap, name: http::HeaderName) -> Option<u64> {
    let mut values = headers.get_all(name).into_iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let text = std::str::from_utf8(value.as_bytes()).ok()?;
    httpdate::parse_http_date(text.trim()).ok().map(seconds)
}

/// Whole seconds since the epoch (times before it count as 0).
fn seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// `time` as an HTTP date (IMF-fixdate), for `Last-Modified`.
pub fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(seconds(time)))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    /// 1994-11-06 08:49:37 UTC, RFC 9110's example date.
    fn sunday() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    const SUNDAY: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const LATER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";
    const EARLIER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";

    fn run(
        method: Method,
        pairs: &[(&'static str, &str)],
        etag: Option<&EntityTag>,
    ) -> Precondition {
        let current = Validators {
            etag,
            last_modified: Some(sunday()),
        };
        evaluate(&method, &headers(pairs), Some(&current))
    }

    #[test]
    fn if_match_uses_the_strong_comparison_and_fails_with_412() {
        let strong = EntityTag::strong("v1").unwrap();
        let weak = EntityTag::weak("v1").unwrap();
        use Precondition::*;
        assert_eq!(
            run(Method::PUT, &[("if-match", r#""v0", "v1""#)], Some(&strong)),
            Proceed
        );
        assert_eq!(
            run(Method::PUT, &[("if-match", r#""v2""#)], Some(&strong)),
            Failed
        );
        assert_eq!(
            run(Method::PUT, &[("if-match", r#"W/"v1""#)], Some(&strong)),
            Failed
        );
        assert_eq!(
            run(Method::PUT, &[("if-match", r#""v1""#)], Some(&weak)),
            Failed
        );
        assert_eq!(
            run(Method::GET, &[("if-match", r#""v1""#)], None),
            Failed,
            "no tag"
        );
        assert_eq!(run(Method::PUT, &[("if-match", "*")], None), Proceed);
        assert_eq!(
            evaluate(&Method::PUT, &headers(&[("if-match", "*")]), None),
            Failed,
            "* needs a current representation"
        );
        // Two lines are one list.
        assert_eq!(
            run(
                Method::PUT,
                &[("if-match", r#""a""#), ("if-match", r#""v1""#)],
                Some(&strong)
            ),
            Proceed
        );
    }

    #[test]
    fn if_unmodified_since_counts_only_without_if_match() {
        use Precondition::*;
        let tag = EntityTag::strong("v1").unwrap();
        assert_eq!(
            run(Method::PUT, &[("if-unmodified-since", SUNDAY)], None),
            Proceed
        );
        assert_eq!(
            run(Method::PUT, &[("if-unmodified-since", EARLIER)], None),
            Failed
        );
        assert_eq!(
            run(
                Method::PUT,
                &[("if-match", r#""v1""#), ("if-unmodified-since", EARLIER)],
                Some(&tag)
            ),
            Proceed,
            "If-Match decides"
        );
        assert_eq!(
            run(Method::PUT, &[("if-unmodified-since", "yesterday")], None),
            Proceed
        );
        assert_eq!(
            run(
                Method::PUT,
                &[
                    ("if-unmodified-since", EARLIER),
                    ("if-unmodified-since", EARLIER)
                ],
                None
            ),
            Proceed,
            "a list of dates is ignored"
        );
        assert_eq!(
            evaluate(
                &Method::PUT,
                &headers(&[("if-unmodified-since", EARLIER)]),
                Some(&Validators::default())
            ),
            Proceed,
            "no modification time: ignored"
        );
    }

    #[test]
    fn if_none_match_uses_the_weak_comparison_304_for_reads_412_for_writes() {
        use Precondition::*;
        let weak = EntityTag::weak("v1").unwrap();
        let list = [("if-none-match", r#""v0", "v1""#)];
        assert_eq!(run(Method::GET, &list, Some(&weak)), NotModified);
        assert_eq!(run(Method::HEAD, &list, Some(&weak)), NotModified);
        assert_eq!(run(Method::POST, &list, Some(&weak)), Failed);
        assert_eq!(
            run(Method::GET, &[("if-none-match", r#""v2""#)], Some(&weak)),
            Proceed
        );
        assert_eq!(
            run(Method::GET, &[("if-none-match", "*")], None),
            NotModified
        );
        assert_eq!(
            evaluate(&Method::PUT, &headers(&[("if-none-match", "*")]), None),
            Proceed
        );
        assert_eq!(
            evaluate(
                &Method::PUT,
                &headers(&[("if-none-match", "*")]),
                Some(&Validators::default())
            ),
            Failed,
            "create-only PUT over an existing resource"
        );
    }

    #[test]
    fn if_modified_since_counts_only_for_reads_without_if_none_match() {
        use Precondition::*;
        let tag = EntityTag::strong("v1").unwrap();
        assert_eq!(
            run(Method::GET, &[("if-modified-since", SUNDAY)], None),
            NotModified
        );
        assert_eq!(
            run(Method::GET, &[("if-modified-since", LATER)], None),
            NotModified
        );
        assert_eq!(
            run(Method::GET, &[("if-modified-since", EARLIER)], None),
            Proceed
        );
        assert_eq!(
            run(Method::POST, &[("if-modified-since", SUNDAY)], None),
            Proceed
        );
        assert_eq!(
            run(
                Method::GET,
                &[("if-none-match", r#""v2""#), ("if-modified-since", SUNDAY)],
                Some(&tag)
            ),
            Proceed,
            "If-None-Match decides"
        );
        // The obsolete forms RFC 9110 §5.6.7 requires recipients to accept.
        for obsolete in ["Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"] {
            assert_eq!(
                run(Method::GET, &[("if-modified-since", obsolete)], None),
                NotModified
            );
        }
        assert_eq!(
            run(Method::GET, &[("if-modified-since", "not a date")], None),
            Proceed
        );
    }

    #[test]
    fn the_order_puts_if_match_before_if_none_match() {
        let tag = EntityTag::strong("v1").unwrap();
        assert_eq!(
            run(
                Method::GET,
                &[("if-match", r#""v2""#), ("if-none-match", r#""v1""#)],
                Some(&tag)
            ),
            Precondition::Failed
        );
        assert_eq!(
            run(
                Method::GET,
                &[("if-match", r#""v1""#), ("if-none-match", r#""v1""#)],
                Some(&tag)
            ),
            Precondition::NotModified
        );
        assert_eq!(http_date(sunday() + Duration::from_millis(900)), SUNDAY);
    }

    proptest! {
        /// Any bytes in the four headers: an answer, never a panic.
        #[test]
        fn any_header_bytes_evaluate_without_panicking(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 4),
            post: bool,
        ) {
            let mut headers = HeaderMap::new();
            for (name, value) in ["if-match", "if-none-match", "if-modified-since", "if-unmodified-since"].into_iter().zip(values) {
                if let Ok(value) = HeaderValue::from_bytes(&value) {
                    headers.append(name, value);
                }
            }
            let tag = EntityTag::strong("v1").unwrap();
            let current = Validators { etag: Some(&tag), last_modified: Some(UNIX_EPOCH) };
            let method = if post { Method::POST } else { Method::GET };
            let _ = evaluate(&method, &headers, Some(&current));
            let _ = evaluate(&method, &headers, None);
        }
    }
}
