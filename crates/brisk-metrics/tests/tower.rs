//! LatencyLayer around real tower services.

use std::{convert::Infallible, time::Duration};

use brisk_metrics::{Registry, tower::LatencyLayer};
use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt, service_fn};

async fn handler(request: Request<()>) -> Result<Response<&'static str>, &'static str> {
    match request.uri().path() {
        "/ok" => Ok(Response::new("ok")),
        "/missing" => Ok(Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body("no")
            .unwrap()),
        "/boom" => Ok(Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body("")
            .unwrap()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Response::new("late"))
        }
        _ => Err("inner service failed"),
    }
}

#[tokio::test]
async fn records_by_route_and_status_class_including_errors_and_cancellation() {
    let registry = Registry::new();
    let layer = LatencyLayer::new(registry.clone(), "http_request_seconds")
        .unwrap()
        .route_with(|head| head.uri.path().into());
    let service = layer.layer(service_fn(handler));
    for path in ["/ok", "/ok", "/missing", "/boom", "/fail"] {
        let _ = service
            .clone()
            .oneshot(Request::get(path).body(()).unwrap())
            .await;
    }
    let mut svc = service.clone();
    let slow = svc
        .ready()
        .await
        .unwrap()
        .call(Request::get("/slow").body(()).unwrap());
    assert!(
        tokio::time::timeout(Duration::from_millis(5), slow)
            .await
            .is_err()
    );

    let snap = registry.snapshot();
    let count = |route: &str, status: &str| {
        snap.histogram(
            "http_request_seconds",
            &[("route", route), ("status", status)],
        )
        .map_or(0, |h| h.count)
    };
    assert_eq!(count("/ok", "2xx"), 2);
    assert_eq!(count("/missing", "4xx"), 1);
    assert_eq!(count("/boom", "5xx"), 1);
    assert_eq!(count("/fail", "error"), 1);
    assert_eq!(count("/slow", "cancelled"), 1);
}

#[tokio::test]
async fn custom_route_function_bounds_the_label() {
    let registry = Registry::new();
    let layer = LatencyLayer::new(registry.clone(), "req_seconds")
        .unwrap()
        .route_with(|head| head.uri.path().split('/').nth(1).unwrap_or("").into());
    let service = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    for id in 0..50 {
        let uri = format!("/users/{id}");
        service
            .clone()
            .oneshot(Request::get(uri).body(()).unwrap())
            .await
            .unwrap();
    }
    let snap = registry.snapshot();
    assert_eq!(snap.histograms.len(), 1);
    assert_eq!(
        snap.histogram("req_seconds", &[("route", "users"), ("status", "2xx")])
            .unwrap()
            .count,
        50
    );
}

#[test]
fn invalid_metric_name_is_rejected() {
    assert!(LatencyLayer::new(Registry::new(), "bad name").is_err());
}

/// Sends `paths` through a layer and returns the distinct routes recorded.
async fn routes_after(layer: LatencyLayer, registry: &Registry, paths: u32) -> Vec<String> {
    let service = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    for n in 0..paths {
        // A scanner: a new path on every request.
        let uri = format!("/{n:x}/wp-admin.php?x={n}");
        service
            .clone()
            .oneshot(Request::get(uri).body(()).unwrap())
            .await
            .unwrap();
    }
    let snap = registry.snapshot();
    let mut routes: Vec<String> = snap
        .histograms
        .iter()
        .filter_map(|h| h.labels.get("route").cloned())
        .collect();
    routes.sort();
    routes.dedup();
    routes
}

#[tokio::test]
async fn a_million_distinct_paths_keep_memory_flat() {
    // By default the raw path is never a label: one route, whatever is requested.
    let registry = Registry::new();
    let layer = LatencyLayer::new(registry.clone(), "http_request_seconds").unwrap();
    assert_eq!(routes_after(layer, &registry, 1_000_000).await, ["all"]);
    let snap = registry.snapshot();
    assert_eq!(
        snap.histogram(
            "http_request_seconds",
            &[("route", "all"), ("status", "2xx")]
        )
        .unwrap()
        .count,
        1_000_000
    );

    // A route function that returns the raw path is bounded by `max_routes`: the first 100
    // paths get their own routes, the rest are `other`.
    let registry = Registry::new();
    let layer = LatencyLayer::new(registry.clone(), "http_request_seconds")
        .unwrap()
        .route_with(|head| head.uri.path().into())
        .max_routes(100);
    let routes = routes_after(layer, &registry, 1_000_000).await;
    assert_eq!(routes.len(), 101, "100 routes and `other`");
    assert!(routes.iter().any(|r| r == "other"));
    let snap = registry.snapshot();
    assert_eq!(
        snap.histogram(
            "http_request_seconds",
            &[("route", "other"), ("status", "2xx")]
        )
        .unwrap()
        .count,
        1_000_000 - 100
    );
}

