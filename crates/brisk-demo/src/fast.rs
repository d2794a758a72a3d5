//! The catalog built with brisk: a brisk-pool pool, brisk-batch's `Loader` for the products
//! of an order list and `WriteBatcher` for new orders, brisk-cache `Tiered` caches (their
//! loads single-flighted through brisk-dedup), brisk-compress on every response, and
//! brisk-metrics at `/metrics`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use crate::{
    backend::{Pool, Target},
    level::Level,
    model::{
        self, NewOrder, Order, OrderLine, Placed, Product, ProductPage, TopProduct, UserOrders,
    },
    server::{self, CursorQuery, ExportQuery, FIRST_PAGE, Failure, stats},
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    http::header::CACHE_CONTROL,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use brisk_batch::{BatchLoad, BatchWrite, Loaded, Loader, WriteBatcher};
use brisk_cache::{
    Cache, MemoryCache, Tiered, TieredBuilder,
    http::{CachedResponse, ConditionalLayer, ResponseCacheLayer},
};
use brisk_compress::tower::CompressionLayer;
use brisk_metrics::{
    Counter, Key, MetricKind, Recorder, Registry, process::ProcessCollector,
    runtime::RuntimeCollector, tower::PrometheusService,
};
use brisk_stream::{Cursors, Encoder, KeyValue, Keyset, SortOrder};
use serde::{Serialize, de::DeserializeOwned};

/// `SELECT … WHERE id IN (…)` for every product key asked for within a millisecond.
struct Products {
    pool: Pool,
}

impl BatchLoad for Products {
    type Key = i64;
    type Value = Product;
    type Error = Failure;

    async fn load(&self, ids: &[i64]) -> Result<Loaded<i64, Product, Failure>, Failure> {
        let mut connection = self.pool.get().await?;
        let found = model::products(connection.db(), ids).await?;
        Ok(found
            .into_iter()
            .map(|product| (product.id, product))
            .collect())
    }
}

/// New orders, many per INSERT.
struct Orders {
    pool: Pool,
}

impl BatchWrite for Orders {
    type Item = NewOrder;
    type Output = i64;
    type Error = String;

    async fn write(&self, items: &[NewOrder]) -> Result<Vec<i64>, String> {
        let mut connection = self.pool.get().await.map_err(|error| error.to_string())?;
        model::insert(connection.db(), items, model::now())
            .await
            .map_err(|error| error.to_string())
    }
}

#[derive(Clone)]
struct Fast {
    pool: Pool,
    registry: Arc<Registry>,
    loader: Arc<Loader<Products>>,
    writer: Arc<WriteBatcher<Orders>>,
    /// Cache removals that failed after their write committed (the write still succeeded).
    invalidation_failures: brisk_metrics::Counter,
    products: Cached<i64, Option<Product>>,
    orders: Cached<i64, UserOrders>,
    /// Listing pages by the position they start after.
    pages: Cached<String, ProductPage>,
    /// The listing's order, `id`, and the signed cursors its `next` links carry.
    listing: Keyset,
    cursors: Cursors,
    /// One entry, under key 0.
    top: Cached<i64, Vec<TopProduct>>,
    /// The export's order, `(user_id, id)`.
    export: Keyset,
    encoder: Encoder,
}

/// Products and listing pages change only with the catalog: any cache may keep them a minute.
const SHARED_MINUTE: (http::HeaderName, &str) = (CACHE_CONTROL, "public, max-age=60");

/// A cache in memory, over Redis when the run has one.
type Cached<K, V> = Tiered<K, V, Level<K, V>>;

/// Makes the variant's caches: in memory, over Redis when the run has one, reporting to
/// the registry under their name.
struct Caches<'a> {
    redis: Option<&'a redis::aio::ConnectionManager>,
    registry: &'a Registry,
    /// Redis keys start `catalog:{namespace}:`: instances that share a cursor secret share
    /// their cached pages (whose links carry cursors signed with it), and no run reads
    /// another's.
    namespace: String,
}

