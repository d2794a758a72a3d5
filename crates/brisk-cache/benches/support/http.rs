//! HTTP caching over real HTTP on loopback (axum server, hyper client, one process, two
//! tokio workers shared by both): requests/s of a handler doing 1 ms of CPU work (building
//! a 4 KiB JSON page, say) with no layer, through the 304 paths of `ConditionalLayer`, and
//! as a `ResponseCacheLayer` hit; the layer's overhead on a miss; body bytes a 304 saves.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, routing::get};
use brisk_cache::{
    MemoryCache, Tiered,
    http::{ConditionalLayer, EntityTag, ResponseCacheLayer},
};
use brisk_metrics::Registry;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Numbers the requests of every run, so that a URL made from it is never asked twice.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Requests in flight at once.
const CONCURRENCY: usize = 16;
/// Length of one measurement, and how many are taken of each variant (interleaved).
const WINDOW: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;

fn page() -> String {
    let items: Vec<String> = (0..92)
        .map(|id| {
            format!(
                r#"{{"id":{id},"name":"product {id:04}","price":{}}}"#,
                id * 100 + 99
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// The handler: 1 ms of CPU work, then the page, shared-cacheable for a minute.
async fn handler() -> impl axum::response::IntoResponse {
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1) {
        std::hint::spin_loop();
    }
    (
        [
            ("content-type", "application/json"),
            ("cache-control", "public, max-age=60"),
        ],
        page(),
    )
}

async fn serve(app: Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, server)
}

/// Requests/s over `WINDOW`, `CONCURRENCY` at a time, and body bytes per response.
async fn drive(
    client: &HttpClient,
    url: Arc<dyn Fn(u64) -> String + Send + Sync>,
    tag: Option<&str>,
) -> (f64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + WINDOW;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|task: usize| {
            let (client, url, done, bytes) = (
                client.clone(),
                Arc::clone(&url),
                Arc::clone(&done),
                Arc::clone(&bytes),
            );
            let tag = tag.map(str::to_owned);
            tokio::spawn(async move {
                let _ = task;
                while Instant::now() < deadline {
                    let n = NEXT.fetch_add(1, Ordering::Relaxed);
                    let mut request = http::Request::get(url(n));
                    if let Some(tag) = &tag {
                        request = request.header("if-none-match", tag);
                    }
                    let response = client
                        .request(request.body(Empty::new()).unwrap())
                        .await
                        .unwrap();
                    assert!(response.status().is_success() || response.status() == 304);
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    (
        done as f64 / elapsed,
        bytes.load(Ordering::Relaxed) as f64 / done.max(1) as f64,
    )
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Runs the variants and returns the markdown section.
pub(crate) fn report() -> String {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run())
}

struct Variant {
    name: &'static str,
    base: String,
    path: fn(u64) -> String,
    tag: Option<String>,
    rps: Vec<f64>,
    bytes: f64,
}

async fn run() -> String {
    let tag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(page().as_bytes()));
    let registry = Registry::new();
    let response_cache = || {
        let memory = MemoryCache::builder().max_entries(10_000).build().unwrap();
        let cache: Tiered<String, _> = Tiered::builder().memory(memory).build().unwrap();
        ResponseCacheLayer::builder(cache).build().unwrap()
    };
    let known = EntityTag::parse(&tag).unwrap();
    let plain = serve(Router::new().route("/item", get(handler))).await;
    let after = serve(
        Router::new().route("/item", get(handler)).layer(
            ConditionalLayer::builder()
                .metrics(&registry, "after")
                .build()
                .unwrap(),
        ),
    )
    .await;
    let before = serve(
        Router::new().route("/item", get(handler)).layer(
            ConditionalLayer::builder()
                .validator(move |_| {
                    let known = known.clone();
                    async move { Some(known) }
                })
                .build()
                .unwrap(),
        ),
    )
    .await;
    let cached = serve(
        Router::new()
            .route("/item", get(handler))
            .layer(response_cache()),
    )
    .await;
    let missed = serve(
        Router::new()
            .route("/item", get(handler))
            .layer(response_cache()),
    )
    .await;
    let fixed: fn(u64) -> String = |_| "/item".to_owned();
    let fresh: fn(u64) -> String = |n| format!("/item?n={n}");
    let mut variants = vec![
        Variant {
            name: "no layer",
            base: plain.0.clone(),
            path: fresh,
            tag: None,
            rps: Vec::new(),
            bytes: 0.0,
        },
        Variant {
            name: "`ResponseCacheLayer` miss (every URL new, stored)",
            base: missed.0.clone(),
            path: fresh,
            tag: None,
            rps: Vec::new(),
            bytes: 0.0,
        },
        Variant {
            name: "`ConditionalLayer`, 304 after the handler (body hash)",
            base: after.0.clone(),
            path: fixed,
            tag: Some(tag.clone()),
            rps: Vec::new(),
            bytes: 0.0,
        },
        Variant {
            name: "`ConditionalLayer`, 304 before the handler (`validator`)",
            base: before.0.clone(),
            path: fixed,
            tag: Some(tag.clone()),
            rps: Vec::new(),
            bytes: 0.0,
        },
        Variant {
            name: "`ResponseCacheLayer` hit",
            base: cached.0.clone(),
            path: fixed,
            tag: None,
            rps: Vec::new(),
            bytes: 0.0,
        },
    ];
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // Warm-up: connections, and the entry the hits read.
    for variant in &variants {
        let base = variant.base.clone();
        let path = variant.path;
        drive_briefly(
            &client,
            Arc::new(move |n| format!("{base}{}", path(n))),
            variant.tag.as_deref(),
        )
        .await;
    }
    for _ in 0..ROUNDS {
        for variant in &mut variants {
            let base = variant.base.clone();
            let path = variant.path;
            let (rps, bytes) = drive(
                &client,
                Arc::new(move |n| format!("{base}{}", path(n))),
                variant.tag.as_deref(),
            )
            .await;
            variant.rps.push(rps);
            variant.bytes = bytes;
        }
    }
    for server in [plain.1, after.1, before.1, cached.1, missed.1] {
        server.abort();
    }
    let baseline = median(variants[0].rps.clone());
    let mut out = format!(
        "\nHTTP caching over loopback (axum, hyper client, {CONCURRENCY} requests in flight, server and client on the same two workers); the handler does 1 ms of CPU work and answers a {} B JSON page; median of {ROUNDS} × {} s each:\n\n| path | requests/s | × no layer | body bytes per response |\n|---|---|---|---|\n",
        page().len(),
        WINDOW.as_secs()
    );
    for variant in &variants {
        let rps = median(variant.rps.clone());
        out.push_str(&format!(
            "| {} | {rps:.0} | {:.2}× | {:.0} |\n",
            variant.name,
            rps / baseline,
            variant.bytes
        ));
    }
    let miss = median(variants[1].rps.clone());
    let saved = registry
        .snapshot()
        .counter("brisk_cache_http_bytes_saved_total", &[("name", "after")])
        .unwrap_or(0);
    let not_modified = registry
        .snapshot()
        .counter("brisk_cache_http_not_modified_total", &[("name", "after")])
        .unwrap_or(1)
        .max(1);
    out.push_str(&format!(
        "\nThe layer's overhead on a miss: {:.1} % of a no-layer request (target ≤ 5 %). Body bytes each 304 did not send: {} B (`brisk_cache_http_bytes_saved_total` / 304s sent).\n",
        (1.0 - miss / baseline) * 100.0,
        saved / not_modified
    ));
    out
}

/// A short run: opens the connections and fills what the hits read.
async fn drive_briefly(
    client: &HttpClient,
    url: Arc<dyn Fn(u64) -> String + Send + Sync>,
    tag: Option<&str>,
) {
    for _ in 0..(CONCURRENCY * 4) {
        let mut request = http::Request::get(url(NEXT.fetch_add(1, Ordering::Relaxed)));
        if let Some(tag) = tag {
            request = request.header("if-none-match", tag);
        }
        let response = client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let _ = response.into_body().collect().await.unwrap();
    }
}