/// The exposition served over HTTP to curl, a real client: Prometheus' media type, never
/// cached on the way, a body promtool has nothing to say against (the layer described its
/// histogram); other methods are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_service_serves_the_exposition_with_its_media_type() {
    use axum::{Router, routing::get};
    use brisk_metrics::tower::PrometheusService;

    let registry = Registry::new();
    let app: Router = Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route_service("/metrics", PrometheusService::new(registry.clone()))
        .layer(LatencyLayer::new(registry.clone(), "http_request_duration_seconds").unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let curl = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new("curl")
                .args(["-s", "-S", "--max-time", "10", "-D", "-"])
                .args(args)
                .output()
                .expect("curl is installed (`cargo xtask ci` installs it)");
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap()
        })
    };
    curl(vec![format!("{base}/hello")]).await.unwrap();
    let answer = curl(vec![format!("{base}/metrics")]).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("cache-control: no-store"), "{head}");
    assert!(
        body.contains("http_request_duration_seconds_count{route=\"all\",status=\"2xx\"} 1"),
        "{body}"
    );
    brisk_testkit::promtool_check_metrics(body).unwrap_or_else(|error| panic!("{error}\n{body}"));

    let refused = curl(vec!["-X".into(), "POST".into(), format!("{base}/metrics")])
        .await
        .unwrap()
        .to_ascii_lowercase();
    assert!(refused.starts_with("http/1.1 405"), "{refused}");
    assert!(refused.contains("allow: get, head"), "{refused}");
    server.abort();
}

/// Answers with the status class named by the path's last segment: `1xx` … `5xx`, `error`
/// (the inner service fails) or `cancelled` (never answers; the caller drops it).
async fn by_class(request: Request<()>) -> Result<Response<()>, &'static str> {
    let class = request.uri().path().rsplit('/').next().unwrap_or("");
    let status = match class {
        "1xx" => StatusCode::CONTINUE,
        "2xx" => StatusCode::OK,
        "3xx" => StatusCode::FOUND,
        "4xx" => StatusCode::NOT_FOUND,
        "5xx" => StatusCode::BAD_GATEWAY,
        "cancelled" => std::future::pending().await,
        _ => return Err("inner service failed"),
    };
    Ok(Response::builder().status(status).body(()).unwrap())
}

#[tokio::test]
async fn with_the_defaults_every_series_of_the_first_max_routes_routes_is_kept() {
    // Default registry, default layer, a route function that returns outside input: far more
    // routes than the layer keeps, each answered with every status class it records.
    const CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error", "cancelled"];
    let registry = Registry::new();
    let layer = LatencyLayer::new(registry.clone(), "http_request_seconds")
        .unwrap()
        .route_with(|head| {
            let path = head.uri.path();
            path[..path.rfind('/').unwrap_or(0)].to_owned().into()
        });
    let service = layer.layer(service_fn(by_class));
    let routes = 1_500;
    for route in 0..routes {
        for class in CLASSES {
            let request = Request::get(format!("/r{route}/{class}")).body(()).unwrap();
            let mut service = service.clone();
            let call = service.ready().await.unwrap().call(request);
            if class == "cancelled" {
                drop(call);
            } else {
                let _ = call.await;
            }
        }
    }
    let snap = registry.snapshot();
    assert_eq!(
        snap.counter("brisk_metrics_label_overflow_total", &[]),
        Some(0),
        "series fell into overflow"
    );
    let mut kept: Vec<usize> = snap
        .histograms
        .iter()
        .filter_map(|h| h.labels.get("route"))
        .filter(|route| route.as_str() != "other")
        .map(|route| route.trim_start_matches("/r").parse().unwrap())
        .collect();
    kept.sort_unstable();
    kept.dedup();
    assert!(kept.len() >= 100, "only {} routes kept", kept.len());
    assert_eq!(
        kept,
        (0..kept.len()).collect::<Vec<_>>(),
        "the first routes seen"
    );
    for route in kept
        .iter()
        .map(|n| format!("/r{n}"))
        .chain(["other".to_owned()])
    {
        for class in CLASSES {
            let count = snap
                .histogram(
                    "http_request_seconds",
                    &[("route", &route), ("status", class)],
                )
                .map_or(0, |h| h.count);
            let expected = if route == "other" {
                (routes - kept.len()) as u64
            } else {
                1
            };
            assert_eq!(count, expected, "{route} {class}");
        }
    }
}

#[tokio::test]
async fn long_route_names_are_cut_so_memory_and_the_scrape_stay_bounded() {
    // A route function that returns the raw path, and 141 requests on 60 KiB paths: every
    // label is kept and printed on every bucket line of every scrape.
    let registry = Registry::new();
    let layer = LatencyLayer::new(registry.clone(), "http_request_seconds")
        .unwrap()
        .route_with(|head| head.uri.path().into());
    let service = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    // The paths differ only in their last 7 bytes.
    let long = "a".repeat(60 * 1024); // `http` refuses a URI of 64 KiB
    for n in 0..141u32 {
        let uri = format!("/{long}{n:07}");
        service
            .clone()
            .oneshot(Request::get(uri).body(()).unwrap())
            .await
            .unwrap();
    }
    let snap = registry.snapshot();
    let routes: Vec<String> = snap
        .histograms
        .iter()
        .filter_map(|h| h.labels.get("route").cloned())
        .collect();
    assert_eq!(routes.len(), 141, "each long path keeps its own route");
    let mut distinct = routes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 141, "cut names stay distinct");
    for route in &routes {
        assert!(
            route.len() <= LatencyLayer::MAX_ROUTE_LEN,
            "a route label of {} bytes",
            route.len()
        );
    }
    let body = registry.prometheus_text();
    assert!(body.len() < 1024 * 1024, "a scrape of {} bytes", body.len());
    // A short route is kept whole.
    let registry = Registry::new();
    let layer = LatencyLayer::new(registry.clone(), "http_request_seconds")
        .unwrap()
        .route_with(|head| head.uri.path().into());
    let service = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    service
        .oneshot(Request::get("/users/42").body(()).unwrap())
        .await
        .unwrap();
    assert!(
        registry
            .snapshot()
            .histogram(
                "http_request_seconds",
                &[("route", "/users/42"), ("status", "2xx")]
            )
            .is_some()
    );
}
