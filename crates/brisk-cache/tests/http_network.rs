//! `ConditionalLayer` over real HTTP (an axum server, a hyper client): every RFC 9110 §13.2.2
//! precondition path and the order between them, HEAD, writes answered before the handler
//! with a validator, `Range` with `If-Range` left to the handler, and a streamed body sent
//! through untouched.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, body::Body, http::HeaderMap, routing::get};
use brisk_cache::http::{ConditionalLayer, EntityTag};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

#[path = "support/chunks.rs"]
mod support;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

const MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const BEFORE: &str = "Tue, 20 Oct 2015 07:28:00 GMT";
const AFTER: &str = "Thu, 22 Oct 2015 07:28:00 GMT";
const FULL: &str = "0123456789";

struct Server {
    base: String,
    client: HttpClient,
    writes: Arc<AtomicUsize>,
}

async fn server() -> Server {
    let writes = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&writes);
    // `/item`: the handler's own validators; `Range` with `If-Range` is its to answer.
    let item = get(|headers: HeaderMap| async move {
        let validators = [("etag", "\"v1\""), ("last-modified", MODIFIED)];
        let range_applies = headers.contains_key("range")
            && headers
                .get("if-range")
                .is_none_or(|value| value.as_bytes() == b"\"v1\"");
        if range_applies {
            (
                StatusCode::PARTIAL_CONTENT,
                validators,
                [("content-range", "bytes 0-3/10")],
                &FULL[..4],
            )
        } else {
            (
                StatusCode::OK,
                validators,
                [("accept-ranges", "bytes")],
                FULL,
            )
        }
    });
    // `/stream`: a body of unknown length, in three chunks.
    let stream = get(|| async {
        let parts = ["first ", "second ", "third"].map(Bytes::from).to_vec();
        Body::from_stream(support::chunks(parts))
    });
    // `/doc`: a write answered before the handler from the looked-up tag.
    let doc = get(|| async { "the document" }).put(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "written" }
    });
    let app = Router::new()
        .route("/item", item)
        .route("/stream", stream)
        .route("/doc", doc)
        .layer(
            ConditionalLayer::builder()
                .validator(|parts| {
                    let known =
                        (parts.uri.path() == "/doc").then(|| EntityTag::strong("d1").unwrap());
                    async move { known }
                })
                .build()
                .unwrap(),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base,
        client: Client::builder(TokioExecutor::new()).build_http(),
        writes,
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }
}

