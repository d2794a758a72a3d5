//! The encoders and errors as axum responses, read over loopback by a hyper client and by curl:
//! complete bodies arrive whole, a failed stream is a failed transfer (never a clean end), and a
//! bad cursor or field list is a 400.

use std::time::Duration;

use axum::{
    Router,
    extract::{Query, State},
    routing::get,
};
use brisk_stream::{Cursor, Cursors, Encode, Encoder, Error, Fields, Scope};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: i64,
    customer: String,
    total_cents: i64,
}

const OFFERED: &[&str] = &["id", "customer", "total_cents"];
/// Enough rows that the body spans many chunks and TCP segments.
const ROWS: i64 = 5_000;

fn order(id: i64) -> Order {
    Order {
        id,
        customer: format!("customer {id}, \"quoted\""),
        total_cents: id * 7,
    }
}

type Rows = Box<dyn Stream<Item = Result<Order, std::io::Error>> + Send + Unpin>;

/// `ROWS` rows, or a failure after `fail_after` of them; yields to the runtime now and then,
/// as a database stream does.
fn rows(fail_after: Option<i64>) -> Rows {
    let all = stream::iter(0..ROWS).then(move |id| async move {
        if id % 500 == 0 {
            tokio::task::yield_now().await;
        }
        if Some(id) == fail_after {
            Err(std::io::Error::other("connection to the database lost"))
        } else {
            Ok(order(id))
        }
    });
    Box::new(Box::pin(all))
}

#[derive(Deserialize)]
struct Params {
    fields: Option<String>,
    fail: Option<i64>,
    cursor: Option<String>,
}

#[derive(Clone)]
struct App {
    encoder: Encoder,
    cursors: Cursors,
}

fn fields(params: &Params) -> Result<Fields, Error> {
    match &params.fields {
        Some(list) => Fields::parse(list, OFFERED),
        None => Ok(Fields::all(OFFERED)),
    }
}

async fn ndjson(State(app): State<App>, Query(p): Query<Params>) -> Result<Encode<Rows>, Error> {
    Ok(app.encoder.ndjson(rows(p.fail)).select(fields(&p)?))
}

async fn json(State(app): State<App>, Query(p): Query<Params>) -> Result<Encode<Rows>, Error> {
    Ok(app.encoder.json_array(rows(p.fail)).select(fields(&p)?))
}

async fn csv(State(app): State<App>, Query(p): Query<Params>) -> Result<Encode<Rows>, Error> {
    Ok(app.encoder.csv(rows(p.fail)).select(fields(&p)?))
}

/// A page of ids after the cursor's, with the next cursor in the envelope.
async fn page(State(app): State<App>, Query(p): Query<Params>) -> Result<Encode<Rows>, Error> {
    let scope = Scope::new("orders by id");
    let after = match &p.cursor {
        Some(text) => app.cursors.decode::<i64>(&scope, text)?.key,
        None => -1,
    };
    let last = after + 10;
    let next = app.cursors.encode(&scope, &Cursor::after(last))?;
    let page: Rows = Box::new(stream::iter((after + 1..=last).map(|id| Ok(order(id)))));
    Ok(app
        .encoder
        .json_envelope(page, "data", move |_| serde_json::json!({ "next": next })))
}

