//! The load generator: one seeded, mixed workload over real HTTP on loopback, the same for
//! both variants; and the check that both variants answer the same data.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

use crate::{
    db::{Rng, Scale, Zipf},
    model::{EXPORT_USERS, PAGE_SIZE},
    server::{FIRST_PAGE, Stats},
};

pub(crate) type HttpClient =
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http()
}

/// The endpoints, in the order the tables list them.
pub(crate) const ENDPOINTS: [&str; 6] = [
    "product by id",
    "a user's orders with their products",
    "product listing page",
    "top products (aggregate)",
    "order export (NDJSON)",
    "place an order",
];

/// One request of the workload.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) endpoint: usize,
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) body: Option<String>,
}

/// The listing endpoint's index in [`ENDPOINTS`].
pub(crate) const LISTING: usize = 2;

/// A client's place in the product listing: it starts at the first page and follows each
/// page's `next` link for a Zipf-drawn number of pages (most browse a few, some scroll
/// deep), then starts over.
#[derive(Debug, Default)]
pub(crate) struct Browse {
    next: Option<String>,
    left: usize,
}

impl Browse {
    /// The path of this client's next listing request.
    fn path(&mut self, depth: &Zipf, rng: &mut Rng) -> String {
        match self.next.take() {
            Some(next) if self.left > 0 => {
                self.left -= 1;
                next
            }
            _ => {
                self.left = depth.sample(rng);
                FIRST_PAGE.to_owned()
            }
        }
    }

    /// Takes note of the answer to `call` (the link to follow, if it was a listing page).
    pub(crate) fn saw(&mut self, call: &Call, answer: Option<&Answer>) {
        if call.endpoint == LISTING {
            self.next = answer.and_then(|answer| answer.next.clone());
        }
    }
}

/// The workload: Zipf-popular keys, a read/write mix.
pub(crate) struct Workload {
    products: Zipf,
    users: Zipf,
    /// How many pages past the first a browsing client reads.
    depth: Zipf,
    scale: Scale,
    writes: f64,
}

impl Workload {
    pub(crate) fn new(scale: Scale, writes: f64) -> Self {
        Self {
            products: Zipf::new(scale.products as usize, 1.0),
            users: Zipf::new(scale.users as usize, 1.0),
            depth: Zipf::new(((scale.products / PAGE_SIZE) as usize).clamp(1, 500), 1.0),
            scale,
            writes,
        }
    }

    /// The next request of a client browsing as `browse`; reads only when `reads_only`
    /// (for the equality check).
    pub(crate) fn next(&self, rng: &mut Rng, reads_only: bool, browse: &mut Browse) -> Call {
        if !reads_only && rng.unit() < self.writes {
            return self.of(5, rng, browse);
        }
        // Reads: 46 % product, 31 % order lists, 18 % listing pages, 1 % the aggregate (a
        // scan of every order: a dashboard's share, not a page view's), 4 % exports.
        let pick = rng.unit();
        let endpoint = match pick {
            p if p < 0.46 => 0,
            p if p < 0.77 => 1,
            p if p < 0.95 => 2,
            p if p < 0.96 => 3,
            _ => 4,
        };
        self.of(endpoint, rng, browse)
    }

    /// A request to `endpoint` (an index into [`ENDPOINTS`]), its key drawn as in the mix.
    pub(crate) fn of(&self, endpoint: usize, rng: &mut Rng, browse: &mut Browse) -> Call {
        let get = |path: String| Call {
            endpoint,
            method: http::Method::GET,
            path,
            body: None,
        };
        match endpoint {
            0 => get(format!("/products/{}", 1 + self.products.sample(rng))),
            1 => get(format!("/users/{}/orders", 1 + self.users.sample(rng))),
            LISTING => get(browse.path(&self.depth, rng)),
            3 => get("/top-products".to_owned()),
            4 => {
                let ranges = (self.scale.users / EXPORT_USERS).max(1) as u64;
                let from = 1 + rng.below(ranges) as i64 * EXPORT_USERS;
                get(format!("/orders/export?from={from}"))
            }
            _ => Call {
                endpoint: 5,
                method: http::Method::POST,
                path: "/orders".to_owned(),
                body: Some(format!(
                    r#"{{"user_id":{},"product_id":{},"quantity":{}}}"#,
                    1 + self.users.sample(rng),
                    1 + self.products.sample(rng),
                    1 + rng.below(3)
                )),
            },
        }
    }
}

