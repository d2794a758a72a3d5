//! The tower layers end to end: an axum server on loopback and a real HTTP client (hyper).

use std::{
    io::Read as _,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use brisk_compress::{
    Encoder, Encoding, Level, Policy, compress,
    tower::{CompressionLayer, DecompressionLayer},
};
use brisk_metrics::Registry;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::{Mutex, mpsc};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn api_json() -> String {
    let users: Vec<String> = (0..300)
        .map(|id| {
            format!(
                r#"{{"id":{id},"name":"User {id}","email":"user{id}@example.com","plan":"pro"}}"#
            )
        })
        .collect();
    format!("[{}]", users.join(","))
}

/// A handler that validates its own ETag, as handlers do: `If-None-Match` compared weakly
/// (RFC 9110 §13.1.2), answered 304 with the ETag and no other representation header.
async fn big(headers: HeaderMap) -> axum::response::Response {
    let etag = "\"big-v1\"";
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .flat_map(|value| value.to_str().unwrap().split(','))
        .any(|tag| tag.trim().trim_start_matches("W/") == etag);
    if matches {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ETAG, etag),
        ],
        api_json(),
    )
        .into_response()
}

struct Server {
    base: String,
    client: HttpClient,
    /// Sends the next server-sent event of `/events`.
    events: mpsc::UnboundedSender<&'static str>,
    /// Times the `/echo` handler ran.
    echoes: Arc<AtomicUsize>,
    registry: Registry,
}

async fn start() -> Server {
    let (events_tx, events_rx) = mpsc::unbounded_channel::<&'static str>();
    let events_rx = Arc::new(Mutex::new(Some(events_rx)));
    let echoes = Arc::new(AtomicUsize::new(0));
    let registry = Registry::new();
    let counter = echoes.clone();
    let app = Router::new()
        .route(
            "/json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], api_json()) }),
        )
        .route(
            "/small",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"ok":true}"#,
                )
            }),
        )
        .route(
            "/png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![b'P'; 50_000]) }),
        )
        .route(
            "/tagged",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/plain"),
                        (header::ETAG, "\"v1\""),
                    ],
                    "tagged ".repeat(500),
                )
            }),
        )
        .route("/big", get(big))
        .route(
            "/no-transform",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CACHE_CONTROL, "public, no-transform"),
                    ],
                    api_json(),
                )
            }),
        )
        .route(
            "/varies",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::VARY, "Origin"),
                    ],
                    api_json(),
                )
            }),
        )
        .route(
            "/partial",
            get(|| async {
                let body = api_json();
                let range = format!("bytes 0-{}/{}", body.len() - 1, body.len() * 2);
                (
                    StatusCode::PARTIAL_CONTENT,
                    [
                        (header::CONTENT_TYPE, "application/json".to_owned()),
                        (header::CONTENT_RANGE, range),
                    ],
                    body,
                )
            }),
        )
        .route(
            "/pre-encoded",
            get(|| async {
                let gz = compress(Encoding::Gzip, Level::Best, api_json().as_bytes()).unwrap();
                (
                    [
                        (header::CONTENT_TYPE, "application/json"),
                        (header::CONTENT_ENCODING, "gzip"),
                    ],
                    gz,
                )
            }),
        )
        .route(
            "/events",
            get(move || {
                let events_rx = events_rx.clone();
                async move {
                    let rx = events_rx
                        .lock()
                        .await
                        .take()
                        .expect("one /events request per test");
                    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                        let event = rx.recv().await?;
                        Some((Ok::<_, std::convert::Infallible>(Bytes::from(event)), rx))
                    });
                    (
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        Body::from_stream(stream),
                    )
                }
            }),
        )
        .route(
            "/echo",
            post(move |headers: HeaderMap, body: Bytes| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let length = headers.get(header::CONTENT_LENGTH).cloned();
                    let encoding = headers.get(header::CONTENT_ENCODING).cloned();
                    let mut response = ([(header::CONTENT_TYPE, "application/octet-stream")], body)
                        .into_response();
                    let echoed = response.headers_mut();
                    if let Some(length) = length {
                        echoed.insert("x-request-length", length);
                    }
                    if let Some(encoding) = encoding {
                        echoed.insert("x-request-encoding", encoding);
                    }
                    response
                }
            }),
        )
        .layer(CompressionLayer::new(Policy::default()).metrics(&registry, "http"))
        .layer(
            DecompressionLayer::new()
                .limit(1 << 20)
                .metrics(&registry, "http"),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = Client::builder(TokioExecutor::new()).build_http();
    Server {
        base,
        client,
        events: events_tx,
        echoes,
        registry,
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> axum::http::Response<hyper::body::Incoming> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.client
            .request(request.body(Full::new(Bytes::from(body))).unwrap())
            .await
            .unwrap()
    }

    /// POSTs `body` to `/echo` with `Content-Encoding: encoding`.
    async fn post_echo(
        &self,
        encoding: &str,
        body: Vec<u8>,
    ) -> axum::http::Response<hyper::body::Incoming> {
        self.send(
            Method::POST,
            "/echo",
            &[("content-encoding", encoding)],
            body,
        )
        .await
    }

    async fn get(
        &self,
        path: &str,
        accept: Option<&str>,
    ) -> (axum::http::response::Parts, Vec<u8>) {
        let headers: Vec<(&str, &str)> =
            accept.map(|a| ("accept-encoding", a)).into_iter().collect();
        let response = self.send(Method::GET, path, &headers, Vec::new()).await;
        let (parts, body) = response.into_parts();
        (parts, body.collect().await.unwrap().to_bytes().to_vec())
    }
}

