//! `ResponseCacheLayer`: what is stored and what is not, keys with `Vary`, request
//! directives, single-flighted misses, stale answers, `Age`, and the layer under
//! `ConditionalLayer` and brisk-compress. Time-dependent tests run on paused time, in
//! process; the others over real HTTP with a hyper client (and, across two instances, a
//! real Redis from brisk-testkit).

use std::{
    convert::Infallible,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::body::Body;
use brisk_cache::{
    MemoryCache, Stamped, Tiered, TieredBuilder,
    http::{CachedResponse, ConditionalLayer, ResponseCacheLayer},
};
use brisk_metrics::Registry;
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt, service_fn};

#[path = "support/chunks.rs"]
mod support;

type Reply = Response<Body>;

/// Makes the handler's response to a request.
type Make = Arc<dyn Fn(&Request<Body>) -> Reply + Send + Sync>;

/// What the handler answers next, and how often it ran.
#[derive(Clone)]
struct Handler {
    calls: Arc<AtomicUsize>,
    make: Arc<Mutex<Make>>,
    delay: Duration,
}

impl Handler {
    fn new(make: impl Fn(&Request<Body>) -> Reply + Send + Sync + 'static) -> Self {
        Self {
            calls: Arc::new(AtomicUsize::new(0)),
            make: Arc::new(Mutex::new(Arc::new(make))),
            delay: Duration::ZERO,
        }
    }

    fn answer(&self, make: impl Fn(&Request<Body>) -> Reply + Send + Sync + 'static) {
        *self.make.lock().unwrap() = Arc::new(make);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl tower::Service<Request<Body>, Response = Reply, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |request: Request<Body>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                if !this.delay.is_zero() {
                    tokio::time::sleep(this.delay).await;
                }
                let make = Arc::clone(&this.make.lock().unwrap());
                Ok::<_, Infallible>(make(&request))
            }
        })
    }
}

fn json(body: impl Into<Body>, cache_control: &'static str) -> Reply {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, cache_control)
        .body(body.into())
        .unwrap()
}

fn memory() -> MemoryCache<String, Stamped<CachedResponse>> {
    MemoryCache::builder()
        .max_weight(16 << 20)
        .weigher(|key: &String, value: &Stamped<CachedResponse>| {
            (key.len() + value.value().weight()) as u32
        })
        .build()
        .unwrap()
}

fn tiered() -> TieredBuilder<String, CachedResponse, brisk_cache::NoRemote> {
    Tiered::builder().memory(memory())
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("", |value| value.to_str().unwrap())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }
}