async fn serve() -> String {
    let app = App {
        encoder: Encoder::builder().chunk_size(8 * 1024).build().unwrap(),
        cursors: Cursors::builder().key(1, [3u8; 32]).build().unwrap(),
    };
    let router = Router::new()
        .route("/orders.ndjson", get(ndjson))
        .route("/orders.json", get(json))
        .route("/orders.csv", get(csv))
        .route("/page", get(page))
        .with_state(app);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

/// Status, content type, and the body: its bytes, or the error that ended it with the bytes
/// that came before.
async fn get_body(url: &str) -> (StatusCode, String, Result<Bytes, (Bytes, String)>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client
        .request(Request::get(url).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let mut body = response.into_body();
    let mut received = Vec::new();
    let outcome = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    received.extend_from_slice(&data);
                }
            }
            Some(Err(error)) => break Err(error.to_string()),
            None => break Ok(()),
        }
    };
    let received = Bytes::from(received);
    (
        status,
        content_type,
        outcome
            .map(|()| received.clone())
            .map_err(|e| (received, e)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_bodies_arrive_whole_with_their_content_types() {
    let base = serve().await;
    let (status, content_type, body) = get_body(&format!("{base}/orders.ndjson")).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/x-ndjson")
    );
    let body = body.unwrap();
    let back: Vec<Order> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert_eq!(back, (0..ROWS).map(order).collect::<Vec<_>>());

    let (_, content_type, body) = get_body(&format!("{base}/orders.json?fields=id")).await;
    assert_eq!(content_type, "application/json");
    let ids: Vec<serde_json::Value> = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(ids.len(), ROWS as usize);
    assert_eq!(ids[42], serde_json::json!({ "id": 42 }));

    let (_, content_type, body) = get_body(&format!("{base}/orders.csv")).await;
    assert_eq!(content_type, "text/csv; charset=utf-8");
    let body = body.unwrap();
    let back: Vec<Order> = csv::Reader::from_reader(&body[..])
        .deserialize()
        .map(Result::unwrap)
        .collect();
    assert_eq!(back.len(), ROWS as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_fails_midway_is_a_failed_transfer() {
    let base = serve().await;
    for path in ["orders.json", "orders.ndjson", "orders.csv"] {
        let (status, _, body) = get_body(&format!("{base}/{path}?fail=3000")).await;
        // The status went out with the first bytes; the body must not end cleanly.
        assert_eq!(status, StatusCode::OK);
        let (received, error) = body.expect_err(path);
        assert!(
            !received.is_empty(),
            "{path}: the rows before the failure arrived"
        );
        assert!(
            error.contains("body") || error.contains("connection") || error.contains("message"),
            "{path}: {error}"
        );
        if path == "orders.ndjson" {
            let last = received
                .split(|b| *b == b'\n')
                .rfind(|line| !line.is_empty())
                .unwrap();
            assert_eq!(last, br#"{"error":"row stream failed","rows":3000}"#);
        }
        if path == "orders.json" {
            assert!(serde_json::from_slice::<Vec<Order>>(&received).is_err());
        }
    }
}

async fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl finishes")
    .expect("curl runs (xtask installs it)");
    (
        output.status.code().unwrap_or(-1),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reports_a_failed_stream_as_a_partial_transfer() {
    let base = serve().await;
    let (code, body, _) = curl(&[&format!("{base}/orders.json")]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_slice::<Vec<Order>>(&body).unwrap().len(),
        ROWS as usize
    );
    for path in ["orders.json", "orders.ndjson", "orders.csv"] {
        let (code, body, stderr) = curl(&[&format!("{base}/{path}?fail=2500")]).await;
        // 18: "transfer closed with outstanding read data remaining"; 56: receive failure.
        assert!(
            code == 18 || code == 56,
            "{path}: curl exited {code}: {stderr}"
        );
        assert!(!body.is_empty(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_and_cursors_are_400s_and_a_cursor_walks_the_pages() {
    let base = serve().await;
    let (status, _, body) = get_body(&format!("{base}/orders.ndjson?fields=id,password")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(&body.unwrap()[..], b"unknown field `password`");
    let (status, _, body) = get_body(&format!("{base}/orders.json?fields=id,,name")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body.unwrap()).starts_with("invalid field list"));

    // Page through by the envelope's `next`; an edited cursor is refused.
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let url = match &cursor {
            Some(c) => format!("{base}/page?cursor={c}"),
            None => format!("{base}/page"),
        };
        let (status, _, body) = get_body(&url).await;
        assert_eq!(status, StatusCode::OK);
        let page: serde_json::Value = serde_json::from_slice(&body.unwrap()).unwrap();
        seen.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_i64().unwrap()),
        );
        cursor = Some(page["next"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, (0..30).collect::<Vec<_>>());
    let mut edited = cursor.unwrap();
    let last = edited.pop().unwrap();
    edited.push(if last == 'A' { 'B' } else { 'A' });
    let (status, _, body) = get_body(&format!("{base}/page?cursor={edited}")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body.unwrap()).starts_with("invalid cursor"));
    let (status, _, _) = get_body(&format!("{base}/page?cursor=%F0%9F%92%A9")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// A keyset export whose key closure returns a key that does not fit the keyset: the body is a
/// failed transfer after the first page, never a clean end (a silently truncated export).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_with_a_key_that_does_not_fit_is_a_failed_transfer() {
    use brisk_stream::{KeyValue, Keyset, Placeholders, Plan, SortOrder};

    /// Ids after the plan's bound one, up to 100, at most `plan.fetch()` of them.
    async fn fetch(plan: Plan) -> Result<Vec<Order>, std::io::Error> {
        let after = match plan.sql_where(Placeholders::Dollar, 1).1.first() {
            Some(KeyValue::Int(id)) => *id,
            _ => -1,
        };
        Ok((after + 1..100)
            .take(plan.fetch() as usize)
            .map(order)
            .collect())
    }
    async fn export(Query(p): Query<Params>) -> impl axum::response::IntoResponse {
        let keyset = Keyset::builder()
            .unique_column("id", SortOrder::Asc)
            .build()
            .unwrap();
        let good = p.fail.is_none();
        let rows = keyset.stream(10, fetch, move |row: &Order| {
            if good {
                vec![KeyValue::Int(row.id)]
            } else {
                // Two values for a one-column sort.
                vec![KeyValue::Int(row.id), KeyValue::Int(0)]
            }
        });
        Encoder::default().ndjson(rows)
    }
    let router: Router = Router::new().route("/export.ndjson", get(export));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let (status, _, body) = get_body(&format!("{base}/export.ndjson")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.unwrap().iter().filter(|b| **b == b'\n').count(), 100);

    let (status, _, body) = get_body(&format!("{base}/export.ndjson?fail=1")).await;
    assert_eq!(status, StatusCode::OK);
    let (received, error) = body.expect_err("a bad key aborts the body");
    let lines: Vec<&[u8]> = received
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    assert_eq!(lines.len(), 11, "the first page, then the error record");
    assert_eq!(lines[10], br#"{"error":"row stream failed","rows":10}"#);
    assert!(
        error.contains("body") || error.contains("connection") || error.contains("message"),
        "{error}"
    );
    let (code, _, stderr) = curl(&[&format!("{base}/export.ndjson?fail=1")]).await;
    assert!(code == 18 || code == 56, "curl exited {code}: {stderr}");
}