/// Decodes with the codec crates directly, independently of brisk-compress.
fn reference_decode(encoding: Option<&HeaderValue>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding.map(|value| value.to_str().unwrap()) {
        None => out.extend_from_slice(body),
        Some("gzip") => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("deflate") => {
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .unwrap();
        }
        Some("br") => brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap(),
        Some("zstd") => out = zstd::decode_all(body).unwrap(),
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    out
}

fn vary(parts: &axum::http::response::Parts) -> Vec<&str> {
    parts
        .headers
        .get_all(header::VARY)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[tokio::test]
async fn responses_are_compressed_as_negotiated() {
    let server = start().await;
    let json = api_json();
    let cases: &[(Option<&str>, Option<&str>)] = &[
        (Some("gzip"), Some("gzip")),
        (Some("deflate"), Some("deflate")),
        (Some("br"), Some("br")),
        (Some("zstd"), Some("zstd")),
        (Some("gzip, deflate, br, zstd"), Some("br")),
        (Some("gzip, zstd"), Some("gzip")),
        (Some("gzip;q=0.5, zstd;q=0.9"), Some("zstd")),
        (Some("BR;Q=0.1, GZIP;q=1.0"), Some("gzip")),
        (Some("*"), Some("br")),
        (Some("br;q=0, *;q=0.3"), Some("gzip")),
        (Some("identity"), None),
        (Some(""), None),
        (Some("lz4, compress"), None),
        (Some("gzip;q=2, br;q=abc"), None),
        (Some("identity;q=0, *;q=0"), None),
        (None, None),
    ];
    for &(accept, expected) in cases {
        let (parts, body) = server.get("/json", accept).await;
        assert_eq!(parts.status, StatusCode::OK);
        let encoding = parts.headers.get(header::CONTENT_ENCODING);
        assert_eq!(
            encoding.map(|v| v.to_str().unwrap()),
            expected,
            "Accept-Encoding: {accept:?}"
        );
        assert_eq!(vary(&parts), ["accept-encoding"], "{accept:?}");
        if expected.is_some() {
            assert!(
                !parts.headers.contains_key(header::CONTENT_LENGTH),
                "{accept:?}"
            );
            assert!(
                body.len() < json.len() / 4,
                "{accept:?}: {} bytes",
                body.len()
            );
        }
        assert_eq!(
            reference_decode(encoding, &body),
            json.as_bytes(),
            "{accept:?}"
        );
    }

    let labels = [
        ("name", "http"),
        ("encoding", "br"),
        ("direction", "compress"),
    ];
    let snapshot = server.registry.snapshot();
    let bytes_in = snapshot
        .counter("brisk_compress_bytes_in_total", &labels)
        .unwrap();
    assert_eq!(
        bytes_in,
        3 * json.len() as u64,
        "three responses were brotli"
    );
    let ratio = snapshot
        .ratio(
            "brisk_compress_bytes_out_total",
            "brisk_compress_bytes_in_total",
            &labels,
        )
        .unwrap();
    assert!(ratio < 0.25, "{ratio}");
    let skipped = [("name", "http"), ("reason", "not_accepted")];
    assert_eq!(
        snapshot.counter("brisk_compress_skipped_total", &skipped),
        Some(6)
    );
}

#[tokio::test]
async fn small_bodies_images_and_encoded_bodies_are_left_alone() {
    let server = start().await;
    let (parts, body) = server.get("/small", Some("gzip")).await;
    assert!(!parts.headers.contains_key(header::CONTENT_ENCODING));
    assert_eq!(parts.headers[header::CONTENT_LENGTH], "11");
    assert_eq!(body, br#"{"ok":true}"#);

    let (parts, body) = server.get("/png", Some("gzip, br")).await;
    assert!(!parts.headers.contains_key(header::CONTENT_ENCODING));
    assert!(
        vary(&parts).is_empty(),
        "an image never varies by Accept-Encoding"
    );
    assert_eq!(body.len(), 50_000);

    // Never compressed twice: the handler's own gzip goes out byte for byte.
    let (parts, body) = server.get("/pre-encoded", Some("br, gzip")).await;
    assert_eq!(parts.headers[header::CONTENT_ENCODING], "gzip");
    assert_eq!(
        body,
        compress(Encoding::Gzip, Level::Best, api_json().as_bytes()).unwrap()
    );
}

#[tokio::test]
async fn strong_etags_are_weakened_and_head_gets_the_headers_of_get() {
    let server = start().await;
    let (parts, _) = server.get("/tagged", Some("gzip")).await;
    assert_eq!(parts.headers[header::ETAG], "W/\"v1\"");
    let (parts, _) = server.get("/tagged", None).await;
    assert_eq!(parts.headers[header::ETAG], "\"v1\"");

    for (path, accept) in [
        ("/json", "gzip"),
        ("/tagged", "br"),
        ("/small", "gzip"),
        ("/json", "identity"),
    ] {
        let (get, body) = server.get(path, Some(accept)).await;
        let head = server
            .send(
                Method::HEAD,
                path,
                &[("accept-encoding", accept)],
                Vec::new(),
            )
            .await;
        let head_headers = head.headers().clone();
        let head_body = head.into_body().collect().await.unwrap().to_bytes();
        assert!(head_body.is_empty(), "{path}: HEAD sent a body");
        for name in [
            header::CONTENT_ENCODING,
            header::VARY,
            header::ETAG,
            header::CONTENT_TYPE,
        ] {
            assert_eq!(
                head_headers.get(&name),
                get.headers.get(&name),
                "{path} {accept}: HEAD and GET disagree on {name}"
            );
        }
        if get.headers.contains_key(header::CONTENT_ENCODING) {
            assert!(
                !head_headers.contains_key(header::CONTENT_LENGTH),
                "{path}: {head_headers:?}"
            );
        } else {
            assert_eq!(
                head_headers[header::CONTENT_LENGTH],
                body.len().to_string().as_str(),
                "{path}"
            );
        }
    }
    let head = server
        .send(
            Method::HEAD,
            "/json",
            &[("accept-encoding", "br")],
            Vec::new(),
        )
        .await;
    assert_eq!(head.headers()[header::CONTENT_ENCODING], "br");
    assert_eq!(head.headers()[header::VARY], "accept-encoding");
}

#[tokio::test]
async fn a_304_carries_the_etag_and_vary_of_the_200_it_validates() {
    let server = start().await;
    // The compressed 200: a weakened ETag and Vary.
    let (ok, _) = server.get("/big", Some("gzip, br")).await;
    assert_eq!(ok.headers[header::ETAG], "W/\"big-v1\"");
    assert_eq!(vary(&ok), ["accept-encoding"]);
    let revalidate = |tag: &'static str, accept: Option<&'static str>| {
        let mut headers = vec![("if-none-match", tag)];
        headers.extend(accept.map(|accept| ("accept-encoding", accept)));
        let server = &server;
        async move {
            let response = server.send(Method::GET, "/big", &headers, Vec::new()).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "{tag}");
            response.into_parts().0
        }
    };
    // A cache revalidating that 200 gets the same validator and Vary back (RFC 9110 §15.4.5).
    let not_modified = revalidate("W/\"big-v1\"", Some("gzip, br")).await;
    assert_eq!(not_modified.headers[header::ETAG], "W/\"big-v1\"");
    assert_eq!(vary(&not_modified), ["accept-encoding"]);
    assert!(!not_modified.headers.contains_key(header::CONTENT_ENCODING));
    // A client holding the identity 200 (strong tag) keeps its strong tag.
    let (identity, _) = server.get("/big", None).await;
    assert_eq!(identity.headers[header::ETAG], "\"big-v1\"");
    let not_modified = revalidate("\"big-v1\"", None).await;
    assert_eq!(not_modified.headers[header::ETAG], "\"big-v1\"");
    assert_eq!(vary(&not_modified), ["accept-encoding"]);
    // Naming both forms (or neither) leaves the negotiated coding to decide.
    let not_modified = revalidate("\"big-v1\", W/\"big-v1\"", Some("zstd")).await;
    assert_eq!(not_modified.headers[header::ETAG], "W/\"big-v1\"");
    let not_modified = revalidate("\"big-v1\", W/\"big-v1\"", Some("identity")).await;
    assert_eq!(not_modified.headers[header::ETAG], "\"big-v1\"");
}

#[tokio::test]
async fn server_sent_events_reach_the_client_one_by_one() {
    let server = start().await;
    let response = server
        .send(
            Method::GET,
            "/events",
            &[("accept-encoding", "gzip")],
            Vec::new(),
        )
        .await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let mut body = response.into_body();
    let mut decoder = brisk_compress::Decoder::new(Encoding::Gzip, 1 << 20);
    let mut seen = Vec::new();
    for event in ["data: one\n\n", "data: two\n\n", "data: three\n\n"] {
        server.events.send(event).unwrap();
        // The event must arrive while the stream stays open; a compressor that holds it back
        // would hang here, and the guard turns that hang into a failure.
        while !String::from_utf8_lossy(&seen).ends_with(event) {
            let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
                .await
                .expect("the event was held back")
                .unwrap()
                .unwrap();
            if let Ok(data) = frame.into_data() {
                decoder.write(&data).unwrap();
                seen.extend_from_slice(&decoder.take());
            }
        }
        assert!(String::from_utf8_lossy(&seen).ends_with(event), "{seen:?}");
        seen.clear();
    }
}

#[tokio::test]
async fn compressed_requests_are_decoded_for_the_handler() {
    let server = start().await;
    let json = api_json();
    for encoding in [
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Brotli,
        Encoding::Zstd,
    ] {
        let body = compress(encoding, Level::Default, json.as_bytes()).unwrap();
        let response = server.post_echo(encoding.as_str(), body).await;
        assert_eq!(response.status(), StatusCode::OK, "{encoding}");
        assert_eq!(
            response.headers()["x-request-length"],
            json.len().to_string().as_str()
        );
        assert!(!response.headers().contains_key("x-request-encoding"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, json.as_bytes(), "{encoding}");
    }
    let response = server
        .send(Method::POST, "/echo", &[], b"plain".to_vec())
        .await;
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "plain"
    );
    assert_eq!(server.echoes.load(Ordering::SeqCst), 5);
    let labels = [
        ("name", "http"),
        ("encoding", "zstd"),
        ("direction", "decompress"),
    ];
    let out = server
        .registry
        .snapshot()
        .counter("brisk_compress_bytes_out_total", &labels);
    assert_eq!(out, Some(json.len() as u64));
}

#[tokio::test]
async fn a_request_bomb_is_answered_413_without_reaching_the_handler() {
    let server = start().await;
    // A gibibyte of zeros in ~32 KiB of zstd.
    let zeros = vec![0u8; 1 << 20];
    let mut encoder = Encoder::new(Encoding::Zstd, Level::Fastest);
    let mut bomb = Vec::new();
    for _ in 0..1024 {
        encoder.write(&zeros).unwrap();
        bomb.extend_from_slice(&encoder.take());
    }
    encoder.finish().unwrap();
    bomb.extend_from_slice(&encoder.take());
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());

    let response = server.post_echo("zstd", bomb).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // An honest body over the limit, compressed or not on the wire, is refused the same way.
    let big = compress(Encoding::Gzip, Level::Fastest, &vec![b'x'; (1 << 20) + 1]).unwrap();
    let response = server.post_echo("gzip", big).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(server.echoes.load(Ordering::SeqCst), 0);
}

/// Random bytes from a fixed seed: incompressible, like the uploads that were refused.
fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn uploads_of_real_sizes_decode_whatever_hyper_splits_them_into() {
    let server = start().await;
    let json = api_json().repeat(8);
    for original in [
        random_bytes(32 << 10, 3),
        random_bytes(200_000, 5),
        json.into_bytes(),
    ] {
        for encoding in [
            Encoding::Gzip,
            Encoding::Deflate,
            Encoding::Brotli,
            Encoding::Zstd,
        ] {
            for level in [Level::Fastest, Level::Default] {
                let body = compress(encoding, level, &original).unwrap();
                let response = server.post_echo(encoding.as_str(), body).await;
                assert_eq!(
                    response.status(),
                    StatusCode::OK,
                    "{encoding} of {} bytes",
                    original.len()
                );
                let echoed = response.into_body().collect().await.unwrap().to_bytes();
                assert!(
                    echoed == original,
                    "{encoding}: the handler got other bytes"
                );
            }
        }
    }
}

/// The report's case with the client it named: `head -c 32768 /dev/urandom | gzip -1`, posted
/// by curl (which sends it in its own write sizes).
#[tokio::test]
async fn curl_uploads_a_gzip_file() {
    let server = start().await;
    let dir = tempfile::tempdir().unwrap();
    for (name, original) in [
        ("random", random_bytes(32 << 10, 9)),
        ("json", api_json().repeat(20).into_bytes()),
    ] {
        let file = dir.path().join(format!("{name}.gz"));
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
        std::io::Write::write_all(&mut gzip, &original).unwrap();
        std::fs::write(&file, gzip.finish().unwrap()).unwrap();
        let output = tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--fail", "--data-binary"])
            .arg(format!("@{}", file.display()))
            .args([
                "-H",
                "Content-Encoding: gzip",
                "-H",
                "Content-Type: application/octet-stream",
            ])
            .arg(format!("{}/echo", server.base))
            .output()
            .await
            .expect("curl runs (xtask installs it)");
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.stdout == original,
            "{name}: curl got other bytes back"
        );
    }
}

