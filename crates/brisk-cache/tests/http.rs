//! `ConditionalLayer`: validators from the handler or a body hash, every precondition answered
//! after the handler, streaming bodies untouched, `Cache-Control` policies, and curl
//! revalidating against a real server.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::body::Body;
use brisk_cache::http::{CacheControl, ConditionalLayer};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use tower::{Layer, ServiceExt, service_fn};

#[path = "support/chunks.rs"]
mod support;

type Reply = Response<Body>;

/// A handler that counts its calls and answers `make()`.
fn handler(
    calls: Arc<AtomicUsize>,
    make: impl Fn() -> Reply + Clone + Send + 'static,
) -> impl tower::Service<Request<Body>, Response = Reply, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |_: Request<Body>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let make = make.clone();
        async move { Ok::<_, Infallible>(make()) }
    })
}

fn layer() -> ConditionalLayer {
    ConditionalLayer::builder()
        .cache_control(
            CacheControl::private()
                .max_age(Duration::from_secs(60))
                .must_revalidate(),
        )
        .cache_control_for(
            "image/",
            CacheControl::public()
                .max_age(Duration::from_secs(3600))
                .immutable(),
        )
        .build()
        .unwrap()
}

fn request(method: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder().method(method).uri("/product/7");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).unwrap()
}

