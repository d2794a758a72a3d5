//! An axum service that records request latency per matched route and serves `/metrics`.
//!
//! `cargo run -p brisk-metrics --example axum_metrics --features tower`, then
//! `curl localhost:3000/users/7` and `curl localhost:3000/metrics`.

use axum::{Router, extract::MatchedPath, routing::get};
use brisk_metrics::{
    Registry,
    tower::{LatencyLayer, PrometheusService},
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = Registry::new();
    let latency = LatencyLayer::new(registry.clone(), "http_request_seconds")?.route_with(|head| {
        head.extensions
            .get::<MatchedPath>()
            .map_or("unmatched", MatchedPath::as_str)
            .into()
    });
    let app = Router::new()
        .route("/users/{id}", get(|| async { "a user" }))
        .route_layer(latency)
        .route_service("/metrics", PrometheusService::new(registry));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