/// One answer: status, body as sent (compressed when the variant compresses), and the
/// `Link` header's `rel="next"` target.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) next: Option<String>,
}

/// The target of a `Link: <target>; rel="next"` header value.
fn next_link(value: &http::HeaderValue) -> Option<String> {
    let value = value.to_str().ok()?;
    let (target, params) = value.strip_prefix('<')?.split_once('>')?;
    params
        .split(';')
        .any(|param| param.trim() == r#"rel="next""#)
        .then(|| target.to_owned())
}

pub(crate) async fn send(
    client: &HttpClient,
    base: &str,
    call: &Call,
    accept_encoding: bool,
) -> Result<Answer, String> {
    let mut request = http::Request::builder()
        .method(call.method.clone())
        .uri(format!("{base}{}", call.path));
    if accept_encoding {
        request = request.header("accept-encoding", "gzip, br");
    }
    if call.body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = Full::new(Bytes::from(call.body.clone().unwrap_or_default()));
    let request = request.body(body).map_err(|error| error.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let next = response
        .headers()
        .get(http::header::LINK)
        .and_then(next_link);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    Ok(Answer { status, body, next })
}

/// Reads `base`'s `/stats`.
pub(crate) async fn stats(client: &HttpClient, base: &str) -> Result<Stats, String> {
    let call = Call {
        endpoint: 0,
        method: http::Method::GET,
        path: "/stats".to_owned(),
        body: None,
    };
    let answer = send(client, base, &call, false).await?;
    serde_json::from_slice(&answer.body).map_err(|error| format!("/stats: {error}"))
}

/// Sends the same `samples` read requests to both variants (without compression, so the
/// bodies compare as sent) and returns the first disagreement, if any. A listing sample is
/// a browse from the first page, each variant following its own `next` links (a page
/// number for one, a cursor for the other): the pages must hold the same products, and
/// agree on whether another follows.
pub(crate) async fn agree(
    client: &HttpClient,
    naive: &str,
    brisk: &str,
    workload: &Workload,
    samples: usize,
) -> Result<usize, String> {
    /// Pages a listing sample reads at most.
    const DEPTH: usize = 40;
    let mut rng = Rng::new(42);
    let mut unused = Browse::default();
    for _ in 0..samples {
        let call = workload.next(&mut rng, true, &mut unused);
        if call.endpoint != LISTING {
            let (a, b) = (
                send(client, naive, &call, false).await?,
                send(client, brisk, &call, false).await?,
            );
            same(&call, &a, &b)?;
            continue;
        }
        let pages = 1 + workload.depth.sample(&mut rng).min(DEPTH - 1);
        let (mut at_a, mut at_b) = (call.clone(), call);
        for _ in 0..pages {
            let (a, b) = (
                send(client, naive, &at_a, false).await?,
                send(client, brisk, &at_b, false).await?,
            );
            same(&at_a, &a, &b)?;
            match (a.next, b.next) {
                (Some(next_a), Some(next_b)) => {
                    at_a.path = next_a;
                    at_b.path = next_b;
                }
                (None, None) => break,
                (a, b) => {
                    return Err(format!(
                        "the variants disagree on whether a page follows {}: naive {a:?}, brisk {b:?}",
                        at_a.path
                    ));
                }
            }
        }
    }
    Ok(samples)
}

/// Whether two answers to `call` say the same: status and JSON (or bytes), a listing
/// page's `next` link aside (its form is each variant's own).
fn same(call: &Call, a: &Answer, b: &Answer) -> Result<(), String> {
    let json = |answer: &Answer| {
        let mut value = serde_json::from_slice::<serde_json::Value>(&answer.body).ok()?;
        if call.endpoint == LISTING {
            let next = value.get_mut("next")?;
            *next = serde_json::Value::Bool(!next.is_null());
        }
        Some(value)
    };
    let same = a.status == b.status
        && match (json(a), json(b)) {
            (Some(x), Some(y)) => x == y,
            _ => a.body == b.body,
        };
    if same {
        return Ok(());
    }
    Err(format!(
        "the variants disagree on {} {}: naive {} {:?}…, brisk {} {:?}…",
        call.method,
        call.path,
        a.status,
        String::from_utf8_lossy(&a.body[..a.body.len().min(120)]),
        b.status,
        String::from_utf8_lossy(&b.body[..b.body.len().min(120)]),
    ))
}

/// What one endpoint saw during a run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// Latencies in microseconds.
    pub(crate) latencies: Vec<u32>,
    pub(crate) bytes: u64,
    pub(crate) errors: u64,
}

/// A run of the workload against one variant.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) seconds: f64,
    pub(crate) per_endpoint: Vec<Seen>,
    pub(crate) stats: Stats,
}