/// What a case checks, its request headers, and the status expected.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_precondition_path_in_order_over_the_network() {
    let server = server().await;
    let cases: &[Case<'_>] = &[
        // 1. If-Match: strong comparison; `*` matches the current representation.
        ("if-match matches", &[("if-match", "\"v1\"")], 200),
        ("if-match in a list", &[("if-match", "\"x\", \"v1\"")], 200),
        ("if-match misses", &[("if-match", "\"x\"")], 412),
        (
            "if-match weak never matches",
            &[("if-match", "W/\"v1\"")],
            412,
        ),
        ("if-match star", &[("if-match", "*")], 200),
        // 2. If-Unmodified-Since, only without If-Match.
        (
            "modified since the date",
            &[("if-unmodified-since", BEFORE)],
            412,
        ),
        (
            "unmodified since the date",
            &[("if-unmodified-since", AFTER)],
            200,
        ),
        (
            "if-match outranks if-unmodified-since",
            &[("if-match", "\"v1\""), ("if-unmodified-since", BEFORE)],
            200,
        ),
        (
            "an unreadable date is ignored",
            &[("if-unmodified-since", "yesterday")],
            200,
        ),
        // 3. If-None-Match: weak comparison; 304 for GET and HEAD.
        ("if-none-match matches", &[("if-none-match", "\"v1\"")], 304),
        (
            "if-none-match weak form",
            &[("if-none-match", "W/\"v1\"")],
            304,
        ),
        ("if-none-match misses", &[("if-none-match", "\"x\"")], 200),
        ("if-none-match star", &[("if-none-match", "*")], 304),
        (
            "if-match is evaluated first",
            &[("if-match", "\"x\""), ("if-none-match", "\"v1\"")],
            412,
        ),
        // 4. If-Modified-Since, only without If-None-Match.
        ("not modified since", &[("if-modified-since", AFTER)], 304),
        ("modified since", &[("if-modified-since", BEFORE)], 200),
        (
            "if-none-match outranks if-modified-since",
            &[("if-none-match", "\"x\""), ("if-modified-since", AFTER)],
            200,
        ),
    ];
    for (what, headers, status) in cases {
        let (got, answer_headers, body) = server.send(Method::GET, "/item", headers).await;
        assert_eq!(got.as_u16(), *status, "{what}");
        match got {
            StatusCode::NOT_MODIFIED => {
                assert!(body.is_empty(), "{what}");
                assert_eq!(answer_headers["etag"], "\"v1\"", "{what}");
                assert_eq!(answer_headers["last-modified"], MODIFIED, "{what}");
            }
            StatusCode::PRECONDITION_FAILED => assert!(body.is_empty(), "{what}"),
            _ => assert_eq!(body, FULL, "{what}"),
        }
    }
    // HEAD is a read: answered 304 the same way, and its 200 has no body.
    let (status, ..) = server
        .send(Method::HEAD, "/item", &[("if-none-match", "\"v1\"")])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, headers, body) = server.send(Method::HEAD, "/item", &[]).await;
    assert_eq!((status, body.len()), (StatusCode::OK, 0));
    assert_eq!(headers["etag"], "\"v1\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_answered_before_the_handler_and_ranges_are_the_handlers() {
    let server = server().await;
    // A PUT whose precondition fails never reaches the handler.
    for (headers, status) in [
        (&[("if-match", "\"stale\"")][..], 412),
        (&[("if-none-match", "\"d1\"")][..], 412),
        (&[("if-none-match", "*")][..], 412),
    ] {
        let (got, ..) = server.send(Method::PUT, "/doc", headers).await;
        assert_eq!(got.as_u16(), status, "{headers:?}");
    }
    assert_eq!(server.writes.load(Ordering::SeqCst), 0);
    let (got, _, body) = server
        .send(Method::PUT, "/doc", &[("if-match", "\"d1\"")])
        .await;
    assert_eq!((got, &body[..]), (StatusCode::OK, &b"written"[..]));
    assert_eq!(server.writes.load(Ordering::SeqCst), 1);
    // The looked-up tag answers reads too, and the handler's response carries it.
    let (got, ..) = server
        .send(Method::GET, "/doc", &[("if-none-match", "\"d1\"")])
        .await;
    assert_eq!(got, StatusCode::NOT_MODIFIED);
    let (got, headers, _) = server.send(Method::GET, "/doc", &[]).await;
    assert_eq!(got, StatusCode::OK);
    assert_eq!(headers["etag"], "\"d1\"");

    // Range and If-Range: the handler's 206, untouched and untagged by the layer; a range
    // whose If-Range no longer matches is the full 200.
    let (got, headers, body) = server
        .send(
            Method::GET,
            "/item",
            &[("range", "bytes=0-3"), ("if-range", "\"v1\"")],
        )
        .await;
    assert_eq!(
        (got, &body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"0123"[..])
    );
    assert_eq!(headers["content-range"], "bytes 0-3/10");
    let (got, _, body) = server
        .send(
            Method::GET,
            "/item",
            &[("range", "bytes=0-3"), ("if-range", "\"old\"")],
        )
        .await;
    assert_eq!((got, &body[..]), (StatusCode::OK, FULL.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_goes_through_untouched_and_untagged() {
    let server = server().await;
    let (status, headers, body) = server.send(Method::GET, "/stream", &[]).await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"first second third"[..])
    );
    assert!(
        !headers.contains_key("etag"),
        "a body of unknown length is never read whole"
    );
    assert!(!headers.contains_key("content-length"));
    assert_eq!(headers["transfer-encoding"], "chunked");
    // `If-None-Match: *` matches any current representation, tagged or not.
    let (status, ..) = server
        .send(Method::GET, "/stream", &[("if-none-match", "*")])
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // A tag cannot match a body that has none: the full stream.
    let (status, _, body) = server
        .send(Method::GET, "/stream", &[("if-none-match", "\"x\"")])
        .await;
    assert_eq!(
        (status, &body[..]),
        (StatusCode::OK, &b"first second third"[..])
    );
}