async fn send<S>(service: S, request: Request<Body>) -> (StatusCode, http::HeaderMap, Bytes)
where
    S: tower::Service<
            Request<Body>,
            Response = Response<brisk_cache::http::CacheBody<Body>>,
            Error = Infallible,
        >,
{
    let response = service.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn a_bounded_body_gets_a_stable_hash_etag_and_a_matching_request_a_304() {
    let calls = Arc::new(AtomicUsize::new(0));
    let json = || {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"id":7,"name":"kettle"}"#))
            .unwrap()
    };
    let service = layer().layer(handler(Arc::clone(&calls), json));
    let (status, headers, body) = send(service.clone(), request("GET", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, r#"{"id":7,"name":"kettle"}"#);
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(
        etag,
        format!(
            "\"{:016x}\"",
            xxhash_rust::xxh3::xxh3_64(br#"{"id":7,"name":"kettle"}"#)
        ),
        "the tag is the XXH3 of the bytes: the same in every instance"
    );
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "private, max-age=60, must-revalidate"
    );

    let (status, headers, body) =
        send(service.clone(), request("GET", &[("if-none-match", &etag)])).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers[header::ETAG], etag.as_str());
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "private, max-age=60, must-revalidate"
    );
    assert!(!headers.contains_key(header::CONTENT_TYPE));
    // A weak form of the tag matches too (If-None-Match compares weakly); HEAD is a read.
    let weak = format!("W/{etag}");
    let (status, ..) = send(service.clone(), request("GET", &[("if-none-match", &weak)])).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // A write's preconditions are not answered after the handler has performed it (only
    // a `validator` answers them, before): the handler's own answer stands.
    let (status, ..) = send(service.clone(), request("PUT", &[("if-none-match", &etag)])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ..) = send(
        service.clone(),
        request("PUT", &[("if-match", "\"other\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // If-Match on a read: strong comparison, else 412.
    let (status, ..) = send(
        service.clone(),
        request("GET", &[("if-match", "\"other\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, ..) = send(service, request("GET", &[("if-match", &etag)])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        7,
        "the handler ran for every request"
    );
}

#[tokio::test]
async fn the_handlers_own_validators_count_and_its_cache_control_stays() {
    let calls = Arc::new(AtomicUsize::new(0));
    let tagged = || {
        Response::builder()
            .header(header::ETAG, "W/\"v42\"")
            .header(header::LAST_MODIFIED, "Sun, 06 Nov 1994 08:49:37 GMT")
            .header(header::CACHE_CONTROL, "no-cache")
            .header(header::VARY, "accept-encoding")
            .body(Body::from("a body the layer does not hash"))
            .unwrap()
    };
    let service = layer().layer(handler(Arc::clone(&calls), tagged));
    let (status, headers, _) = send(service.clone(), request("GET", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ETAG], "W/\"v42\"");
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "no-cache",
        "the handler's own policy"
    );
    let (status, headers, _) = send(
        service.clone(),
        request("GET", &[("if-none-match", "\"v41\", W/\"v42\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::VARY], "accept-encoding");
    assert_eq!(
        headers[header::LAST_MODIFIED],
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
    // If-Modified-Since against Last-Modified.
    let (status, ..) = send(
        service.clone(),
        request(
            "GET",
            &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let (status, ..) = send(
        service,
        request(
            "GET",
            &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn streaming_and_large_bodies_pass_untouched_and_errors_are_not_answered() {
    let calls = Arc::new(AtomicUsize::new(0));
    let streamed = || {
        let chunks = support::chunks(vec![
            Bytes::from_static(b"one,"),
            Bytes::from_static(b"two"),
        ]);
        Response::builder()
            .header(header::CONTENT_TYPE, "image/png")
            .body(Body::from_stream(chunks))
            .unwrap()
    };
    let service = layer().layer(handler(Arc::clone(&calls), streamed));
    let (status, headers, body) = send(
        service.clone(),
        request("GET", &[("if-none-match", "\"x\"")]),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "no validator: nothing matches a tag"
    );
    assert!(!headers.contains_key(header::ETAG));
    assert_eq!(body, "one,two");
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=3600, immutable"
    );

    let large = || Response::new(Body::from(vec![b'x'; 1000]));
    let small_bound = ConditionalLayer::builder()
        .max_hashed_body(999)
        .build()
        .unwrap();
    let (_, headers, body) = send(
        small_bound.layer(handler(Arc::clone(&calls), large)),
        request("GET", &[]),
    )
    .await;
    assert!(
        !headers.contains_key(header::ETAG),
        "over the bound: not read whole"
    );
    assert_eq!(body.len(), 1000);

    let missing = || {
        Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("no such product"))
            .unwrap()
    };
    let (status, headers, _) = send(
        layer().layer(handler(Arc::clone(&calls), missing)),
        request("GET", &[("if-match", "\"x\"")]),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "preconditions apply to 2xx only"
    );
    assert!(!headers.contains_key(header::ETAG));

    assert!(
        ConditionalLayer::builder()
            .max_hashed_body(0)
            .build()
            .is_err()
    );
    assert!(
        ConditionalLayer::builder()
            .cache_control_for("", CacheControl::no_store())
            .build()
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_revalidates_with_etag_save_and_compare() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app = axum::Router::new()
        .route(
            "/product/7",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"id":7,"name":"kettle"}"#,
                    )
                }
            }),
        )
        .layer(layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/product/7", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let etag_file = dir.path().join("etag");
    let curl = |args: Vec<String>| async move {
        let output = tokio::process::Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code}",
            ])
            .args(args)
            .output()
            .await
            .expect("curl runs (xtask installs it)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let file = etag_file.display().to_string();
    assert_eq!(
        curl(vec!["--etag-save".into(), file.clone(), url.clone()]).await,
        "200"
    );
    let saved = std::fs::read_to_string(&etag_file).unwrap();
    assert!(saved.trim().starts_with('"'), "{saved:?}");
    assert_eq!(
        curl(vec!["--etag-compare".into(), file, url.clone()]).await,
        "304"
    );
    assert_eq!(
        curl(vec![
            "-H".into(),
            format!("If-None-Match: {}", saved.trim()),
            url.clone()
        ])
        .await,
        "304"
    );
    assert_eq!(
        curl(vec!["-H".into(), "If-None-Match: \"stale\"".into(), url]).await,
        "200"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn answers_are_counted() {
    let registry = brisk_metrics::Registry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let body = || Response::new(Body::from("0123456789"));
    let service = ConditionalLayer::builder()
        .metrics(&registry, "api")
        .build()
        .unwrap()
        .layer(handler(Arc::clone(&calls), body));
    let (_, headers, _) = send(service.clone(), request("GET", &[])).await;
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    for _ in 0..3 {
        send(service.clone(), request("GET", &[("if-none-match", &etag)])).await;
    }
    send(service, request("GET", &[("if-match", "\"gone\"")])).await;
    let counter = |name| {
        registry
            .snapshot()
            .counter(name, &[("name", "api")])
            .unwrap()
    };
    assert_eq!(counter("brisk_cache_http_not_modified_total"), 3);
    assert_eq!(counter("brisk_cache_http_precondition_failed_total"), 1);
    assert_eq!(counter("brisk_cache_http_bodies_hashed_total"), 5);
    assert_eq!(
        counter("brisk_cache_http_bytes_saved_total"),
        30,
        "3 × 10 bytes not sent"
    );
}

#[tokio::test]
async fn a_looked_up_validator_answers_before_the_handler_runs() {
    let registry = brisk_metrics::Registry::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let body = || Response::new(Body::from("product 7, rendered"));
    // The version of the entry behind /product/7; nothing for other paths.
    let service = ConditionalLayer::builder()
        .cache_control(CacheControl::private().no_cache())
        .validator(|parts: &http::request::Parts| {
            let known = (parts.uri.path() == "/product/7")
                .then(|| brisk_cache::http::EntityTag::weak("v7").unwrap());
            async move { known }
        })
        .metrics(&registry, "api")
        .build()
        .unwrap()
        .layer(handler(Arc::clone(&calls), body));

    let (status, headers, body) = send(service.clone(), request("GET", &[])).await;
    assert_eq!(
        (status, body.as_ref()),
        (StatusCode::OK, &b"product 7, rendered"[..])
    );
    assert_eq!(
        headers[header::ETAG],
        "W/\"v7\"",
        "the version, not a body hash"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let (status, headers, body) = send(
        service.clone(),
        request("GET", &[("if-none-match", "W/\"v7\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers[header::ETAG], "W/\"v7\"");
    assert_eq!(headers[header::CACHE_CONTROL], "private, no-cache");
    let (status, ..) = send(service.clone(), request("PUT", &[("if-match", "\"v6\"")])).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "neither reached the handler"
    );
    assert_eq!(
        registry
            .snapshot()
            .counter(
                "brisk_cache_http_handler_calls_saved_total",
                &[("name", "api")]
            )
            .unwrap(),
        2
    );

    // A changed version: the old tag no longer matches, the handler runs.
    let (status, ..) = send(
        service.clone(),
        request("GET", &[("if-none-match", "W/\"v6\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // No version known: the body hash decides, after the handler.
    let other = Request::builder()
        .uri("/product/8")
        .body(Body::empty())
        .unwrap();
    let (_, headers, _) = send(service, other).await;
    assert_ne!(headers[header::ETAG], "W/\"v7\"");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_cache_entrys_version_revalidates_without_the_handler() {
    use brisk_cache::{Cache, MemoryCache, Tiered, http::EntityTag};
    let products: Tiered<u64, String> = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(100).build().unwrap())
        .build()
        .unwrap();
    products.insert(7, "kettle".into(), None).await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = products.clone();
    let service = ConditionalLayer::builder()
        .validator(move |_parts: &http::request::Parts| {
            let products = lookup.clone();
            async move {
                products
                    .version(&7)
                    .await
                    .ok()
                    .flatten()
                    .map(EntityTag::from_version)
            }
        })
        .build()
        .unwrap()
        .layer(handler(Arc::clone(&calls), || {
            Response::new(Body::from("kettle"))
        }));

    let (_, headers, _) = send(service.clone(), request("GET", &[])).await;
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let (status, ..) = send(service.clone(), request("GET", &[("if-none-match", &etag)])).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the 304 came from the cache entry"
    );

    // A write makes a new version: the old tag no longer matches.
    products.insert(7, "teapot".into(), None).await.unwrap();
    let (status, headers, _) = send(service, request("GET", &[("if-none-match", &etag)])).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers[header::ETAG].to_str().unwrap(), etag);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn head_and_ranges_are_the_handlers_and_a_part_is_never_hashed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let partial = || {
        Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, "bytes 0-3/10")
            .body(Body::from("0123"))
            .unwrap()
    };
    let range = request("GET", &[("range", "bytes=0-3"), ("if-range", "\"v1\"")]);
    let (status, headers, body) =
        send(layer().layer(handler(Arc::clone(&calls), partial)), range).await;
    assert_eq!(
        (status, body.as_ref()),
        (StatusCode::PARTIAL_CONTENT, &b"0123"[..])
    );
    assert!(
        !headers.contains_key(header::ETAG),
        "a part's hash is no tag of the whole"
    );

    // HEAD: the handler's own tag answers a revalidation; a body is not read for a hash.
    let tagged = || {
        Response::builder()
            .header(header::ETAG, "\"v1\"")
            .body(Body::empty())
            .unwrap()
    };
    let (status, ..) = send(
        layer().layer(handler(Arc::clone(&calls), tagged)),
        request("HEAD", &[("if-none-match", "\"v1\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    let untagged = || Response::new(Body::from("a body a HEAD response would not send"));
    let (status, headers, _) = send(
        layer().layer(handler(Arc::clone(&calls), untagged)),
        request("HEAD", &[("if-none-match", "\"x\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key(header::ETAG));
    // `*` matches any current representation, validators or not (RFC 9110 §13.1.2).
    let (status, ..) = send(
        layer().layer(handler(Arc::clone(&calls), untagged)),
        request("GET", &[("if-none-match", "*")]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

/// A policy meant for successes never goes on an error or on a response that sets a cookie
/// (issue 28, item 6): a 500 stamped `public, max-age=3600` would be kept by every shared
/// cache in front, and a `Set-Cookie` response marked `public` hands one user's session to
/// the next. Nor does a looked-up tag go on an error.
#[tokio::test]
async fn policies_go_on_successes_and_304s_only_never_on_errors_or_cookies() {
    let calls = Arc::new(AtomicUsize::new(0));
    let json = |status: StatusCode, cookie: bool| {
        move || {
            let mut response = Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "application/json");
            if cookie {
                response = response.header(header::SET_COOKIE, "session=a1");
            }
            response.body(Body::from(r#"{"error":true}"#)).unwrap()
        }
    };
    let layer = ConditionalLayer::builder()
        .cache_control(CacheControl::public().max_age(Duration::from_secs(60)))
        .cache_control_for(
            "application/json",
            CacheControl::public().max_age(Duration::from_secs(3600)),
        )
        .validator(|_parts: &http::request::Parts| async {
            Some(brisk_cache::http::EntityTag::strong("v1").unwrap())
        })
        .build()
        .unwrap();
    for (status, cookie) in [
        (StatusCode::INTERNAL_SERVER_ERROR, false),
        (StatusCode::SERVICE_UNAVAILABLE, false),
        (StatusCode::NOT_FOUND, false),
        (StatusCode::FORBIDDEN, false),
        (StatusCode::MOVED_PERMANENTLY, false),
        (StatusCode::OK, true),
        (StatusCode::INTERNAL_SERVER_ERROR, true),
    ] {
        let service = layer.layer(handler(Arc::clone(&calls), json(status, cookie)));
        let (answered, headers, _) = send(service, request("GET", &[])).await;
        assert_eq!(answered, status);
        assert!(
            !headers.contains_key(header::CACHE_CONTROL),
            "{status} (cookie: {cookie}): {:?}",
            headers.get(header::CACHE_CONTROL)
        );
        if !status.is_success() {
            assert!(
                !headers.contains_key(header::ETAG),
                "{status}: no tag on a failure"
            );
        }
    }
    // A 2xx without a cookie, and a 304, get the policy.
    let service = layer.layer(handler(Arc::clone(&calls), json(StatusCode::OK, false)));
    let (status, headers, _) = send(service.clone(), request("GET", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=3600");
    let not_modified = || {
        Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::empty())
            .unwrap()
    };
    let service = layer.layer(handler(Arc::clone(&calls), not_modified));
    let (status, headers, _) = send(service, request("GET", &[])).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=3600");
}

/// A policy that lets shared caches keep a response (`public`, `s-maxage`) is never stamped
/// on the answer to a request with credentials (`Authorization`, `Cookie`): the handler's page
/// for user A would be handed to user B by a CDN. It goes out made private instead (`private`,
/// `s-maxage` dropped); a policy that is private already is stamped as it is.
#[tokio::test]
async fn a_shared_policy_goes_out_private_on_a_request_with_credentials() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ConditionalLayer::builder()
        .cache_control(
            CacheControl::public()
                .max_age(Duration::from_secs(60))
                .s_maxage(Duration::from_secs(600)),
        )
        .cache_control_for("text/", CacheControl::private().no_cache())
        .build()
        .unwrap();
    let page = |content_type: &'static str| {
        move || {
            Response::builder()
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from("user A's page"))
                .unwrap()
        }
    };
    let me = layer.layer(handler(Arc::clone(&calls), page("application/json")));
    let (status, headers, _) = send(me.clone(), request("GET", &[])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=60, s-maxage=600",
        "no credentials: the policy as set"
    );
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    for credentials in [
        ("cookie", "s=A"),
        ("authorization", "Bearer a"),
        ("Cookie", ""),
    ] {
        let (status, headers, _) = send(me.clone(), request("GET", &[credentials])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "private, max-age=60",
            "{credentials:?}"
        );
        // A revalidation's 304 says the same.
        let (status, headers, _) = send(
            me.clone(),
            request("GET", &[credentials, ("if-none-match", &etag)]),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert_eq!(
            headers[header::CACHE_CONTROL],
            "private, max-age=60",
            "{credentials:?}"
        );
    }
    // A private policy only restricts: stamped as it is.
    let text = layer.layer(handler(Arc::clone(&calls), page("text/html")));
    let (_, headers, _) = send(text, request("GET", &[("cookie", "s=A")])).await;
    assert_eq!(headers[header::CACHE_CONTROL], "private, no-cache");
    // The handler's own `Cache-Control` is its own, credentials or not.
    let own = layer.layer(handler(Arc::clone(&calls), || {
        Response::builder()
            .header(header::CACHE_CONTROL, "public, max-age=5")
            .body(Body::from("logo"))
            .unwrap()
    }));
    let (_, headers, _) = send(own, request("GET", &[("cookie", "s=A")])).await;
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=5");

    // A 304 from a looked-up validator, before the handler, too.
    let looked_up = ConditionalLayer::builder()
        .cache_control(CacheControl::public().max_age(Duration::from_secs(60)))
        .validator(|_parts: &http::request::Parts| async {
            Some(brisk_cache::http::EntityTag::strong("v1").unwrap())
        })
        .build()
        .unwrap()
        .layer(handler(Arc::clone(&calls), page("application/json")));
    let (status, headers, _) = send(
        looked_up.clone(),
        request("GET", &[("if-none-match", "\"v1\"")]),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=60");
    let (status, headers, _) = send(
        looked_up,
        request(
            "GET",
            &[("authorization", "Bearer a"), ("if-none-match", "\"v1\"")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(headers[header::CACHE_CONTROL], "private, max-age=60");
}

/// Policies are for reads' full answers: a GET or HEAD answered 2xx other than 206, or 304.
/// A part (206), or the answer to a POST, PUT or DELETE, goes out without one.
#[tokio::test]
async fn policies_go_on_full_answers_to_reads_only() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ConditionalLayer::builder()
        .cache_control(CacheControl::public().max_age(Duration::from_secs(60)))
        .no_body_hash()
        .build()
        .unwrap();
    let answer = |status: StatusCode| {
        move || {
            Response::builder()
                .status(status)
                .body(Body::from("0123"))
                .unwrap()
        }
    };
    for (method, status, stamped) in [
        ("GET", StatusCode::OK, true),
        ("HEAD", StatusCode::OK, true),
        ("GET", StatusCode::NO_CONTENT, true),
        ("GET", StatusCode::NOT_MODIFIED, true),
        ("GET", StatusCode::PARTIAL_CONTENT, false),
        ("HEAD", StatusCode::PARTIAL_CONTENT, false),
        ("POST", StatusCode::CREATED, false),
        ("POST", StatusCode::ACCEPTED, false),
        ("POST", StatusCode::OK, false),
        ("PUT", StatusCode::OK, false),
        ("PATCH", StatusCode::OK, false),
        ("DELETE", StatusCode::NO_CONTENT, false),
        ("OPTIONS", StatusCode::OK, false),
    ] {
        let service = layer.layer(handler(Arc::clone(&calls), answer(status)));
        let (answered, headers, _) = send(service, request(method, &[])).await;
        assert_eq!(answered, status);
        assert_eq!(
            headers.contains_key(header::CACHE_CONTROL),
            stamped,
            "{method} {status}: {:?}",
            headers.get(header::CACHE_CONTROL)
        );
    }
}

/// A 304 the layer makes from the handler's response keeps its `Set-Cookie` (a session
/// refresh is not lost), `Age` and `x-cache`, besides RFC 9110 §15.4.5's list.
#[tokio::test]
async fn a_304_keeps_the_handlers_set_cookie_age_and_x_cache() {
    let calls = Arc::new(AtomicUsize::new(0));
    let service = layer().layer(handler(Arc::clone(&calls), || {
        Response::builder()
            .header(header::ETAG, "\"v1\"")
            .header(header::SET_COOKIE, "session=renewed; HttpOnly")
            .header(header::SET_COOKIE, "theme=dark")
            .header(header::AGE, "5")
            .header("x-cache", "hit")
            .header("x-internal", "not for a 304")
            .body(Body::from("page"))
            .unwrap()
    }));
    let (status, headers, body) =
        send(service, request("GET", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let cookies: Vec<_> = headers.get_all(header::SET_COOKIE).iter().collect();
    assert_eq!(cookies, ["session=renewed; HttpOnly", "theme=dark"]);
    assert_eq!(headers[header::AGE], "5");
    assert_eq!(headers["x-cache"], "hit");
    assert_eq!(headers[header::ETAG], "\"v1\"");
    assert!(!headers.contains_key("x-internal"));
    assert!(
        !headers.contains_key(header::CACHE_CONTROL),
        "a response that sets a cookie gets no policy"
    );
}
