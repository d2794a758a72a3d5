//! `ResponseCacheLayer` over real HTTP (axum servers, a hyper client), two instances sharing
//! one Redis from brisk-testkit: a response cached by one is a hit in the other, variants
//! included, and losing Redis costs hits, never answers.

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