impl Caches<'_> {
    async fn make<K, V>(
        &self,
        name: &str,
        entries: u64,
        settings: impl FnOnce(TieredBuilder<K, V, Level<K, V>>) -> TieredBuilder<K, V, Level<K, V>>,
    ) -> Result<Cached<K, V>, String>
    where
        K: std::hash::Hash + Eq + Clone + std::fmt::Display + Send + Sync + 'static,
        V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let error = |error: brisk_cache::Error| format!("the {name} cache: {error}");
        let memory = MemoryCache::builder()
            .max_entries(entries)
            .build()
            .map_err(error)?;
        let level = Level::new(self.redis, &format!("catalog:{}:{name}", self.namespace))
            .await
            .map_err(error)?;
        let builder = Tiered::builder()
            .memory(memory)
            .remote(level)
            .metrics(self.registry, name);
        settings(builder).build().map_err(error)
    }
}

/// The brisk variant over `target`, with Redis at `redis` as the caches' second level if
/// given.
pub(crate) async fn router(target: Target, redis: Option<&str>) -> Result<Router, String> {
    let redis = match redis {
        None => None,
        Some(url) => {
            // Neither the URL nor the client's words are echoed: either may carry a password.
            let client = redis::Client::open(url)
                .map_err(|_| "the Redis URL could not be parsed".to_owned())?;
            // Reconnects tried at short pauses (redis-rs waits up to 3.2 s between tries by
            // default): the caches use Redis again soon after it is back.
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_max_delay(Duration::from_millis(100))
                .set_connection_timeout(Some(Duration::from_millis(500)))
                .set_response_timeout(Some(Duration::from_secs(1)));
            Some(
                redis::aio::ConnectionManager::new_with_config(client, config)
                    .await
                    .map_err(|error| format!("connecting to Redis: {:?}", error.kind()))?,
            )
        }
    };
    let registry = Arc::new(Registry::new());
    // The process' CPU, memory and descriptors, and the runtime's load, read at each scrape.
    registry.register_collector(ProcessCollector::new());
    registry.register_collector(RuntimeCollector::new(
        tokio::runtime::Handle::current(),
        "server",
    ));
    let pool = target.pool(8, &registry).await?;
    let loader = Loader::builder(Products { pool: pool.clone() })
        .metrics(&*registry, "products")
        .build()
        .map_err(|error| error.to_string())?;
    let writer = WriteBatcher::builder(Orders { pool: pool.clone() })
        .max_batch_size(256)
        .max_delay(Duration::from_millis(2))
        .metrics(&*registry, "orders")
        .build()
        .map_err(|error| error.to_string())?;
    let secret = cursor_secret()?;
    let cursors = Cursors::builder()
        .key(1, &secret)
        .metrics(&*registry, "products")
        .build()
        .map_err(|error| error.to_string())?;
    let caches = Caches {
        redis: redis.as_ref(),
        registry: &registry,
        namespace: namespace(&secret),
    };
    let responses: Cached<String, CachedResponse> =
        caches.make("responses", 20_000, |cache| cache).await?;
    let state = Fast {
        products: caches.make("products", 200_000, |cache| cache).await?,
        orders: caches.make("orders", 50_000, |cache| cache).await?,
        pages: caches.make("pages", 10_000, |cache| cache).await?,
        listing: Keyset::builder()
            .unique_column("id", SortOrder::Asc)
            .default_limit(model::PAGE_SIZE as usize)
            .max_limit(model::PAGE_SIZE as usize)
            .metrics(&*registry, "products")
            .build()
            .map_err(|error| error.to_string())?,
        cursors,
        // Sales change with every order: the aggregate is a few seconds stale at most, and
        // one refresh runs behind while readers keep being answered. With the database down
        // the last one is answered (fail-safe) for up to 10 minutes.
        top: caches
            .make("top", 1, |cache| {
                cache
                    .fresh_for(Duration::from_secs(5))
                    .stale_while_revalidate(Duration::from_secs(60))
                    .fail_safe(Duration::from_secs(600))
            })
            .await?,
        export: Keyset::builder()
            .column("user_id", SortOrder::Asc)
            .unique_column("id", SortOrder::Asc)
            .metrics(&*registry, "export")
            .build()
            .map_err(|error| error.to_string())?,
        encoder: Encoder::builder()
            .metrics(&*registry, "export")
            .build()
            .map_err(|error| error.to_string())?,
        invalidation_failures: invalidation_failures(&registry, "orders")?,
        pool,
        registry: Arc::clone(&registry),
        loader: Arc::new(loader),
        writer: Arc::new(writer),
    };
    Ok(Router::new()
        .route("/products/{id}", get(product))
        .route("/products", get(page))
        .route("/users/{id}/orders", get(orders))
        .route("/top-products", get(top))
        .route("/orders/export", get(export))
        .route("/orders", post(place))
        .route(
            "/stats",
            get(|State(fast): State<Fast>| async move { Json(stats(Some(&fast.registry))) }),
        )
        .route_service("/metrics", PrometheusService::new((*registry).clone()))
        .with_state(state)
        // Whole responses that say they may be shared are answered from the cache without
        // the handler; ETags and 304s for clients that revalidate; compression outermost,
        // so one identity copy is stored and each coding gets its own tag.
        .layer(
            ResponseCacheLayer::builder(responses)
                .metrics(&*registry, "responses")
                .build()
                .map_err(|error| error.to_string())?,
        )
        .layer(
            ConditionalLayer::builder()
                .metrics(&*registry, "catalog")
                .build()
                .map_err(|error| error.to_string())?,
        )
        .layer(CompressionLayer::default().metrics(&*registry, "catalog")))
}