impl Run {
    pub(crate) fn total(&self) -> Seen {
        let mut all = Seen::default();
        for seen in &self.per_endpoint {
            all.latencies.extend_from_slice(&seen.latencies);
            all.bytes += seen.bytes;
            all.errors += seen.errors;
        }
        all
    }
}

/// Drives `base` with `concurrency` clients for `duration`, the workload seeded alike for
/// every variant; `tick` is called about every 100 ms with the fraction done.
pub(crate) async fn run(
    client: &HttpClient,
    base: &str,
    workload: Arc<Workload>,
    concurrency: usize,
    duration: Duration,
    tick: impl Fn(f64),
) -> Result<Run, String> {
    let before = stats(client, base).await?;
    let seen = Arc::new(Mutex::new(vec![Seen::default(); ENDPOINTS.len()]));
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (client, base, workload) = (client.clone(), base.to_owned(), Arc::clone(&workload));
            let (seen, stop, failures) =
                (Arc::clone(&seen), Arc::clone(&stop), Arc::clone(&failures));
            tokio::spawn(async move {
                let mut rng = Rng::new(1000 + task as u64);
                let mut mine = vec![Seen::default(); ENDPOINTS.len()];
                let mut browse = Browse::default();
                while !stop.load(Ordering::Relaxed) {
                    let call = workload.next(&mut rng, false, &mut browse);
                    let sent = Instant::now();
                    let answer = send(&client, &base, &call, true).await;
                    let took = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                    browse.saw(&call, answer.as_ref().ok());
                    let entry = &mut mine[call.endpoint];
                    entry.latencies.push(took);
                    match answer {
                        Ok(answer) if answer.status < 400 || answer.status == 404 => {
                            entry.bytes += answer.body.len() as u64;
                        }
                        Ok(_) | Err(_) => {
                            entry.errors += 1;
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                let mut all = seen
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (total, part) in all.iter_mut().zip(mine) {
                    total.latencies.extend(part.latencies);
                    total.bytes += part.bytes;
                    total.errors += part.errors;
                }
            })
        })
        .collect();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tick((started.elapsed().as_secs_f64() / duration.as_secs_f64()).min(1.0));
    }
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.map_err(|error| error.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = stats(client, base).await?;
    let per_endpoint = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Run {
        seconds,
        per_endpoint,
        stats: Stats {
            queries: after.queries.saturating_sub(before.queries),
            connections: after.connections.saturating_sub(before.connections),
            cache_hits: after.cache_hits.saturating_sub(before.cache_hits),
            cache_misses: after.cache_misses.saturating_sub(before.cache_misses),
            l2_errors: after.l2_errors.saturating_sub(before.l2_errors),
            l2_recovered_at_ms: after.l2_recovered_at_ms,
        },
    })
}