async fn send<S, B>(service: &S, request: Request<Body>) -> Answer
where
    S: tower::Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_stored_response_is_a_hit_with_its_age_and_a_tag_until_it_goes_stale() {
    let handler = Handler::new(|_| json(r#"{"id":7}"#, "public, max-age=60"));
    let layer = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap();
    let service = layer.layer(handler.service());

    let first = send(&service, request("GET", "/product/7", &[])).await;
    assert_eq!(
        (first.status, first.x_cache(), &first.body[..]),
        (StatusCode::OK, "miss", &br#"{"id":7}"#[..])
    );
    let tag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(br#"{"id":7}"#));
    assert_eq!(
        first.header("etag"),
        Some(tag.as_str()),
        "a stored 200 is tagged"
    );
    assert_eq!(first.header("age"), None);

    tokio::time::advance(Duration::from_secs(5)).await;
    let second = send(&service, request("GET", "/product/7", &[])).await;
    assert_eq!((second.x_cache(), &second.body), ("hit", &first.body));
    assert_eq!(second.header("age"), Some("5"));
    assert_eq!(second.header("etag"), Some(tag.as_str()));
    assert_eq!(second.header("content-type"), Some("application/json"));
    assert_eq!(second.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(second.header("content-length"), Some("8"));
    // Another query string, or another host, is another key.
    let other = send(&service, request("GET", "/product/7?x=1", &[])).await;
    assert_eq!(other.x_cache(), "miss");
    let host = send(
        &service,
        request("GET", "/product/7", &[("host", "tenant-b.example")]),
    )
    .await;
    assert_eq!(host.x_cache(), "miss");
    assert_eq!(handler.calls(), 3);

    // Past max-age (no stale window): the handler answers again.
    tokio::time::advance(Duration::from_secs(56)).await;
    handler.answer(|_| json(r#"{"id":7,"v":2}"#, "public, max-age=60"));
    let third = send(&service, request("GET", "/product/7", &[])).await;
    assert_eq!(
        (third.x_cache(), &third.body[..]),
        ("miss", &br#"{"id":7,"v":2}"#[..])
    );
    assert_eq!(handler.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_shared_lifetime_wins_and_expires_counts_from_date() {
    let handler = Handler::new(|request| match request.uri().path() {
        "/s" => json("s", "public, max-age=1, s-maxage=100"),
        _ => Response::builder()
            .header(header::DATE, "Sun, 06 Nov 1994 08:49:37 GMT")
            .header(header::EXPIRES, "Sun, 06 Nov 1994 08:50:37 GMT")
            .body(Body::from("e"))
            .unwrap(),
    });
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    for uri in ["/s", "/e"] {
        send(&service, request("GET", uri, &[])).await;
    }
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(
        send(&service, request("GET", "/s", &[])).await.x_cache(),
        "hit"
    );
    assert_eq!(
        send(&service, request("GET", "/e", &[])).await.x_cache(),
        "hit"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        send(&service, request("GET", "/s", &[])).await.x_cache(),
        "hit"
    );
    assert_eq!(
        send(&service, request("GET", "/e", &[])).await.x_cache(),
        "miss",
        "Expires − Date is 60 s"
    );
}

#[tokio::test]
async fn what_a_shared_cache_may_not_store_is_never_stored() {
    let streaming = || {
        let chunks = support::chunks(vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
        Response::builder()
            .header(header::CACHE_CONTROL, "max-age=60")
            .body(Body::from_stream(chunks))
            .unwrap()
    };
    let handler = Handler::new(move |request| match request.uri().path() {
        "/no-store" => json("x", "no-store"),
        "/private" => json("x", "private, max-age=60"),
        "/no-cache" => json("x", "no-cache, max-age=60"),
        "/cookie" => Response::builder()
            .header(header::CACHE_CONTROL, "max-age=60")
            .header(header::SET_COOKIE, "session=1")
            .body(Body::from("x"))
            .unwrap(),
        "/vary-star" => Response::builder()
            .header(header::CACHE_CONTROL, "max-age=60")
            .header(header::VARY, "*")
            .body(Body::from("x"))
            .unwrap(),
        "/error" => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .header(header::CACHE_CONTROL, "max-age=60")
            .body(Body::from("x"))
            .unwrap(),
        "/created" => Response::builder()
            .status(StatusCode::CREATED)
            .header(header::CACHE_CONTROL, "max-age=60")
            .body(Body::from("x"))
            .unwrap(),
        "/no-lifetime" => Response::new(Body::from("x")),
        "/zero" => json("x", "max-age=0"),
        "/large" => json(vec![b'x'; 2048], "max-age=60"),
        "/streaming" => streaming(),
        "/missing" => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .header(header::CACHE_CONTROL, "max-age=60")
            .body(Body::from("gone"))
            .unwrap(),
        _ => json("ok", "max-age=60"),
    });
    let registry = Registry::new();
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .max_body(1024)
        .metrics(&registry, "pages")
        .build()
        .unwrap()
        .layer(handler.service());
    let never = [
        "/no-store",
        "/private",
        "/no-cache",
        "/cookie",
        "/vary-star",
        "/error",
        "/created",
        "/no-lifetime",
        "/zero",
        "/large",
        "/streaming",
    ];
    for uri in never {
        for _ in 0..2 {
            let answer = send(&service, request("GET", uri, &[])).await;
            assert_eq!(answer.x_cache(), "miss", "{uri}");
            assert!(!answer.body.is_empty(), "{uri}: the handler's body");
        }
    }
    assert_eq!(handler.calls(), 2 * never.len());
    // A 404 with a lifetime is stored (RFC 9110 lets a cache keep it).
    let missing = send(&service, request("GET", "/missing", &[])).await;
    assert_eq!(
        (missing.status, missing.x_cache()),
        (StatusCode::NOT_FOUND, "miss")
    );
    let missing = send(&service, request("GET", "/missing", &[])).await;
    assert_eq!(
        (missing.status, missing.x_cache(), &missing.body[..]),
        (StatusCode::NOT_FOUND, "hit", &b"gone"[..])
    );
    // Requests a shared cache answers only through the handler.
    send(&service, request("GET", "/ok", &[])).await;
    let before = handler.calls();
    for (method, headers) in [
        ("POST", &[][..]),
        ("GET", &[("authorization", "Bearer t")][..]),
        ("GET", &[("range", "bytes=0-0")][..]),
    ] {
        let answer = send(&service, request(method, "/ok", headers)).await;
        assert_eq!(answer.x_cache(), "miss", "{method} {headers:?}");
    }
    assert_eq!(handler.calls(), before + 3);
    let snapshot = registry.snapshot();
    let count = |result| {
        snapshot
            .counter(
                "brisk_cache_http_responses_total",
                &[("name", "pages"), ("result", result)],
            )
            .unwrap()
    };
    assert_eq!(count("pass"), 2 * never.len() as u64 + 3);
    assert_eq!((count("miss"), count("hit")), (2, 1));
    assert_eq!(
        snapshot
            .counter(
                "brisk_cache_http_handler_calls_saved_total",
                &[("name", "pages")]
            )
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn each_variant_named_by_vary_is_stored_once() {
    let handler = Handler::new(|request| {
        let language = request
            .headers()
            .get("accept-language")
            .map_or("en", |value| value.to_str().unwrap())
            .to_owned();
        Response::builder()
            .header(header::CACHE_CONTROL, "max-age=60")
            .header(header::VARY, "Accept-Language")
            .body(Body::from(format!("hello in {language}")))
            .unwrap()
    });
    let cache = tiered().build().unwrap();
    let service = ResponseCacheLayer::builder(cache.clone())
        .build()
        .unwrap()
        .layer(handler.service());
    let ask =
        |language: &'static str| request("GET", "/greeting", &[("accept-language", language)]);
    let en = send(&service, ask("en")).await;
    assert_eq!((en.x_cache(), &en.body[..]), ("miss", &b"hello in en"[..]));
    let fr = send(&service, ask("fr")).await;
    assert_eq!((fr.x_cache(), &fr.body[..]), ("miss", &b"hello in fr"[..]));
    for _ in 0..3 {
        let en = send(&service, ask("en")).await;
        assert_eq!((en.x_cache(), &en.body[..]), ("hit", &b"hello in en"[..]));
        let fr = send(&service, ask("fr")).await;
        assert_eq!((fr.x_cache(), &fr.body[..]), ("hit", &b"hello in fr"[..]));
    }
    assert_eq!(handler.calls(), 2);
    // The URL's entry lists the header; each variant has its own.
    assert_eq!(cache.memory().unwrap().len(), 3);
}

/// Issue 28, item 5: a client's `no-cache` does not skip a shared cache unless the layer
/// says so; `no-store` is honoured either way.
#[tokio::test]
async fn request_directives_are_ignored_unless_honoured() {
    let handler = Handler::new(|_| json("v", "max-age=60"));
    let skipping = [
        &[("cache-control", "no-cache")][..],
        &[("cache-control", "max-age=0")][..],
        &[("pragma", "no-cache")][..],
        &[("cache-control", "no-cache"), ("pragma", "no-cache")][..],
    ];
    // By default: every request is answered from the stored copy.
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    send(&service, request("GET", "/a", &[])).await;
    for headers in skipping {
        let answer = send(&service, request("GET", "/a", headers)).await;
        assert_eq!(answer.x_cache(), "hit", "{headers:?}");
    }
    assert_eq!(handler.calls(), 1);
    // no-store: answered from the cache if it can be, else by the handler, unstored.
    let answer = send(
        &service,
        request("GET", "/a", &[("cache-control", "no-store")]),
    )
    .await;
    assert_eq!(answer.x_cache(), "hit");
    let answer = send(
        &service,
        request("GET", "/b", &[("cache-control", "no-store")]),
    )
    .await;
    assert_eq!(answer.x_cache(), "miss");
    assert_eq!(
        send(&service, request("GET", "/b", &[])).await.x_cache(),
        "miss"
    );
    assert_eq!(handler.calls(), 3);

    // Honoured: no-cache, max-age=0 and Pragma go to the handler, and its response
    // replaces the copy.
    let handler = Handler::new(|_| json("v", "max-age=60"));
    let honouring = ResponseCacheLayer::builder(tiered().build().unwrap())
        .honour_request_directives()
        .build()
        .unwrap()
        .layer(handler.service());
    send(&honouring, request("GET", "/a", &[])).await;
    for headers in skipping {
        handler.answer(move |_| json(format!("{headers:?}"), "max-age=60"));
        let answer = send(&honouring, request("GET", "/a", headers)).await;
        assert_eq!(answer.x_cache(), "miss", "{headers:?}");
        let next = send(&honouring, request("GET", "/a", &[])).await;
        assert_eq!(
            (next.x_cache(), &next.body),
            ("hit", &answer.body),
            "{headers:?}"
        );
    }
    assert_eq!(handler.calls(), 1 + skipping.len());
    let answer = send(
        &honouring,
        request("GET", "/c", &[("cache-control", "no-store")]),
    )
    .await;
    assert_eq!(answer.x_cache(), "miss");
    assert_eq!(
        send(&honouring, request("GET", "/c", &[])).await.x_cache(),
        "miss"
    );
}

#[tokio::test]
async fn head_reads_gets_entry_without_the_body() {
    let handler = Handler::new(|_| json("twelve bytes", "max-age=60"));
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    // A HEAD before anything is stored goes to the handler and stores nothing.
    let head = send(&service, request("HEAD", "/h", &[])).await;
    assert_eq!(head.x_cache(), "miss");
    send(&service, request("GET", "/h", &[])).await;
    let head = send(&service, request("HEAD", "/h", &[])).await;
    assert_eq!(head.x_cache(), "hit");
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("12"));
    assert_eq!(handler.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_handler_call_unless_the_response_cannot_be_stored() {
    let mut handler = Handler::new(|request| {
        if request.uri().path() == "/private" {
            json("mine", "private")
        } else {
            json("shared", "max-age=60")
        }
    });
    handler.delay = Duration::from_millis(50);
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    for (path, calls, body) in [("/shared", 1, "shared"), ("/private", 100, "mine")] {
        let before = handler.calls();
        let answers = futures_join(
            (0..100)
                .map(|_| {
                    let service = service.clone();
                    tokio::spawn(async move { send(&service, request("GET", path, &[])).await })
                })
                .collect(),
        )
        .await;
        assert_eq!(handler.calls() - before, calls, "{path}");
        let misses = answers.iter().filter(|a| a.x_cache() == "miss").count();
        assert_eq!(misses, calls, "{path}");
        assert!(answers.iter().all(|answer| answer.body == body), "{path}");
    }
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<Answer>>) -> Vec<Answer> {
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

#[tokio::test(start_paused = true)]
async fn stale_answers_while_revalidating_and_when_the_handler_fails() {
    let handler = Handler::new(|_| json("v1", "max-age=10"));
    let cache = tiered()
        .fresh_for(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(5))
        .fail_safe(Duration::from_secs(60))
        .build()
        .unwrap();
    let service = ResponseCacheLayer::builder(cache)
        .build()
        .unwrap()
        .layer(handler.service());
    send(&service, request("GET", "/s", &[])).await;
    // Within stale-while-revalidate: the stale copy answers; one refresh runs behind.
    tokio::time::advance(Duration::from_secs(12)).await;
    handler.answer(|_| json("v2", "max-age=10"));
    let stale = send(&service, request("GET", "/s", &[])).await;
    assert_eq!((stale.x_cache(), &stale.body[..]), ("stale", &b"v1"[..]));
    assert_eq!(stale.header("age"), Some("12"));
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(handler.calls(), 2);
    let fresh = send(&service, request("GET", "/s", &[])).await;
    assert_eq!((fresh.x_cache(), &fresh.body[..]), ("hit", &b"v2"[..]));

    // Past that window, a failing handler (a 5xx) is answered by the copy (fail-safe).
    tokio::time::advance(Duration::from_secs(20)).await;
    handler.answer(|_| {
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from("down"))
            .unwrap()
    });
    let safe = send(&service, request("GET", "/s", &[])).await;
    assert_eq!(
        (safe.status, safe.x_cache(), &safe.body[..]),
        (StatusCode::OK, "stale", &b"v2"[..])
    );
    // Without a stored copy, the failure is the answer.
    let down = send(&service, request("GET", "/other", &[])).await;
    assert_eq!(
        (down.status, down.x_cache(), &down.body[..]),
        (StatusCode::SERVICE_UNAVAILABLE, "miss", &b"down"[..])
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_that_must_be_revalidated_is_never_answered_stale() {
    // must-revalidate, proxy-revalidate and s-maxage (proxy-revalidate's semantics in a
    // shared cache): no stale answer, neither while revalidating nor when the handler fails.
    for directives in [
        "max-age=10, must-revalidate",
        "max-age=10, proxy-revalidate",
        "s-maxage=10",
    ] {
        let handler = Handler::new(move |_| json("v1", directives));
        let cache = tiered()
            .fresh_for(Duration::from_secs(10))
            .stale_while_revalidate(Duration::from_secs(5))
            .fail_safe(Duration::from_secs(60))
            .build()
            .unwrap();
        let service = ResponseCacheLayer::builder(cache)
            .build()
            .unwrap()
            .layer(handler.service());
        send(&service, request("GET", "/m", &[])).await;
        // Within stale-while-revalidate: the handler answers, not the stale copy.
        tokio::time::advance(Duration::from_secs(12)).await;
        handler.answer(move |_| json("v2", directives));
        let revalidated = send(&service, request("GET", "/m", &[])).await;
        assert_eq!(
            (revalidated.x_cache(), &revalidated.body[..]),
            ("miss", &b"v2"[..]),
            "{directives}"
        );
        // Past freshness with the handler failing: the failure, not the stale copy.
        tokio::time::advance(Duration::from_secs(20)).await;
        handler.answer(|_| {
            Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Body::from("down"))
                .unwrap()
        });
        let failed = send(&service, request("GET", "/m", &[])).await;
        assert_eq!(
            (failed.status, &failed.body[..]),
            (StatusCode::SERVICE_UNAVAILABLE, &b"down"[..]),
            "{directives}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_response_that_became_unstorable_is_not_answered_by_the_stale_copy() {
    let handler = Handler::new(|_| json("public", "max-age=10"));
    let cache = tiered()
        .fresh_for(Duration::from_secs(10))
        .fail_safe(Duration::from_secs(60))
        .build()
        .unwrap();
    let service = ResponseCacheLayer::builder(cache)
        .build()
        .unwrap()
        .layer(handler.service());
    send(&service, request("GET", "/u", &[])).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    handler.answer(|_| json("now private", "private"));
    let answer = send(&service, request("GET", "/u", &[])).await;
    assert_eq!(
        (answer.x_cache(), &answer.body[..]),
        ("miss", &b"now private"[..]),
        "not a failure: fail-safe does not apply"
    );
}

#[tokio::test]
async fn a_conditional_layer_outside_answers_304_from_the_cached_copy() {
    let handler = Handler::new(|_| json(r#"{"id":1}"#, "public, max-age=60"));
    let registry = Registry::new();
    let service = ConditionalLayer::builder()
        .metrics(&registry, "pages")
        .build()
        .unwrap()
        .layer(
            ResponseCacheLayer::builder(tiered().build().unwrap())
                .build()
                .unwrap()
                .layer(handler.service()),
        );
    let first = send(&service, request("GET", "/c", &[])).await;
    let tag = first.header("etag").unwrap().to_owned();
    for _ in 0..3 {
        let answer = send(&service, request("GET", "/c", &[("if-none-match", &tag)])).await;
        assert_eq!(answer.status, StatusCode::NOT_MODIFIED);
        assert_eq!(answer.header("etag"), Some(tag.as_str()));
    }
    // The handler ran once, and its conditional request was not passed to it.
    assert_eq!(handler.calls(), 1);
    let hashed = registry
        .snapshot()
        .counter("brisk_cache_http_bodies_hashed_total", &[("name", "pages")])
        .unwrap();
    assert_eq!(
        hashed, 0,
        "the cached copy carries its tag: nothing is hashed per request"
    );
}

#[tokio::test]
async fn under_compression_one_copy_serves_every_coding_each_with_its_own_tag() {
    let body = "a compressible catalog page ".repeat(200);
    let handler = Handler::new(move |_| {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/html")
            .header(header::CACHE_CONTROL, "public, max-age=60")
            .body(Body::from(body.clone()))
            .unwrap()
    });
    let cache = tiered().build().unwrap();
    let service = brisk_compress::tower::CompressionLayer::default().layer(
        ConditionalLayer::builder().build().unwrap().layer(
            ResponseCacheLayer::builder(cache.clone())
                .build()
                .unwrap()
                .layer(handler.service()),
        ),
    );
    let gzip = send(
        &service,
        request("GET", "/page", &[("accept-encoding", "gzip")]),
    )
    .await;
    let identity = send(&service, request("GET", "/page", &[])).await;
    let br = send(
        &service,
        request("GET", "/page", &[("accept-encoding", "br")]),
    )
    .await;
    assert_eq!(handler.calls(), 1);
    assert_eq!(cache.memory().unwrap().len(), 1, "one stored copy");
    assert_eq!(gzip.header("content-encoding"), Some("gzip"));
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(identity.header("content-encoding"), None);
    assert_eq!(
        (gzip.x_cache(), identity.x_cache(), br.x_cache()),
        ("miss", "hit", "hit")
    );
    let strong = identity.header("etag").unwrap().to_owned();
    assert!(strong.starts_with('"'));
    assert_eq!(gzip.header("etag"), Some(format!("W/{strong}").as_str()));
    for answer in [&gzip, &identity, &br] {
        let vary = answer.header("vary").unwrap().to_ascii_lowercase();
        assert!(vary.contains("accept-encoding"), "{vary}");
    }
    // Each client revalidates the representation it holds, and keeps its form of the tag.
    let weak = format!("W/{strong}");
    let revalidated = send(
        &service,
        request(
            "GET",
            "/page",
            &[("accept-encoding", "gzip"), ("if-none-match", &weak)],
        ),
    )
    .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.header("etag"), Some(weak.as_str()));
    let revalidated = send(
        &service,
        request("GET", "/page", &[("if-none-match", &strong)]),
    )
    .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.header("etag"), Some(strong.as_str()));
    assert_eq!(handler.calls(), 1);
}

#[tokio::test]
async fn invalid_settings_are_refused() {
    let refused = ResponseCacheLayer::builder(tiered().build().unwrap())
        .max_body(0)
        .build()
        .unwrap_err();
    assert!(matches!(
        refused,
        brisk_cache::Error::Config {
            setting: "max_body",
            ..
        }
    ));
}

/// The handler's answer to a request: who asked (its cookie, its `Authorization`) and
/// where (its host and path).
fn personal(request: &Request<Body>, cache_control: Option<&'static str>) -> Reply {
    let header = |name: &str| {
        request.headers().get(name).map_or("-".to_owned(), |value| {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        })
    };
    let mut response = Response::builder();
    if let Some(cache_control) = cache_control {
        response = response.header(header::CACHE_CONTROL, cache_control);
    }
    response
        .body(Body::from(format!(
            "cookie={} authorization={} host={} path={}",
            header("cookie"),
            header("authorization"),
            header("host"),
            request.uri()
        )))
        .unwrap()
}

/// Issue 28, item 1: a response made for one user's cookie is never answered to another.
#[tokio::test]
async fn a_personalised_response_is_never_answered_to_another_user() {
    let handler = Handler::new(|request| personal(request, None));
    let service =
        ResponseCacheLayer::builder(tiered().fresh_for(Duration::from_secs(60)).build().unwrap())
            .build()
            .unwrap()
            .layer(handler.service());
    for round in 0..2 {
        for (cookie, authorization) in [
            ("session=A", None),
            ("session=B", None),
            ("session=A", Some("Bearer a")),
        ] {
            let mut headers = vec![("cookie", cookie)];
            headers.extend(authorization.map(|value| ("authorization", value)));
            let answer = send(&service, request("GET", "/me", &headers)).await;
            let expected = format!(
                "cookie={cookie} authorization={} host=- path=/me",
                authorization.unwrap_or("-")
            );
            assert_eq!(answer.body, expected, "round {round}");
            assert_eq!(answer.x_cache(), "miss", "round {round}: not stored");
        }
    }
    assert_eq!(handler.calls(), 6);
    // An anonymous request's response, stored through `fresh_for` (it said nothing), is
    // not answered to a request with a cookie: it did not say it may be shared.
    let anonymous = send(&service, request("GET", "/me", &[])).await;
    assert_eq!(anonymous.x_cache(), "miss");
    assert_eq!(
        send(&service, request("GET", "/me", &[])).await.x_cache(),
        "hit"
    );
    let cookie = send(&service, request("GET", "/me", &[("cookie", "session=B")])).await;
    assert_eq!(
        (cookie.x_cache(), &cookie.body[..]),
        (
            "miss",
            &b"cookie=session=B authorization=- host=- path=/me"[..]
        )
    );
}

/// Issue 28, item 1: what a credentialed request may store and be answered with.
#[tokio::test]
async fn credentialed_requests_share_only_what_the_response_allows() {
    let handler = Handler::new(|request| match request.uri().path() {
        "/public" => personal(request, Some("public, max-age=60")),
        "/shared" => personal(request, Some("s-maxage=60")),
        "/revalidate" => personal(request, Some("max-age=60, must-revalidate")),
        "/per-session" => {
            let mut response = personal(request, Some("max-age=60"));
            response
                .headers_mut()
                .insert(header::VARY, "Cookie".parse().unwrap());
            response
        }
        _ => personal(request, Some("max-age=60")),
    });
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    let cookie = |value: &'static str| [("cookie", value)];
    // `public` and `s-maxage` say any user may have it: stored from the first request with
    // a cookie, answered to the next user, with or without a cookie or Authorization.
    for path in ["/public", "/shared"] {
        let first = send(&service, request("GET", path, &cookie("session=A"))).await;
        assert_eq!(first.x_cache(), "miss", "{path}");
        for headers in [
            &cookie("session=B")[..],
            &[][..],
            &[("authorization", "Bearer b")][..],
        ] {
            let answer = send(&service, request("GET", path, headers)).await;
            assert_eq!(
                (answer.x_cache(), &answer.body),
                ("hit", &first.body),
                "{path} {headers:?}"
            );
        }
    }
    // Authorization follows the same rule (before, it passed every time).
    let before = handler.calls();
    let first = send(
        &service,
        request("GET", "/public?auth", &[("authorization", "Bearer a")]),
    )
    .await;
    let second = send(
        &service,
        request("GET", "/public?auth", &[("authorization", "Bearer b")]),
    )
    .await;
    assert_eq!((first.x_cache(), second.x_cache()), ("miss", "hit"));
    assert_eq!(handler.calls(), before + 1);
    // A lifetime alone (or with must-revalidate) does not say it may be shared.
    for path in ["/private-by-default", "/revalidate"] {
        for session in ["session=A", "session=B", "session=A"] {
            let answer = send(&service, request("GET", path, &cookie(session))).await;
            assert_eq!(answer.x_cache(), "miss", "{path} {session}");
            assert!(
                std::str::from_utf8(&answer.body)
                    .unwrap()
                    .starts_with(&format!("cookie={session} ")),
                "{path} {session}"
            );
        }
    }
    // `Vary: Cookie`: each session has its own copy, answered to that session only.
    for session in ["session=A", "session=B"] {
        let answer = send(&service, request("GET", "/per-session", &cookie(session))).await;
        assert_eq!(answer.x_cache(), "miss", "{session}");
    }
    for session in ["session=A", "session=B"] {
        let answer = send(&service, request("GET", "/per-session", &cookie(session))).await;
        assert_eq!(answer.x_cache(), "hit", "{session}");
        assert!(
            std::str::from_utf8(&answer.body)
                .unwrap()
                .starts_with(&format!("cookie={session} ")),
            "{session}"
        );
    }
    let anonymous = send(&service, request("GET", "/per-session", &[])).await;
    assert_eq!(
        (anonymous.x_cache(), &anonymous.body[..]),
        (
            "miss",
            &b"cookie=- authorization=- host=- path=/per-session"[..]
        )
    );
}

/// Issue 28, item 2: the key is not host and path run together, and a `Host` that is no
/// authority is not a key at all.
#[tokio::test]
async fn a_hostile_host_header_never_lands_on_another_resource() {
    let handler = Handler::new(|request| personal(request, Some("public, max-age=60")));
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    let poison = send(
        &service,
        request("GET", "/app.js", &[("host", "site/static")]),
    )
    .await;
    assert_eq!(poison.x_cache(), "miss");
    let victim = send(
        &service,
        request("GET", "/static/app.js", &[("host", "site")]),
    )
    .await;
    assert_eq!(
        (victim.x_cache(), &victim.body[..]),
        (
            "miss",
            &b"cookie=- authorization=- host=site path=/static/app.js"[..]
        )
    );
    // Hosts that are no authority reach the handler and are never stored.
    for host in [
        "site/static",
        "site?x",
        "site#x",
        "user@site",
        "site x",
        "site\tx",
        "",
        "site:port",
        "[::1",
        "sité",
    ] {
        let Ok(value) = http::HeaderValue::from_bytes(host.as_bytes()) else {
            continue;
        };
        for _ in 0..2 {
            let mut asked = request("GET", "/page", &[]);
            asked.headers_mut().insert(header::HOST, value.clone());
            let answer = send(&service, asked).await;
            assert_eq!(answer.x_cache(), "miss", "{host:?}");
        }
    }
    // Two Host headers are no authority either.
    for _ in 0..2 {
        let answer = send(
            &service,
            request("GET", "/page", &[("host", "site"), ("host", "other")]),
        )
        .await;
        assert_eq!(answer.x_cache(), "miss", "two hosts");
    }
    // Another spelling of the host is another key: the handler may write it in its page.
    let upper = send(
        &service,
        request("GET", "/static/app.js", &[("host", "SITE")]),
    )
    .await;
    assert_eq!(
        (upper.x_cache(), &upper.body[..]),
        (
            "miss",
            &b"cookie=- authorization=- host=SITE path=/static/app.js"[..]
        )
    );
    let again = send(
        &service,
        request("GET", "/static/app.js", &[("host", "site")]),
    )
    .await;
    assert_eq!((again.x_cache(), &again.body), ("hit", &victim.body));
    // An absolute-form target names the host: a different `Host` beside it is refused, the
    // same one shares the key.
    let absolute = send(
        &service,
        request("GET", "http://site/static/app.js", &[("host", "evil")]),
    )
    .await;
    assert_eq!(absolute.x_cache(), "miss");
    let absolute = send(
        &service,
        request("GET", "http://site/static/app.js", &[("host", "site")]),
    )
    .await;
    assert_eq!(absolute.x_cache(), "hit");
    // A key past the bound is not stored.
    let long = format!("/{}", "x".repeat(9000));
    for _ in 0..2 {
        let answer = send(&service, request("GET", &long, &[("host", "site")])).await;
        assert_eq!(answer.x_cache(), "miss", "long key");
    }
}

/// Issue 28, item 2: variant keys keep values apart however they are split or spelled.
#[tokio::test]
async fn variant_keys_never_collide() {
    let handler = Handler::new(|request| {
        let values: Vec<String> = request
            .headers()
            .get_all("accept-language")
            .iter()
            .map(|value| format!("{:?}", value.as_bytes()))
            .collect();
        Response::builder()
            .header(header::CACHE_CONTROL, "max-age=60")
            .header(header::VARY, "accept-language, x-other")
            .body(Body::from(values.join("|")))
            .unwrap()
    });
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    let ask = |values: &[&[u8]]| {
        let mut asked = request("GET", "/v", &[]);
        for value in values {
            asked.headers_mut().append(
                "accept-language",
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        asked
    };
    let cases: [&[&[u8]]; 6] = [
        &[b"a,b"],
        &[b"a", b"b"],
        &[b"\xff"],
        &[b"\xfe"],
        &[b""],
        &[],
    ];
    for (at, values) in cases.iter().enumerate() {
        let answer = send(&service, ask(values)).await;
        assert_eq!(answer.x_cache(), "miss", "case {at}: {values:?}");
        let expected: Vec<String> = values.iter().map(|value| format!("{value:?}")).collect();
        assert_eq!(answer.body, expected.join("|"), "case {at}");
    }
    for (at, values) in cases.iter().enumerate() {
        let answer = send(&service, ask(values)).await;
        assert_eq!(answer.x_cache(), "hit", "case {at}: {values:?}");
    }
    assert_eq!(handler.calls(), cases.len());
}

/// Issue 28, item 3: `Expires: 0`, an unreadable `Expires` and an invalid or repeated
/// `max-age` mean stale (RFC 9111 §4.2.1, §5.3): not stored, whatever `fresh_for` says.
#[tokio::test]
async fn unreadable_lifetimes_are_stale_not_absent() {
    let handler = Handler::new(|request| {
        let mut response = Response::builder();
        for pair in request.uri().query().unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            let value = value.replace("%20", " ").replace("%22", "\"");
            response = response.header(name, value);
        }
        response.body(Body::from("x")).unwrap()
    });
    let service =
        ResponseCacheLayer::builder(tiered().fresh_for(Duration::from_secs(60)).build().unwrap())
            .build()
            .unwrap()
            .layer(handler.service());
    let stale = [
        "expires=0",
        "expires=-1",
        "expires=yesterday",
        "expires=Sun,%2006%20Nov%201994%2008:49:37",
        "expires=0&expires=Sun,%2006%20Nov%202094%2008:49:37%20GMT",
        "cache-control=max-age=-1",
        "cache-control=max-age=abc",
        "cache-control=max-age=%22abc%22",
        "cache-control=max-age",
        "cache-control=max-age=60,%20max-age=0",
        "cache-control=max-age=60&cache-control=max-age=61",
        "cache-control=s-maxage=x,%20max-age=60",
        "cache-control=public,%20s-maxage=-5",
        "cache-control=max-age=1x&expires=Sun,%2006%20Nov%202094%2008:49:37%20GMT",
    ];
    for query in stale {
        for _ in 0..2 {
            let answer = send(&service, request("GET", &format!("/l?{query}"), &[])).await;
            assert_eq!(answer.x_cache(), "miss", "{query}");
        }
    }
    // Valid ones still count: a max-age overrides a stale Expires (RFC 9111 §5.3), and a
    // response that says nothing takes `fresh_for`.
    for query in [
        "cache-control=max-age=60&expires=0",
        "x-nothing=said",
        "cache-control=public",
    ] {
        send(&service, request("GET", &format!("/l?{query}"), &[])).await;
        let answer = send(&service, request("GET", &format!("/l?{query}"), &[])).await;
        assert_eq!(answer.x_cache(), "hit", "{query}");
    }
}

/// Issue 28, item 1: a header the builder names is a credential like `Cookie`.
#[tokio::test]
async fn a_named_credential_header_is_personal_too() {
    let handler = Handler::new(|request| {
        let key = request
            .headers()
            .get("x-api-key")
            .map_or("-", |value| value.to_str().unwrap())
            .to_owned();
        let cache_control = if request.uri().path() == "/public" {
            "public, max-age=60"
        } else {
            "max-age=60"
        };
        json(format!("key {key}"), cache_control)
    });
    let service =
        ResponseCacheLayer::builder(tiered().fresh_for(Duration::from_secs(60)).build().unwrap())
            .credential_header(http::HeaderName::from_static("x-api-key"))
            .build()
            .unwrap()
            .layer(handler.service());
    for key in ["a", "b", "a"] {
        let answer = send(&service, request("GET", "/mine", &[("x-api-key", key)])).await;
        assert_eq!(
            (answer.x_cache(), &answer.body[..]),
            ("miss", format!("key {key}").as_bytes())
        );
    }
    send(&service, request("GET", "/public", &[("x-api-key", "a")])).await;
    let answer = send(&service, request("GET", "/public", &[("x-api-key", "b")])).await;
    assert_eq!((answer.x_cache(), &answer.body[..]), ("hit", &b"key a"[..]));
}

/// A handler that writes what it reads from a request: its forwarded host, its body length,
/// its cookie.
fn echoing(request: &Request<Body>) -> Reply {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .map_or("-", |value| value.to_str().unwrap())
            .to_owned()
    };
    json(
        format!(
            "forwarded-host={} length={} cookie={}",
            header("x-forwarded-host"),
            header("content-length"),
            header("cookie")
        ),
        "max-age=60",
    )
}

#[tokio::test]
async fn forwarding_headers_and_request_bodies_never_reach_another_clients_answer() {
    let handler = Handler::new(echoing);
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    // A handler that builds links from X-Forwarded-Host: the hostile value is keyed apart.
    let poisoned = send(
        &service,
        request(
            "GET",
            "/links",
            &[("host", "site"), ("x-forwarded-host", "evil.example")],
        ),
    )
    .await;
    assert!(String::from_utf8_lossy(&poisoned.body).contains("evil.example"));
    let clean = send(&service, request("GET", "/links", &[("host", "site")])).await;
    assert!(
        !String::from_utf8_lossy(&clean.body).contains("evil"),
        "{:?}",
        clean.body
    );
    // Method and URL overrides pass.
    send(
        &service,
        request(
            "GET",
            "/links",
            &[("host", "site"), ("x-original-url", "/admin")],
        ),
    )
    .await;
    assert_eq!(handler.calls(), 3);
    // A GET with a body is the handler's, unstored: the body is not in the key.
    let with_body = Request::builder()
        .method("GET")
        .uri("/search")
        .header("host", "site")
        .header("content-length", "4")
        .body(Body::from("evil"))
        .unwrap();
    let answered = send(&service, with_body).await;
    assert_eq!(answered.x_cache(), "miss");
    let plain = send(&service, request("GET", "/search", &[("host", "site")])).await;
    assert!(
        String::from_utf8_lossy(&plain.body).contains("length=-"),
        "{:?}",
        plain.body
    );
}

#[tokio::test(start_paused = true)]
async fn a_personal_request_never_leads_the_load_anonymous_requests_wait_for() {
    // The handler is slow, and answers a cookie-carrying request privately.
    let mut handler = Handler::new(|request| {
        if request.headers().contains_key("cookie") {
            json("personal", "private")
        } else {
            json("public page", "max-age=60")
        }
    });
    handler.delay = Duration::from_secs(2);
    let cache = tiered()
        .load_hard_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let service = ResponseCacheLayer::builder(cache)
        .build()
        .unwrap()
        .layer(handler.service());
    let personal = tokio::spawn({
        let service = service.clone();
        async move { send(&service, request("GET", "/hot", &[("cookie", "s=x")])).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let anonymous: Vec<_> = (0..20)
        .map(|_| {
            let service = service.clone();
            tokio::spawn(async move { send(&service, request("GET", "/hot", &[])).await })
        })
        .collect();
    assert_eq!(&personal.await.unwrap().body[..], b"personal");
    for answer in anonymous {
        let answer = answer.await.unwrap();
        assert_eq!(
            (answer.status, &answer.body[..]),
            (StatusCode::OK, &b"public page"[..])
        );
    }
    // One call for the personal request, one for all the anonymous ones.
    assert_eq!(handler.calls(), 2);
}

#[tokio::test]
async fn an_unsafe_request_that_succeeds_invalidates_the_url_and_its_variants() {
    let version = Arc::new(AtomicUsize::new(1));
    let handler = Handler::new({
        let version = Arc::clone(&version);
        move |request| {
            let mut response = json(
                format!(
                    "v{} {}",
                    version.load(Ordering::SeqCst),
                    request
                        .headers()
                        .get("accept-language")
                        .map_or("-", |value| value.to_str().unwrap())
                ),
                "max-age=600",
            );
            response
                .headers_mut()
                .insert(header::VARY, "Accept-Language".parse().unwrap());
            response
        }
    });
    let service = ResponseCacheLayer::builder(tiered().build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    let get = |language: &'static str| request("GET", "/article", &[("accept-language", language)]);
    send(&service, get("en")).await;
    send(&service, get("fr")).await;
    assert_eq!(send(&service, get("fr")).await.x_cache(), "hit");
    version.store(2, Ordering::SeqCst);
    let put = send(&service, request("PUT", "/article", &[])).await;
    assert_eq!(put.status, StatusCode::OK);
    // Both variants are gone, including the one whose list is learned again first.
    assert_eq!(&send(&service, get("en")).await.body[..], b"v2 en");
    assert_eq!(&send(&service, get("fr")).await.body[..], b"v2 fr");
}

#[tokio::test]
async fn what_a_shared_cache_must_not_keep_is_not_kept() {
    let handler = Handler::new(|request| match request.uri().path() {
        // Already older than its lifetime, or an Age past any number.
        "/aged" => {
            let mut response = json("aged", "max-age=60");
            response.headers_mut().insert("age", "120".parse().unwrap());
            response
        }
        "/overflowing-age" => {
            let mut response = json("overflow", "max-age=60");
            response
                .headers_mut()
                .insert("age", "99999999999999999999999".parse().unwrap());
            response
        }
        // Encoded for one client, not saying it varies by encoding.
        "/encoded" => {
            let mut response = json("compressed bytes", "max-age=60");
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, "br".parse().unwrap());
            response
        }
        // A directive list whose quote never closes hides what follows it.
        "/unterminated" => json("hidden", "max-age=600, no-cache=\"x, private"),
        // An error without a lifetime of its own (fresh_for is for successes).
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("not found"))
            .unwrap(),
    });
    let service =
        ResponseCacheLayer::builder(tiered().fresh_for(Duration::from_secs(60)).build().unwrap())
            .build()
            .unwrap()
            .layer(handler.service());
    for path in [
        "/aged",
        "/overflowing-age",
        "/encoded",
        "/unterminated",
        "/missing",
    ] {
        send(&service, request("GET", path, &[])).await;
        let again = send(&service, request("GET", path, &[])).await;
        assert_eq!(again.x_cache(), "miss", "{path}");
    }
    assert_eq!(handler.calls(), 10);
}

#[tokio::test]
async fn credential_values_are_never_in_a_key() {
    let handler = Handler::new(|request| {
        let mut response = echoing(request);
        response
            .headers_mut()
            .insert(header::VARY, "Cookie".parse().unwrap());
        response
    });
    let memory = memory();
    let service = ResponseCacheLayer::builder(tiered().memory(memory.clone()).build().unwrap())
        .build()
        .unwrap()
        .layer(handler.service());
    // A first anonymous request learns the URL's Vary list; the cookie's own variant next.
    send(&service, request("GET", "/me", &[])).await;
    send(
        &service,
        request("GET", "/me", &[("cookie", "session=SECRET")]),
    )
    .await;
    let hit = send(
        &service,
        request("GET", "/me", &[("cookie", "session=SECRET")]),
    )
    .await;
    assert_eq!(hit.x_cache(), "hit");
    let keys: Vec<String> = memory.iter().map(|(key, _)| key).collect();
    assert!(keys.len() >= 2, "{keys:?}");
    assert!(keys.iter().all(|key| !key.contains("SECRET")), "{keys:?}");
}
