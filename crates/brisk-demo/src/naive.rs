//! The catalog as it is often first written: a connection per request, N+1 queries, no
//! cache, offset paging, uncompressed responses, the whole export buffered, one INSERT per
//! order.

use crate::{
    backend::Target,
    model::{self, NewOrder, OrderLine, Placed, ProductPage, UserOrders},
    server::{self, ExportQuery, FIRST_PAGE, Failure, PageQuery, stats},
};
use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};

pub(crate) fn router(target: Target) -> Router {
    Router::new()
        .route("/products/{id}", get(product))
        .route("/products", get(page))
        .route("/users/{id}/orders", get(orders))
        .route("/top-products", get(top))
        .route("/orders/export", get(export))
        .route("/orders", post(place))
        .route("/stats", get(|| async { Json(stats(None)) }))
        .with_state(target)
}

async fn product(State(target): State<Target>, Path(id): Path<i64>) -> Result<Response, Failure> {
    let mut connection = target.connect().await?;
    Ok(match model::product(connection.db(), id).await? {
        Some(product) => Json(product).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    })
}

async fn page(
    State(target): State<Target>,
    Query(query): Query<PageQuery>,
) -> Result<Response, Failure> {
    let mut connection = target.connect().await?;
    let mut items = model::page(connection.db(), query.page).await?;
    let more = items.len() > model::PAGE_SIZE as usize;
    items.truncate(model::PAGE_SIZE as usize);
    let next = more.then(|| format!("{FIRST_PAGE}?page={}", query.page.max(0) + 1));
    Ok(server::listing(ProductPage { items, next }, None))
}

/// N+1: the orders, then each order's product on its own.
async fn orders(
    State(target): State<Target>,
    Path(user_id): Path<i64>,
) -> Result<Json<UserOrders>, Failure> {
    let mut connection = target.connect().await?;
    let rows = model::recent_orders(connection.db(), user_id).await?;
    let mut orders = Vec::with_capacity(rows.len());
    for row in rows {
        let product = model::product(connection.db(), row.product_id).await?;
        orders.push(OrderLine {
            id: row.id,
            quantity: row.quantity,
            created_at: row.created_at,
            product,
        });
    }
    Ok(Json(UserOrders { user_id, orders }))
}

async fn top(State(target): State<Target>) -> Result<Json<Vec<model::TopProduct>>, Failure> {
    let mut connection = target.connect().await?;
    Ok(Json(model::top(connection.db()).await?))
}

/// The whole export read, then sent.
async fn export(
    State(target): State<Target>,
    Query(from): Query<ExportQuery>,
) -> Result<Response, Failure> {
    let mut connection = target.connect().await?;
    let orders = model::export(connection.db(), from.from).await?;
    Ok((
        [("content-type", "application/x-ndjson")],
        model::ndjson(&orders),
    )
        .into_response())
}

async fn place(
    State(target): State<Target>,
    Json(order): Json<NewOrder>,
) -> Result<Response, Failure> {
    if !model::valid(&order) {
        return Ok(StatusCode::UNPROCESSABLE_ENTITY.into_response());
    }
    let mut connection = target.connect().await?;
    // A refused INSERT wrote nothing: the client may retry (one shape with the brisk variant).
    let ids = model::insert(connection.db(), std::slice::from_ref(&order), model::now())
        .await
        .map_err(|error| {
            eprintln!("brisk-demo: POST /orders (naive): {error}");
            Failure::Unavailable(server::NOT_PLACED)
        })?;
    let id = ids.first().copied().ok_or(Failure::Missing)?;
    Ok((StatusCode::CREATED, Json(Placed { id })).into_response())
}
