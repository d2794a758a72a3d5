//! Headless Chromium (Debian's `chromium`, installed by `cargo xtask ci`) against a real
//! server with brisk-compress, `ConditionalLayer` and `ResponseCacheLayer`: a page fetches
//! two JSON resources twice each. The one fresh for a minute is answered by the browser's
//! own cache the second time; the one the browser must revalidate (`max-age=0`) comes back
//! as a 304 from the cached copy. The handler runs once per resource, by the server's
//! counters.

use std::{
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::Request,
    middleware::{self, Next},
    response::{Html, Response},
    routing::{get, post},
};
use brisk_cache::{
    MemoryCache, Tiered,
    http::{ConditionalLayer, ResponseCacheLayer},
};
use brisk_metrics::Registry;

const PAGE: &str = r#"<!doctype html>
<html><head><title>loading</title></head><body><script>
async function twice(path) {
  const first = await fetch(path);
  const a = await first.text();
  const second = await fetch(path);
  const b = await second.text();
  return { path, same: a === b && a.length > 1000, status: second.status };
}
(async () => {
  const results = [await twice('/revalidated.json'), await twice('/fresh.json')];
  await fetch('/report', { method: 'POST', body: JSON.stringify(results) });
  document.title = 'done';
})();
</script></body></html>"#;

/// One request as the server saw it: path, whether it was conditional, the status sent.
type Seen = (String, bool, u16);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_revalidates_with_a_304_or_uses_its_own_cache_and_the_handler_runs_once() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| std::path::Path::new(path).is_file())
        .expect("headless Chromium is installed (`cargo xtask ci` installs Debian's `chromium`)");
    let calls = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (report_tx, mut report_rx) = tokio::sync::mpsc::channel::<String>(1);
    let registry = Registry::new();
    let resource = |cache_control: &'static str| {
        let calls = Arc::clone(&calls);
        get(move || {
            calls.fetch_add(1, Ordering::SeqCst);
            let items: Vec<String> = (0..60)
                .map(|id| format!(r#"{{"id":{id},"name":"product {id}"}}"#))
                .collect();
            async move {
                (
                    [
                        ("content-type", "application/json"),
                        ("cache-control", cache_control),
                    ],
                    format!("[{}]", items.join(",")),
                )
            }
        })
    };
    let cache: Tiered<String, _> = Tiered::builder()
        .memory(MemoryCache::builder().max_entries(1000).build().unwrap())
        .build()
        .unwrap();
    let cached = Router::new()
        // The browser revalidates every use; the server's shared cache keeps it a minute.
        .route(
            "/revalidated.json",
            resource("public, max-age=0, s-maxage=60"),
        )
        .route("/fresh.json", resource("public, max-age=60"))
        .layer(ResponseCacheLayer::builder(cache).build().unwrap())
        .layer(
            ConditionalLayer::builder()
                .metrics(&registry, "browser")
                .build()
                .unwrap(),
        )
        .layer(brisk_compress::tower::CompressionLayer::default());
    let recorded = Arc::clone(&seen);
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route(
            "/report",
            post(move |body: String| {
                let report_tx = report_tx.clone();
                async move {
                    let _ = report_tx.send(body).await;
                }
            }),
        )
        .merge(cached)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            let recorded = Arc::clone(&recorded);
            async move {
                let path = request.uri().path().to_owned();
                let conditional = request.headers().contains_key("if-none-match");
                let response: Response = next.run(request).await;
                recorded
                    .lock()
                    .unwrap()
                    .push((path, conditional, response.status().as_u16()));
                response
            }
        }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let profile = tempfile::tempdir().unwrap();
    let mut browser = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=30000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(&url)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts");
    let report = tokio::time::timeout(Duration::from_secs(120), report_rx.recv())
        .await
        .expect("the page reports within two minutes")
        .expect("a report");
    let _ = browser.kill().await;

    let results: Vec<serde_json::Value> = serde_json::from_str(&report).unwrap();
    for result in &results {
        assert_eq!(
            result["same"], true,
            "{result}: both fetches read the same JSON"
        );
        assert_eq!(
            result["status"], 200,
            "{result}: the page sees a 200 either way"
        );
    }
    let seen = seen.lock().unwrap().clone();
    let of = |path: &str| -> Vec<(bool, u16)> {
        seen.iter()
            .filter(|(seen, ..)| seen == path)
            .map(|(_, conditional, status)| (*conditional, *status))
            .collect()
    };
    assert_eq!(
        of("/revalidated.json"),
        [(false, 200), (true, 304)],
        "revalidated with If-None-Match, answered 304: {seen:?}"
    );
    assert_eq!(
        of("/fresh.json"),
        [(false, 200)],
        "the second fetch came from the browser's cache: {seen:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one handler call per resource"
    );
    let snapshot = registry.snapshot();
    assert_eq!(
        snapshot
            .counter(
                "brisk_cache_http_not_modified_total",
                &[("name", "browser")]
            )
            .unwrap(),
        1
    );
}