#[tokio::test]
async fn oversized_and_empty_uploads() {
    let server = start().await;
    // Random data over the limit (1 MiB here) is too large, not corrupt.
    let big = compress(Encoding::Gzip, Level::Fastest, &random_bytes(1_500_000, 1)).unwrap();
    let response = server.post_echo("gzip", big).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Decoding past the limit mid-way through a body that is itself under it.
    let over = compress(
        Encoding::Deflate,
        Level::Fastest,
        &api_json().repeat(200).into_bytes(),
    )
    .unwrap();
    assert!(over.len() < 1 << 20);
    let response = server.post_echo("deflate", over).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(server.echoes.load(Ordering::SeqCst), 0);
    // An empty body is empty, whatever the header says.
    for encoding in ["gzip", "deflate", "br", "zstd"] {
        let response = server.post_echo(encoding, Vec::new()).await;
        assert_eq!(response.status(), StatusCode::OK, "{encoding}");
        assert_eq!(response.headers()["x-request-length"], "0");
        assert!(
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .is_empty()
        );
    }
    assert_eq!(server.echoes.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn unknown_stacked_and_corrupt_request_codings_are_refused() {
    let server = start().await;
    let response = server.post_echo("lz4", b"x".to_vec()).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        response.headers()[header::ACCEPT_ENCODING],
        "gzip, deflate, br, zstd, identity"
    );

    let twice = compress(
        Encoding::Gzip,
        Level::Default,
        &compress(Encoding::Brotli, Level::Default, b"x").unwrap(),
    )
    .unwrap();
    let response = server.post_echo("br, gzip", twice).await;
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let response = server.post_echo("gzip", b"not gzip".to_vec()).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let mut cut = compress(Encoding::Gzip, Level::Default, api_json().as_bytes()).unwrap();
    cut.truncate(cut.len() / 2);
    let response = server.post_echo("gzip", cut).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // `identity` is no coding at all.
    let response = server.post_echo("identity", b"as is".to_vec()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(server.echoes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn no_transform_and_partial_content_are_left_alone_and_vary_is_merged() {
    let server = start().await;
    let json = api_json();
    let (parts, body) = server.get("/no-transform", Some("gzip")).await;
    assert!(!parts.headers.contains_key(header::CONTENT_ENCODING));
    assert_eq!(body, json.as_bytes());

    let (parts, body) = server.get("/partial", Some("gzip")).await;
    assert_eq!(parts.status, StatusCode::PARTIAL_CONTENT);
    assert!(!parts.headers.contains_key(header::CONTENT_ENCODING));
    assert_eq!(body, json.as_bytes());

    // An existing Vary keeps its value and gains Accept-Encoding once.
    let (parts, body) = server.get("/varies", Some("br")).await;
    assert_eq!(vary(&parts), ["Origin", "accept-encoding"]);
    assert_eq!(
        reference_decode(parts.headers.get(header::CONTENT_ENCODING), &body),
        json.as_bytes()
    );
}