/// Database statements per request of each endpoint alone: up to `requests` requests to it
/// from four clients at a time (each listing client browsing as in the mix), for at most
/// two seconds (an expensive endpoint of the naive variant gets a few), right after the
/// mixed run (caches as warm as it left them).
pub(crate) async fn statements_per_endpoint(
    client: &HttpClient,
    base: &str,
    workload: &Arc<Workload>,
    requests: usize,
) -> Result<Vec<f64>, String> {
    const CLIENTS: usize = 4;
    const FOR_AT_MOST: Duration = Duration::from_secs(2);
    let mut per_endpoint = Vec::with_capacity(ENDPOINTS.len());
    for endpoint in 0..ENDPOINTS.len() {
        let before = stats(client, base).await?;
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|n| {
                let (client, base, workload) =
                    (client.clone(), base.to_owned(), Arc::clone(workload));
                tokio::spawn(async move {
                    let mut rng = Rng::new(77 + n as u64);
                    let mut browse = Browse::default();
                    let mut sent = 0;
                    while sent < requests.div_ceil(CLIENTS)
                        && (sent == 0 || started.elapsed() < FOR_AT_MOST)
                    {
                        let call = workload.of(endpoint, &mut rng, &mut browse);
                        let answer = send(&client, &base, &call, true).await?;
                        browse.saw(&call, Some(&answer));
                        sent += 1;
                    }
                    Ok::<_, String>(sent)
                })
            })
            .collect();
        let mut sent = 0;
        for task in clients {
            sent += task.await.map_err(|error| error.to_string())??;
        }
        let after = stats(client, base).await?;
        per_endpoint.push(after.queries.saturating_sub(before.queries) as f64 / sent.max(1) as f64);
    }
    Ok(per_endpoint)
}

/// The `q` quantile of `latencies` (µs), which it sorts.
pub(crate) fn quantile(latencies: &mut [u32], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_unstable();
    let at = ((latencies.len() - 1) as f64 * q).round() as usize;
    f64::from(latencies[at])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_next_link_is_read_from_the_link_header() {
        let link = |text: &'static str| next_link(&http::HeaderValue::from_static(text));
        assert_eq!(
            link(r#"</products?cursor=AbC-_>; rel="next""#).as_deref(),
            Some("/products?cursor=AbC-_")
        );
        assert_eq!(
            link(r#"</p?page=2>; title="x"; rel="next""#).as_deref(),
            Some("/p?page=2")
        );
        for other in [
            r#"</p?page=1>; rel="prev""#,
            "/p?page=2",
            r#"</p?page=2; rel="next""#,
        ] {
            assert_eq!(link(other), None, "{other}");
        }
    }

    #[test]
    fn a_browsing_client_follows_links_for_a_drawn_depth_then_starts_over() {
        let workload = Workload::new(Scale::SMOKE, 0.0);
        let mut rng = Rng::new(3);
        let mut browse = Browse::default();
        let answer = |n: usize| Answer {
            status: 200,
            body: Bytes::new(),
            next: Some(format!("/products?page={n}")),
        };
        let mut depths = Vec::new();
        let mut followed = 0;
        for n in 1..2000 {
            let call = workload.of(LISTING, &mut rng, &mut browse);
            if call.path == FIRST_PAGE {
                depths.push(followed);
                followed = 0;
            } else {
                // Always the link the last answer gave.
                assert_eq!(call.path, format!("/products?page={}", n - 1));
                followed += 1;
            }
            browse.saw(&call, Some(&answer(n)));
        }
        assert!(depths.iter().filter(|&&depth| depth == 0).count() > 1);
        assert!(depths.iter().any(|&depth| depth >= 10), "{depths:?}");
        // The end of the listing (no link), or a failed request, starts over.
        browse.left = 5;
        let call = workload.of(LISTING, &mut rng, &mut browse);
        browse.saw(&call, None);
        assert_eq!(workload.of(LISTING, &mut rng, &mut browse).path, FIRST_PAGE);
    }
}