/// The listing cursors' signing secret: `BRISK_DEMO_CURSOR_SECRET` (at least 32 bytes; set
/// the same on every instance behind one address), else 32 random bytes for this process.
fn cursor_secret() -> Result<Vec<u8>, String> {
    if let Some(secret) = std::env::var_os("BRISK_DEMO_CURSOR_SECRET") {
        return Ok(secret.into_encoded_bytes());
    }
    let mut secret = vec![0; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut secret))
        .map_err(|error| format!("reading /dev/urandom for the cursor secret: {error}"))?;
    Ok(secret)
}

/// A name for the caches of instances signing with `secret` (not secret itself).
fn namespace(secret: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    secret.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// A failed read through a cache, answered as the failure under it when the client should
/// see that one (a 503 for a database that could not answer), else a 500.
fn read_failure<E: Underlying + std::fmt::Display>(error: brisk_cache::Error<Arc<E>>) -> Failure {
    if let brisk_cache::Error::Load { source, .. } = &error
        && let Some(failure) = source.unavailable()
    {
        return failure;
    }
    match &error {
        brisk_cache::Error::Load { source, .. } => Failure::Cache(format!("{error}: {source}")),
        _ => Failure::Cache(error.to_string()),
    }
}

/// What a load failed with, looked through for a database that could not answer.
trait Underlying {
    /// The 503 to answer, when the database could not answer.
    fn unavailable(&self) -> Option<Failure>;
}

impl Underlying for Failure {
    fn unavailable(&self) -> Option<Failure> {
        match self {
            Failure::Pool(error) => Some(Failure::Pool(error.clone())),
            Failure::Connect(error) => Some(Failure::Pool(error.to_string())),
            Failure::Unavailable(reason) => Some(Failure::Unavailable(reason)),
            lost if lost.connection_lost() => Some(Failure::Unavailable(server::DATABASE_LOST)),
            _ => None,
        }
    }
}

impl Underlying for brisk_batch::Error<Failure> {
    fn unavailable(&self) -> Option<Failure> {
        self.source_error().and_then(Underlying::unavailable)
    }
}

async fn product(State(fast): State<Fast>, Path(id): Path<i64>) -> Result<Response, Failure> {
    let loader = Arc::clone(&fast.loader);
    let found = fast
        .products
        .try_get_with(id, move || async move { loader.load(id).await })
        .await
        .map_err(read_failure)?;
    Ok(match found {
        Some(product) => ([SHARED_MINUTE], Json(product)).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

/// Keyset paging: each page is the products after the last one of the page before, found
/// through the primary key however deep the page is, and cached by that position.
async fn page(
    State(fast): State<Fast>,
    Query(query): Query<CursorQuery>,
) -> Result<Response, Failure> {
    let scope = fast.listing.scope();
    let cursor = query
        .cursor
        .as_deref()
        .map(|text| fast.cursors.decode::<Vec<KeyValue>>(&scope, text))
        .transpose()?;
    let position = cursor.as_ref().map_or_else(
        || "first".to_owned(),
        |cursor| format!("{:?} {:?}", cursor.direction, cursor.key),
    );
    let plan = fast.listing.plan(cursor, None)?;
    let (pool, cursors) = (fast.pool.clone(), fast.cursors.clone());
    let page = fast
        .pages
        .try_get_with(position, move || async move {
            let mut connection = pool.get().await.map_err(Failure::from)?;
            let rows = model::page_after(connection.db(), &plan).await?;
            let page = plan.page(rows, |product| vec![product.id.into()], &cursors, &scope)?;
            Ok::<_, Failure>(ProductPage {
                items: page.items,
                next: page.next.map(|next| format!("{FIRST_PAGE}?cursor={next}")),
            })
        })
        .await
        .map_err(read_failure)?;
    Ok(server::listing(page, Some(SHARED_MINUTE.1)))
}

/// The orders in one query, their products in one batched query shared with concurrent
/// requests (and from the product cache when there).
async fn orders(
    State(fast): State<Fast>,
    Path(user_id): Path<i64>,
) -> Result<impl IntoResponse, Failure> {
    let (pool, loader) = (fast.pool.clone(), Arc::clone(&fast.loader));
    let products = fast.products.clone();
    let answer = fast
        .orders
        .try_get_with(user_id, move || async move {
            let rows = {
                let mut connection = pool.get().await.map_err(Failure::from)?;
                model::recent_orders(connection.db(), user_id).await?
            };
            let ids: Vec<i64> = rows.iter().map(|row| row.product_id).collect();
            let cached = products
                .get_many(&ids)
                .await
                .unwrap_or_else(|_| vec![None; ids.len()]);
            let missing: Vec<i64> = ids
                .iter()
                .zip(&cached)
                .filter(|(_, hit)| hit.is_none())
                .map(|(&id, _)| id)
                .collect();
            let loaded = loader.load_many(missing.iter().copied()).await;
            let mut found = std::collections::HashMap::new();
            for (id, result) in missing.into_iter().zip(loaded) {
                let product = result.map_err(|error| {
                    error
                        .unavailable()
                        .unwrap_or_else(|| Failure::Cache(error.to_string()))
                })?;
                found.insert(id, product);
            }
            let orders = rows
                .into_iter()
                .zip(cached)
                .map(|(row, hit)| OrderLine {
                    id: row.id,
                    quantity: row.quantity,
                    created_at: row.created_at,
                    product: hit
                        .flatten()
                        .or_else(|| found.get(&row.product_id).cloned().flatten()),
                })
                .collect();
            Ok::<_, Failure>(UserOrders { user_id, orders })
        })
        .await
        .map_err(read_failure)?;
    // One user's data, changed by their writes: no shared cache may keep it.
    Ok(([(CACHE_CONTROL, "private, no-cache")], Json(answer)))
}

async fn top(State(fast): State<Fast>) -> Result<impl IntoResponse, Failure> {
    let pool = fast.pool.clone();
    let top = fast
        .top
        .try_get_with(0, move || async move {
            let mut connection = pool.get().await.map_err(Failure::from)?;
            Ok::<_, Failure>(model::top(connection.db()).await?)
        })
        .await
        .map_err(read_failure)?;
    Ok(([(CACHE_CONTROL, "public, max-age=5")], Json(top)))
}

/// Streamed: a page of orders per query (each on a pooled connection held only for that
/// query, the next page fetched while this one is sent), encoded as NDJSON in chunks; a
/// failure mid-way aborts the response rather than ending it cleanly.
async fn export(State(fast): State<Fast>, Query(from): Query<ExportQuery>) -> Response {
    let pool = fast.pool.clone();
    let from = from.from;
    let rows = fast.export.stream(
        EXPORT_PAGE,
        move |plan| {
            let pool = pool.clone();
            async move {
                let mut connection = pool.get().await.map_err(|error| error.to_string())?;
                model::export_page(connection.db(), from, &plan)
                    .await
                    .map_err(|error| error.to_string())
            }
        },
        |order: &Order| vec![order.user_id.into(), order.id.into()],
    );
    fast.encoder.ndjson(rows).into_response()
}

/// Rows per export query: an export range (about 500 orders) is usually one.
const EXPORT_PAGE: usize = 1000;

/// The counter of cache removals that failed after a committed write, for cache `name`.
fn invalidation_failures(registry: &Registry, name: &'static str) -> Result<Counter, String> {
    const METRIC: &str = "brisk_demo_invalidation_failures_total";
    registry.describe(
        METRIC,
        MetricKind::Counter,
        "Cache removals that failed after their write committed (the write was still answered as done).",
    );
    let key = Key::new(METRIC)
        .and_then(|key| key.with_label("name", name))
        .map_err(|error| error.to_string())?;
    Ok(registry.counter(&key))
}

/// Counts one more of a repeated failure and says whether to log it (the first few, then at
/// each power of two), with the count: an outage logs a few lines, not one per request.
fn worth_logging(count: &AtomicU64) -> Option<u64> {
    let n = count.fetch_add(1, Ordering::Relaxed) + 1;
    (n <= 3 || n.is_power_of_two()).then_some(n)
}

/// Submitted to the write batcher (one INSERT for the orders placed within 2 ms); the
/// user's cached order list is dropped once the order is written.
///
/// Answers 201 once the row is in, whatever the cache does after: a failed removal is
/// logged and counted (`brisk_demo_invalidation_failures_total`), never an error, since a
/// client that retried it would place the order twice. A write the database could not take
/// (no connection, refused) wrote nothing: a 503 with `Retry-After`.
async fn place(State(fast): State<Fast>, Json(order): Json<NewOrder>) -> Result<Response, Failure> {
    if !model::valid(&order) {
        return Ok(StatusCode::UNPROCESSABLE_ENTITY.into_response());
    }
    let user_id = order.user_id;
    let id = fast.writer.submit(order).await.map_err(|error| {
        static FAILED: AtomicU64 = AtomicU64::new(0);
        if let Some(n) = worth_logging(&FAILED) {
            eprintln!("brisk-demo: POST /orders failed ({n} so far): {error}");
        }
        match error {
            // The batch's INSERT failed or never ran: nothing of it was written.
            brisk_batch::Error::Batch { .. } | brisk_batch::Error::Closed => {
                Failure::Unavailable(server::NOT_PLACED)
            }
            // Whether it was written is unknown (the runtime stopped), or the writer broke
            // its contract: not something a retry may safely follow.
            other => Failure::Cache(other.to_string()),
        }
    })?;
    if let Err(error) = fast.orders.remove(&user_id).await {
        fast.invalidation_failures.increment();
        static FAILED: AtomicU64 = AtomicU64::new(0);
        if let Some(n) = worth_logging(&FAILED) {
            eprintln!(
                "brisk-demo: order {id} placed, but dropping user {user_id}'s cached orders failed ({n} so far): {error}"
            );
        }
    }
    Ok((StatusCode::CREATED, Json(Placed { id })).into_response())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::db::{self, Scale};

    const TINY: Scale = Scale {
        products: 100,
        users: 20,
        orders: 300,
    };

    /// A seeded SQLite file in `dir`.
    fn seeded(dir: &tempfile::TempDir) -> Target {
        let path = dir.path().join("tiny.sqlite");
        db::prepare(&path, TINY).unwrap();
        Target::Sqlite(path.display().to_string().into())
    }

    async fn sqlite(target: &Target) -> model::SqliteConnection {
        let Target::Sqlite(path) = target else {
            unreachable!("the tests seed SQLite")
        };
        let mut connection = model::SqliteConnection::establish(path).await.unwrap();
        connection.batch_execute(db::PRAGMAS).await.unwrap();
        connection
    }

    /// Status, `Retry-After`, body.
    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, Option<String>, String) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, retry, String::from_utf8_lossy(&body).into_owned())
    }

    /// Issue 29: the order was written, then dropping the user's cached list failed on the
    /// dead Redis, and the client was told 500 (a retry would place it twice).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_placed_while_redis_is_down_is_created_once_and_answered_201() {
        let dir = tempfile::tempdir().unwrap();
        let target = seeded(&dir);
        let mut redis = tokio::task::spawn_blocking(brisk_testkit::RedisServer::start)
            .await
            .unwrap()
            .unwrap();
        let app = router(target.clone(), Some(&redis.url())).await.unwrap();
        // The user's order list, cached in both levels.
        assert_eq!(call(&app, "GET", "/users/3/orders", "").await.0, 200);
        tokio::task::block_in_place(|| redis.kill());

        let (status, _, body) = call(
            &app,
            "POST",
            "/orders",
            r#"{"user_id":3,"product_id":5,"quantity":7}"#,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = serde_json::from_str::<Placed>(&body).unwrap().id;
        let mut connection = sqlite(&target).await;
        let placed = model::placed_after(model::Db::Sqlite(&mut connection), TINY.orders)
            .await
            .unwrap();
        assert_eq!(placed.len(), 1, "{placed:?}");
        assert_eq!(
            (
                placed[0].id,
                placed[0].user_id,
                placed[0].product_id,
                placed[0].quantity
            ),
            (id, 3, 5, 7)
        );
        // The removal Redis could not take waits for it (auto-recovery), counted where an
        // operator looks.
        let metrics = call(&app, "GET", "/metrics", "").await.2;
        assert!(
            metrics.contains("brisk_cache_tiered_recovery_queued_total{name=\"orders\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("brisk_demo_invalidation_failures_total{name=\"orders\"} 0"),
            "{metrics}"
        );
    }

    /// A write the database refuses is a clear 503 the client may retry, not a 500; a bad
    /// order stays a 422.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_order_the_database_refuses_is_a_503_with_retry_after() {
        let dir = tempfile::tempdir().unwrap();
        let target = seeded(&dir);
        let app = router(target.clone(), None).await.unwrap();
        sqlite(&target)
            .await
            .batch_execute("DROP TABLE orders")
            .await
            .unwrap();
        let (status, retry, body) = call(
            &app,
            "POST",
            "/orders",
            r#"{"user_id":3,"product_id":5,"quantity":7}"#,
        )
        .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body.starts_with("the order was not placed"), "{body}");
        let bad = call(
            &app,
            "POST",
            "/orders",
            r#"{"user_id":3,"product_id":5,"quantity":0}"#,
        )
        .await;
        assert_eq!(bad.0, 422);
    }

    /// A read the database cannot answer (it is down, the pool finds no connection) is a
    /// 503 with `Retry-After`, not a 500.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_while_postgres_is_down_is_a_503_with_retry_after() {
        let mut postgres = tokio::task::spawn_blocking(brisk_testkit::PostgresServer::start)
            .await
            .unwrap()
            .unwrap();
        let url = postgres.create_database("catalog").unwrap();
        db::prepare_pg(&url, TINY).await.unwrap();
        let app = router(Target::Pg(url.into()), None).await.unwrap();
        assert_eq!(call(&app, "GET", "/products/1", "").await.0, 200);
        tokio::task::block_in_place(|| postgres.kill());
        for path in ["/products/2", "/users/4/orders", "/top-products"] {
            let (status, retry, body) = call(&app, "GET", path, "").await;
            assert_eq!(
                (status, retry.as_deref()),
                (503, Some("1")),
                "{path}: {body}"
            );
        }
        let (status, retry, body) = call(
            &app,
            "POST",
            "/orders",
            r#"{"user_id":3,"product_id":5,"quantity":7}"#,
        )
        .await;
        assert_eq!((status, retry.as_deref()), (503, Some("1")), "{body}");
        assert_eq!(body, server::NOT_PLACED);
    }

    /// Issue 29's "11 answered 500 with no clear cause": a query in flight when PostgreSQL
    /// went down failed on its lost connection, and the answer was a bare 500.
    #[tokio::test]
    async fn a_read_whose_connection_was_lost_is_a_503_and_a_500_names_its_cause() {
        use diesel::result::{DatabaseErrorKind, Error};
        let lost = || {
            Failure::Database(Error::DatabaseError(
                DatabaseErrorKind::UnableToSendCommand,
                Box::new("connection closed".to_owned()),
            ))
        };
        let answer = |failure: Failure| async move {
            let response = failure.into_response();
            let status = response.status().as_u16();
            let retry = response.headers().get(http::header::RETRY_AFTER).cloned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, retry, String::from_utf8_lossy(&body).into_owned())
        };
        let load = |failure: Failure| brisk_cache::Error::Load {
            key: "202".to_owned(),
            source: Arc::new(failure),
        };
        let (status, retry, body) = answer(read_failure(load(lost()))).await;
        assert_eq!((status, retry.is_some()), (503, true), "{body}");
        assert_eq!(body, server::DATABASE_LOST);
        let (status, _, body) = answer(lost()).await;
        assert_eq!(status, 503, "{body}");
        // Any other failure under a load: a 500 that says what failed.
        let (status, _, body) = answer(read_failure(load(Failure::Missing))).await;
        assert_eq!(status, 500);
        assert!(body.contains("the database returned no row"), "{body}");
    }
}
