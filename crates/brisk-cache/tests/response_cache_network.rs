//! `ResponseCacheLayer` over real HTTP (axum servers, a hyper client and curl): two instances
//! sharing one Redis from brisk-testkit, where a response cached by one is a hit in the
//! other, variants included, and losing Redis costs hits, never answers; and two clients with
//! different cookies and hostile `Host` headers on one server, where every answer is the one
//! the handler gives that client.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, http::HeaderMap, routing::get};
use brisk_cache::{
    MemoryCache, Stamped, Tiered,
    http::{CachedResponse, ResponseCacheLayer},
    redis::RedisCache,
};
use brisk_testkit::RedisServer;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use redis::aio::ConnectionManager;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// One instance of the service: its own memory level and handler, the shared Redis level.
struct Instance {
    base: String,
    calls: Arc<AtomicUsize>,
}

async fn instance(redis: &RedisServer) -> Instance {
    let connection = ConnectionManager::new(redis::Client::open(redis.url()).unwrap())
        .await
        .unwrap();
    let remote: RedisCache<String, Stamped<CachedResponse>> = RedisCache::builder(connection)
        .prefix("pages")
        .ttl(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let memory = MemoryCache::builder()
        .max_weight(16 << 20)
        .weigher(|key: &String, value: &Stamped<CachedResponse>| {
            (key.len() + value.value().weight()) as u32
        })
        .build()
        .unwrap();
    let cache = Tiered::builder()
        .memory(memory)
        .remote(remote)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app = Router::new()
        .route(
            "/products/{id}",
            get(move |headers: HeaderMap| {
                let counted = Arc::clone(&counted);
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let language = headers
                        .get("accept-language")
                        .map_or("en", |value| value.to_str().unwrap_or("en"))
                        .to_owned();
                    (
                        [
                            ("cache-control", "public, max-age=60"),
                            ("vary", "accept-language"),
                            ("content-type", "text/plain"),
                        ],
                        format!("kettle ({language})"),
                    )
                }
            }),
        )
        .layer(ResponseCacheLayer::builder(cache).build().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Instance { base, calls }
}

impl Instance {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn get(&self, client: &HttpClient, path: &str, language: &str) -> (String, String) {
        // Behind a load balancer every instance sees the site's host, not its own address.
        let request = Request::get(format!("{}{path}", self.base))
            .header("host", "shop.example")
            .header("accept-language", language)
            .body(Empty::new())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (x_cache, String::from_utf8(body.to_vec()).unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cached_by_one_instance_is_a_hit_in_the_other() {
    let mut redis = RedisServer::start().unwrap();
    let (a, b) = (instance(&redis).await, instance(&redis).await);
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let answer = |x_cache: &str, body: &str| (x_cache.to_owned(), body.to_owned());
    assert_eq!(
        a.get(&client, "/products/1", "en").await,
        answer("miss", "kettle (en)")
    );
    assert_eq!(
        b.get(&client, "/products/1", "en").await,
        answer("hit", "kettle (en)")
    );
    // A variant B stores is a hit in A, which learned how the URL varies from Redis.
    assert_eq!(
        b.get(&client, "/products/1", "fr").await,
        answer("miss", "kettle (fr)")
    );
    assert_eq!(
        a.get(&client, "/products/1", "fr").await,
        answer("hit", "kettle (fr)")
    );
    assert_eq!(
        a.get(&client, "/products/1", "en").await,
        answer("hit", "kettle (en)")
    );
    assert_eq!((a.calls(), b.calls()), (1, 1));

    // Without Redis, every answer is still given: from memory, else by the handler.
    redis.kill();
    assert_eq!(
        a.get(&client, "/products/1", "en").await,
        answer("hit", "kettle (en)")
    );
    assert_eq!(
        b.get(&client, "/products/2", "en").await,
        answer("miss", "kettle (en)")
    );
    assert_eq!(
        b.get(&client, "/products/2", "en").await,
        answer("hit", "kettle (en)")
    );
    assert_eq!((a.calls(), b.calls()), (1, 2));
}

/// What the two-client server's handler answers: `/me` is personal and says nothing (the
/// cache's `fresh_for` would apply), `/auth` is personal with `must-revalidate`, `/page`
/// varies on `Cookie`, anything else is `public` and depends on the host and path only.
async fn two_client_handler(request: axum::extract::Request) -> axum::response::Response {
    let header = |name: &str| {
        request.headers().get(name).map_or("-".to_owned(), |value| {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        })
    };
    let (host, cookie, authorization) = (header("host"), header("cookie"), header("authorization"));
    let path = request.uri().path().to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map_or("/", |target| target.as_str())
        .to_owned();
    let (cache_control, vary, body) = match path.as_str() {
        "/me" => (None, None, format!("me {cookie} {authorization}")),
        "/auth" => (
            Some("max-age=60, must-revalidate"),
            None,
            format!("auth {authorization}"),
        ),
        "/page" => (Some("max-age=60"), Some("cookie"), format!("page {cookie}")),
        _ => (
            Some("public, max-age=60"),
            None,
            format!("public {host} {target}"),
        ),
    };
    let mut response = axum::response::Response::new(axum::body::Body::from(body));
    if let Some(value) = cache_control {
        response
            .headers_mut()
            .insert("cache-control", value.parse().unwrap());
    }
    if let Some(value) = vary {
        response
            .headers_mut()
            .insert("vary", value.parse().unwrap());
    }
    response
}

/// The body `two_client_handler` gives a request for `target` with these headers (`host`: as
/// the handler reads it, the `Host` header).
fn expected(path: &str, host: &str, cookie: Option<&str>, authorization: Option<&str>) -> String {
    let (cookie, authorization) = (cookie.unwrap_or("-"), authorization.unwrap_or("-"));
    match path.split('?').next().unwrap_or(path) {
        "/me" => format!("me {cookie} {authorization}"),
        "/auth" => format!("auth {authorization}"),
        "/page" => format!("page {cookie}"),
        _ => format!("public {host} {path}"),
    }
}

/// One request of the two-client test: who sends it, and what it carries.
#[derive(Debug, Clone, Copy)]
struct Asked {
    /// curl (else hyper).
    curl: bool,
    /// The request target: a path, or an absolute-form URL.
    target: &'static str,
    host: &'static str,
    cookie: Option<&'static str>,
    authorization: Option<&'static str>,
}

impl Asked {
    fn path(&self) -> &'static str {
        match self.target.strip_prefix("http://") {
            Some(rest) => &rest[rest.find('/').unwrap_or(rest.len())..],
            None => self.target,
        }
    }
}

/// Sends `asked` to the server at `address`: (status, `x-cache`, body).
async fn two_client_send(
    client: &HttpClient,
    address: std::net::SocketAddr,
    asked: Asked,
) -> (u16, String, String) {
    if asked.curl {
        let mut command = tokio::process::Command::new("curl");
        command.args(["--silent", "--show-error", "--include", "--http1.1"]);
        command.args(["-H", &format!("Host: {}", asked.host)]);
        if let Some(cookie) = asked.cookie {
            command.args(["-H", &format!("Cookie: {cookie}")]);
        }
        if let Some(authorization) = asked.authorization {
            command.args(["-H", &format!("Authorization: {authorization}")]);
        }
        command.args(["--request-target", asked.target]);
        command.arg(format!("http://{address}/"));
        let output = command
            .output()
            .await
            .expect("curl runs (xtask installs it)");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let x_cache = head
            .lines()
            .find_map(|line| line.strip_prefix("x-cache: "))
            .unwrap_or("")
            .to_owned();
        return (status, x_cache, body.to_owned());
    }
    // hyper sends the path (origin form); an absolute target is sent as such by curl only.
    let mut request =
        Request::get(format!("http://{address}{}", asked.path())).header("host", asked.host);
    if let Some(cookie) = asked.cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(authorization) = asked.authorization {
        request = request.header("authorization", authorization);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let x_cache = response
        .headers()
        .get("x-cache")
        .map_or("", |value| value.to_str().unwrap())
        .to_owned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, x_cache, String::from_utf8(body.to_vec()).unwrap())
}

/// Issue 28's target: a hyper client (user A) and curl (user B), with different cookies and
/// `Authorization`, and B with hostile `Host` headers and absolute-form targets, ask one
/// server the same URLs in turn: every answer is the one the handler gives that client (no
/// personalised or poisoned response), and shared ones are hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_never_get_each_others_or_poisoned_responses() {
    let memory = MemoryCache::builder()
        .max_weight(16 << 20)
        .weigher(|key: &String, value: &Stamped<CachedResponse>| {
            (key.len() + value.value().weight()) as u32
        })
        .build()
        .unwrap();
    let cache = Tiered::builder()
        .memory(memory)
        .fresh_for(Duration::from_secs(600))
        .build()
        .unwrap();
    let app = Router::new()
        .fallback(two_client_handler)
        .layer(ResponseCacheLayer::builder(cache).build().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let a = |target, cookie, authorization| Asked {
        curl: false,
        target,
        host: "site",
        cookie,
        authorization,
    };
    let b = |target, host, cookie, authorization| Asked {
        curl: true,
        target,
        host,
        cookie,
        authorization,
    };
    let (cookie_a, cookie_b) = (Some("session=a"), Some("session=b"));
    let (token_a, token_b) = (Some("Bearer a"), Some("Bearer b"));
    let mut asked = Vec::new();
    for path in ["/me", "/auth", "/page", "/static/app.js"] {
        asked.extend([
            a(path, cookie_a, None),
            b(path, "site", cookie_b, None),
            a(path, None, token_a),
            b(path, "site", None, token_b),
            a(path, cookie_a, token_a),
            b(path, "site", None, None),
            a(path, None, None),
        ]);
    }
    // B tries to poison A's script and page: a path in the host, another case, a port, user
    // information, an absolute target with another host, and A asks after each.
    for (target, host) in [
        ("/app.js", "site/static"),
        ("/static/app.js", "SITE"),
        ("/static/app.js", "site:80"),
        ("/static/app.js", "evil@site"),
        ("/static/app.js?x", "site"),
        ("http://site/static/app.js", "evil"),
        ("http://evil/static/app.js", "site"),
        ("http://site/static/app.js", "site"),
        ("/page", "site/x"),
    ] {
        asked.push(b(target, host, cookie_b, None));
        asked.push(a("/static/app.js", cookie_a, None));
        asked.push(a("/page", cookie_a, None));
    }
    let mut hits = 0;
    for round in 0..3 {
        for asked in &asked {
            let (status, x_cache, body) = two_client_send(&client, address, *asked).await;
            assert_eq!(status, 200, "round {round}: {asked:?}");
            let wanted = expected(asked.path(), asked.host, asked.cookie, asked.authorization);
            assert_eq!(body, wanted, "round {round}: {asked:?} ({x_cache})");
            hits += usize::from(x_cache == "hit");
        }
    }
    assert!(hits >= asked.len(), "shared answers are hits: {hits}");
}

/// Across instances (`load_across_instances`), a leader's answer that may not be stored is no
/// failure: a follower waiting for it answers with its own handler call, never with the stale
/// copy (fail-safe is for failures).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_unstorable_answer_is_no_failure_for_followers_in_another_instance() {
    use std::sync::Mutex;

    use tokio::sync::{Barrier, Notify};
    use tower::{Layer, ServiceExt, service_fn};

    type Body = http_body_util::Full<Bytes>;
    /// What a handler answers: body and Cache-Control, and whether it waits first.
    type Answer = (&'static str, &'static str, bool);
    type Handled = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<http::Response<Body>, std::convert::Infallible>>
                + Send,
        >,
    >;

    let redis = RedisServer::start().unwrap();
    let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Notify::new()));
    let layer = |answer: Arc<Mutex<Answer>>| {
        let (redis_url, entered, release) =
            (redis.url(), Arc::clone(&entered), Arc::clone(&release));
        async move {
            let connection = ConnectionManager::new(redis::Client::open(redis_url).unwrap())
                .await
                .unwrap();
            let remote: RedisCache<String, Stamped<CachedResponse>> =
                RedisCache::builder(connection.clone())
                    .prefix("pages")
                    .build()
                    .await
                    .unwrap();
            let cache = Tiered::builder()
                .remote(remote)
                .load_across_instances(connection, "pages:load:")
                .fresh_for(Duration::from_secs(1))
                .fail_safe(Duration::from_secs(600))
                .build()
                .unwrap();
            let handler = service_fn(move |_: Request<Body>| {
                let (answer, entered, release) = (
                    Arc::clone(&answer),
                    Arc::clone(&entered),
                    Arc::clone(&release),
                );
                let (body, cache_control, waits) = *answer.lock().unwrap();
                let answered: Handled = Box::pin(async move {
                    if waits {
                        entered.wait().await;
                        release.notified().await;
                    }
                    Ok(http::Response::builder()
                        .header("cache-control", cache_control)
                        .body(Body::from(body))
                        .unwrap())
                });
                answered
            });
            ResponseCacheLayer::builder(cache)
                .build()
                .unwrap()
                .layer(handler)
        }
    };
    let answer_a = Arc::new(Mutex::new(("v1", "public, max-age=1", false)));
    let answer_b = Arc::new(Mutex::new(("from b", "private", false)));
    let a = layer(Arc::clone(&answer_a)).await;
    let b = layer(Arc::clone(&answer_b)).await;
    let get = || {
        Request::get("/page")
            .header("host", "shop.example")
            .body(Body::default())
            .unwrap()
    };
    let body = |response: http::Response<_>| async move {
        let (parts, body) = response.into_parts();
        let bytes = BodyExt::collect(body).await.unwrap().to_bytes();
        (parts.headers["x-cache"].to_str().unwrap().to_owned(), bytes)
    };
    let stored = body(a.clone().oneshot(get()).await.unwrap()).await;
    assert_eq!(stored.1, "v1");
    // Stale in both instances (one Redis level), within fail-safe.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A leads the refresh; its handler now answers privately, after B started following.
    *answer_a.lock().unwrap() = ("now private", "private", true);
    let leader = tokio::spawn(a.clone().oneshot(get()));
    entered.wait().await;
    let follower = tokio::spawn(b.clone().oneshot(get()));
    // B waits for A's lease (polling), then A's answer arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    release.notify_one();
    assert_eq!(body(leader.await.unwrap().unwrap()).await.1, "now private");
    let (x_cache, followed) = body(follower.await.unwrap().unwrap()).await;
    assert_eq!(
        (x_cache.as_str(), &followed[..]),
        ("miss", &b"from b"[..]),
        "the follower asks its own handler, not the stale copy"
    );
}
