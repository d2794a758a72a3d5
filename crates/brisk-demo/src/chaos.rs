//! `--chaos` (`cargo xtask chaos`): the brisk variant on a throw-away PostgreSQL and Redis
//! under the demo's load, while Redis is killed and restarted, then PostgreSQL (immediate
//! shutdown), then both; each phase measured, every acknowledged write checked against the
//! database at the end, and the run's expectations (counts only, never timings) checked.
//!
//! Duplicates are found without a schema change: each `POST /orders` of the run carries a
//! client-generated unique (user, product, quantity) triple (the n-th POST's, a bijection of
//! n), so a row whose triple appears twice among the rows placed was written twice, and an
//! acknowledged id whose row is missing (or holds another triple) was lost.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    Variant,
    backend::Target,
    db::{Rng, Scale},
    level::epoch_ms,
    load::{self, Browse, Call, Workload},
    model, plot,
};

/// How long each phase lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Durations {
    before: Duration,
    outage: Duration,
    after: Duration,
}

impl Durations {
    /// `--short`: a few seconds per phase (the CI step).
    pub(crate) const SHORT: Durations = Durations {
        before: Duration::from_secs(3),
        outage: Duration::from_secs(3),
        after: Duration::from_secs(3),
    };
    /// The default.
    pub(crate) const FULL: Durations = Durations {
        before: Duration::from_secs(10),
        outage: Duration::from_secs(8),
        after: Duration::from_secs(10),
    };
}

/// Clients in flight.
const CLIENTS: usize = 16;
/// The mix (issue 29's fault run): endpoint index (see [`load::ENDPOINTS`]) and share.
const MIX: [(usize, f64); 4] = [(0, 0.4), (1, 0.3), (3, 0.2), (5, 0.1)];
/// The write endpoint's index.
const PLACE: usize = 5;
/// A request that has not answered after this long counts as failed (status 0).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    Redis,
    Postgres,
    Both,
}

impl Fault {
    const ALL: [Fault; 3] = [Fault::Redis, Fault::Postgres, Fault::Both];

    fn name(self) -> &'static str {
        match self {
            Fault::Redis => "Redis killed",
            Fault::Postgres => "PostgreSQL killed",
            Fault::Both => "both killed",
        }
    }
}

/// A phase of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Before,
    Outage,
    After,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::Outage => "outage",
            Phase::After => "after",
        }
    }
}

/// What a check counts in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// Failed GETs (any status ≥ 400 but 404, or no answer).
    FailedReads,
    /// Failed GETs of top products, which the cache holds (stale-while-revalidate) whatever
    /// the database does.
    FailedCachedReads,
    /// Failed `POST /orders`.
    FailedWrites,
    /// Answers 500 (a 503 while the database is down is allowed).
    Status500,
    /// Requests with no answer (connection error or the client's timeout).
    NoAnswer,
}

impl Count {
    fn name(self) -> &'static str {
        match self {
            Count::FailedReads => "failed reads",
            Count::FailedCachedReads => "failed reads of cached data (top products)",
            Count::FailedWrites => "failed writes",
            Count::Status500 => "500 answers",
            Count::NoAnswer => "requests with no answer",
        }
    }
}

/// One expectation: in `fault`'s `phase`, `count` is at most `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expect {
    fault: Fault,
    phase: Phase,
    count: Count,
    max: u64,
}

const fn expect(fault: Fault, phase: Phase, count: Count, max: u64) -> Expect {
    Expect {
        fault,
        phase,
        count,
        max,
    }
}

/// The run's expectations, issue 29's targets as counts (never timings). Lost and
/// duplicated writes must be 0 over the whole run, in addition to these.
pub(crate) const EXPECTATIONS: &[Expect] = {
    use Count::*;
    use Fault::*;
    use Phase::*;
    &[
        // Nothing fails while everything runs.
        expect(Redis, Before, FailedReads, 0),
        expect(Redis, Before, FailedWrites, 0),
        // Redis killed: 0 failed reads, 0 failed writes, during and after.
        expect(Redis, Outage, FailedReads, 0),
        expect(Redis, Outage, FailedWrites, 0),
        expect(Redis, Outage, Status500, 0),
        expect(Redis, After, FailedReads, 0),
        expect(Redis, After, FailedWrites, 0),
        expect(Redis, After, Status500, 0),
        // PostgreSQL killed: cached reads keep succeeding, writes fail clearly (503), no 500.
        expect(Postgres, Before, FailedReads, 0),
        expect(Postgres, Before, FailedWrites, 0),
        expect(Postgres, Outage, FailedCachedReads, 0),
        expect(Postgres, Outage, Status500, 0),
        expect(Postgres, Outage, NoAnswer, 0),
        expect(Postgres, After, FailedReads, 0),
        expect(Postgres, After, FailedWrites, 0),
        expect(Postgres, After, Status500, 0),
        // Both killed: no 500, and everything back after.
        expect(Both, Before, FailedReads, 0),
        expect(Both, Before, FailedWrites, 0),
        expect(Both, Outage, FailedCachedReads, 0),
        expect(Both, Outage, Status500, 0),
        expect(Both, Outage, NoAnswer, 0),
        expect(Both, After, FailedReads, 0),
        expect(Both, After, FailedWrites, 0),
        expect(Both, After, Status500, 0),
    ]
};

/// One request as the client saw it.
#[derive(Debug, Clone)]
struct Seen {
    endpoint: usize,
    /// Since the run's start, ms.
    started: f64,
    ended: f64,
    /// 0: no answer.
    status: u16,
    /// The start of a failure's answer (or why there was none).
    said: Option<Box<str>>,
}

impl Seen {
    fn failed(&self) -> bool {
        !(self.status < 400 || self.status == 404) || self.status == 0
    }

    fn latency(&self) -> f64 {
        self.ended - self.started
    }
}

/// A `POST /orders` of the run: its unique triple, and the id when it was acknowledged.
#[derive(Debug, Clone, Copy)]
struct Posted {
    triple: (i64, i64, i64),
    id: Option<i64>,
}

/// A phase on the timeline, ms since the start.
#[derive(Debug, Clone)]
struct Span {
    fault: Fault,
    phase: Phase,
    from: f64,
    to: f64,
    /// The demo process' RSS (MiB) at the start and end (outage phases).
    rss: Option<(f64, f64)>,
}

/// When a server accepted connections again after its restart, ms since the start, and
/// the epoch ms of it.
#[derive(Debug, Clone, Copy)]
struct Restarted {
    fault: Fault,
    redis_at: Option<(f64, u64)>,
    postgres_at: Option<f64>,
}

/// The n-th POST's order: a bijection of n onto (user, product, quantity).
fn triple(n: u64, scale: Scale) -> (i64, i64, i64) {
    let (users, products) = (scale.users as u64, scale.products as u64);
    let user = 1 + n % users;
    let product = 1 + (n / users) % products;
    let quantity = 1 + (n / (users * products)) % 100;
    (user as i64, product as i64, quantity as i64)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Runs the chaos run; writes the report to `out` if given. Fails when an expectation does.
pub(crate) async fn run(
    short: bool,
    outage: Option<u64>,
    out: Option<PathBuf>,
) -> Result<(), String> {
    let mut durations = if short {
        Durations::SHORT
    } else {
        Durations::FULL
    };
    if let Some(seconds) = outage {
        durations.outage = Duration::from_secs(seconds);
    }
    let scale = if short { Scale::SMOKE } else { Scale::FULL };
    println!("starting a throw-away PostgreSQL and Redis (brisk-testkit)");
    let mut postgres = tokio::task::spawn_blocking(brisk_testkit::PostgresServer::start)
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("starting PostgreSQL: {error}"))?;
    let url = postgres
        .create_database("catalog")
        .map_err(|error| format!("creating the database: {error}"))?;
    let mut redis = tokio::task::spawn_blocking(brisk_testkit::RedisServer::start)
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| format!("starting Redis: {error}"))?;
    let target = Target::Pg(url.as_str().into());
    crate::db::prepare_pg(&url, scale).await?;
    let variant = Variant::start("brisk", &target, Some(&redis.url()))?;
    let pid = variant.child.id();
    let client = load::client();
    let workload = Arc::new(Workload::new(scale, 0.0));

    // The clients.
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let posted = Arc::new(Mutex::new(Vec::<Posted>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let next_post = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let ms = move || start.elapsed().as_secs_f64() * 1000.0;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (client, base, workload) = (client.clone(), variant.base.clone(), workload.clone());
            let (seen, posted, stop, next_post) = (
                Arc::clone(&seen),
                Arc::clone(&posted),
                Arc::clone(&stop),
                Arc::clone(&next_post),
            );
            tokio::spawn(async move {
                let mut rng = Rng::new(2900 + n as u64);
                let mut browse = Browse::default();
                let (mut mine, mut placed) = (Vec::new(), Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let pick = rng.unit();
                    let mut sum = 0.0;
                    let endpoint = MIX
                        .iter()
                        .find(|(_, share)| {
                            sum += share;
                            pick < sum
                        })
                        .map_or(0, |(endpoint, _)| *endpoint);
                    let mut call: Call = workload.of(endpoint, &mut rng, &mut browse);
                    let mut order = None;
                    if endpoint == PLACE {
                        let (user, product, quantity) =
                            triple(next_post.fetch_add(1, Ordering::Relaxed), scale);
                        call.body = Some(format!(
                            r#"{{"user_id":{user},"product_id":{product},"quantity":{quantity}}}"#
                        ));
                        order = Some((user, product, quantity));
                    }
                    let started = ms();
                    let answer = tokio::time::timeout(
                        CLIENT_TIMEOUT,
                        load::send(&client, &base, &call, false),
                    )
                    .await;
                    let ended = ms();
                    let (status, body, said) = match answer {
                        Ok(Ok(answer)) => (answer.status, answer.body, None),
                        Ok(Err(error)) => (0, Default::default(), Some(error)),
                        Err(_) => (
                            0,
                            Default::default(),
                            Some("the client's timeout".to_owned()),
                        ),
                    };
                    let mut seen = Seen {
                        endpoint,
                        started,
                        ended,
                        status,
                        said: said.map(String::into_boxed_str),
                    };
                    if seen.failed() && seen.said.is_none() {
                        let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
                        seen.said = Some(text.into_owned().into_boxed_str());
                    }
                    mine.push(seen);
                    if let Some(triple) = order {
                        let id = (status == 201)
                            .then(|| serde_json::from_slice::<model::Placed>(&body).ok())
                            .flatten()
                            .map(|placed| placed.id);
                        placed.push(Posted { triple, id });
                    }
                }
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(mine);
                posted
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend(placed);
            })
        })
        .collect();

    // The faults, one after the other.
    let mut spans = Vec::new();
    let mut restarts = Vec::new();
    for fault in Fault::ALL {
        let from = ms();
        println!("{}: before", fault.name());
        tokio::time::sleep(durations.before).await;
        spans.push(Span {
            fault,
            phase: Phase::Before,
            from,
            to: ms(),
            rss: None,
        });
        let from = ms();
        let rss_start = rss_mib(pid);
        println!("{}: killing", fault.name());
        tokio::task::block_in_place(|| {
            if fault != Fault::Postgres {
                redis.kill();
            }
            if fault != Fault::Redis {
                postgres.kill();
            }
        });
        tokio::time::sleep(durations.outage).await;
        let rss_end = rss_mib(pid);
        println!("{}: restarting", fault.name());
        let mut restarted = Restarted {
            fault,
            redis_at: None,
            postgres_at: None,
        };
        tokio::task::block_in_place(|| {
            if fault != Fault::Postgres {
                redis
                    .restart()
                    .map_err(|error| format!("restarting Redis: {error}"))?;
                restarted.redis_at = Some((ms(), epoch_ms()));
            }
            if fault != Fault::Redis {
                postgres
                    .restart()
                    .map_err(|error| format!("restarting PostgreSQL: {error}"))?;
                restarted.postgres_at = Some(ms());
            }
            Ok::<_, String>(())
        })?;
        spans.push(Span {
            fault,
            phase: Phase::Outage,
            from,
            to: ms(),
            rss: rss_start.zip(rss_end),
        });
        let from = ms();
        tokio::time::sleep(durations.after).await;
        // The first Redis operation that succeeded after the restart, from the demo.
        if let Some((at, epoch)) = restarted.redis_at.as_mut() {
            let stats = load::stats(&client, &variant.base).await?;
            // Relative to the restart: `at` becomes the ms from restart to L2 success.
            *at = if stats.l2_recovered_at_ms >= *epoch {
                (stats.l2_recovered_at_ms - *epoch) as f64
            } else {
                f64::NAN
            };
        }
        spans.push(Span {
            fault,
            phase: Phase::After,
            from,
            to: ms(),
            rss: None,
        });
        restarts.push(restarted);
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.map_err(|error| error.to_string())?;
    }
    let seen = std::mem::take(
        &mut *seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let posted = std::mem::take(
        &mut *posted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );

    // Acknowledged writes against the rows in the database.
    let mut connection = target.connect().await.map_err(|error| format!("{error}"))?;
    let rows = model::placed_after(connection.db(), scale.orders)
        .await
        .map_err(|error| error.to_string())?;
    let writes = Writes::count(&posted, &rows);
    drop(variant);
    drop((redis, postgres));

    let report = Report {
        short,
        scale,
        durations,
        seen,
        spans,
        restarts,
        writes,
    };
    let checks = report.checks();
    let text = report.markdown(&checks, out.as_ref().map(|_| "reliability.svg"));
    print!("{text}");
    if let Some(out) = &out {
        std::fs::write(out, &text).map_err(|error| format!("{}: {error}", out.display()))?;
        let svg = out.with_file_name("reliability.svg");
        let outages = report
            .spans
            .iter()
            .filter(|span| span.phase == Phase::Outage)
            .map(|span| {
                (
                    span.from / 1000.0,
                    span.to / 1000.0,
                    span.fault.name().to_owned(),
                )
            })
            .collect::<Vec<_>>();
        plot::timeline(&svg, &report.per_second(), &outages)?;
        println!("wrote {} and {}", out.display(), svg.display());
    }
    let failed: Vec<&Check> = checks.iter().filter(|check| !check.ok()).collect();
    if failed.is_empty() {
        println!("chaos: every expectation held");
        return Ok(());
    }
    Err(format!(
        "{} of {} expectations failed:\n  {}",
        failed.len(),
        checks.len(),
        failed
            .iter()
            .map(|check| format!("{}: {} (allowed {})", check.what, check.measured, check.max))
            .collect::<Vec<_>>()
            .join("\n  ")
    ))
}

/// Acknowledged writes against the rows placed.
#[derive(Debug, Default)]
struct Writes {
    posted: u64,
    acknowledged: u64,
    rows: u64,
    /// Acknowledged, and no row holds that id with that order.
    lost: u64,
    /// Rows beyond the first with the same order (each POST's order is unique).
    duplicated: u64,
    /// Rows no acknowledgement named: written though answered an error (or no answer).
    written_unacknowledged: u64,
}

impl Writes {
    fn count(posted: &[Posted], rows: &[model::Order]) -> Writes {
        let by_id: HashMap<i64, (i64, i64, i64)> = rows
            .iter()
            .map(|row| (row.id, (row.user_id, row.product_id, row.quantity)))
            .collect();
        let mut per_triple: HashMap<(i64, i64, i64), u64> = HashMap::new();
        for row in rows {
            *per_triple
                .entry((row.user_id, row.product_id, row.quantity))
                .or_default() += 1;
        }
        let acknowledged: Vec<&Posted> = posted.iter().filter(|post| post.id.is_some()).collect();
        let lost = acknowledged
            .iter()
            .filter(|post| post.id.and_then(|id| by_id.get(&id)) != Some(&post.triple))
            .count() as u64;
        let duplicated = per_triple.values().map(|n| n.saturating_sub(1)).sum();
        let acknowledged_ids: std::collections::HashSet<i64> =
            acknowledged.iter().filter_map(|post| post.id).collect();
        let written_unacknowledged = rows
            .iter()
            .filter(|row| !acknowledged_ids.contains(&row.id))
            .count() as u64;
        Writes {
            posted: posted.len() as u64,
            acknowledged: acknowledged.len() as u64,
            rows: rows.len() as u64,
            lost,
            duplicated,
            written_unacknowledged,
        }
    }
}

/// One expectation, measured.
#[derive(Debug)]
struct Check {
    what: String,
    measured: u64,
    max: u64,
}

impl Check {
    fn ok(&self) -> bool {
        self.measured <= self.max
    }
}

struct Report {
    short: bool,
    scale: Scale,
    durations: Durations,
    seen: Vec<Seen>,
    spans: Vec<Span>,
    restarts: Vec<Restarted>,
    writes: Writes,
}

impl Report {
    /// The requests of `span`: those started within it, except that a request still in
    /// flight when a server was killed belongs to the outage, not to the phase before it.
    fn within<'a>(&'a self, span: &'a Span) -> impl Iterator<Item = &'a Seen> + 'a {
        let outage = (span.phase == Phase::Outage).then(|| {
            self.span(span.fault, Phase::Before)
                .map_or(span.from, |before| before.from)
        });
        // After PostgreSQL's restart the pool finds it back at its next probe (≤ 50 ms):
        // what started before the first order written since belongs to the recovery, counted
        // on its own (`back`), not to the phase after.
        let settled = (span.phase == Phase::After)
            .then(|| self.back(span.fault).map(|(at, _)| at))
            .flatten()
            .unwrap_or(span.from);
        self.seen.iter().filter(move |seen| {
            let started_within = seen.started >= span.from && seen.started < span.to;
            match span.phase {
                Phase::Before => started_within && seen.ended < span.to,
                Phase::Outage => {
                    started_within
                        || (seen.started >= outage.unwrap_or(span.from)
                            && seen.started < span.from
                            && seen.ended >= span.from)
                }
                Phase::After => started_within && seen.started >= settled,
            }
        })
    }

    /// For a fault that took PostgreSQL down: when the first order written after its restart
    /// was answered (ms since the start), and the requests that started between the restart
    /// and then and failed.
    fn back(&self, fault: Fault) -> Option<(f64, u64)> {
        let at = self
            .restarts
            .iter()
            .find(|restarted| restarted.fault == fault)?
            .postgres_at?;
        let first = self
            .seen
            .iter()
            .filter(|seen| seen.endpoint == PLACE && seen.status == 201 && seen.started >= at)
            .map(|seen| seen.ended)
            .fold(None, |first: Option<f64>, ended| {
                Some(first.map_or(ended, |f| f.min(ended)))
            })?;
        let failed = self
            .seen
            .iter()
            .filter(|seen| seen.started >= at && seen.started < first && seen.failed())
            .count() as u64;
        Some((first, failed))
    }

    fn span(&self, fault: Fault, phase: Phase) -> Option<&Span> {
        self.spans
            .iter()
            .find(|span| span.fault == fault && span.phase == phase)
    }

    fn measure(&self, span: &Span, count: Count) -> u64 {
        self.within(span)
            .filter(|seen| match count {
                Count::FailedReads => seen.endpoint != PLACE && seen.failed(),
                Count::FailedCachedReads => seen.endpoint == 3 && seen.failed(),
                Count::FailedWrites => seen.endpoint == PLACE && seen.failed(),
                Count::Status500 => seen.status == 500,
                Count::NoAnswer => seen.status == 0,
            })
            .count() as u64
    }

    fn checks(&self) -> Vec<Check> {
        let mut checks: Vec<Check> = EXPECTATIONS
            .iter()
            .filter_map(|expect| {
                let span = self.span(expect.fault, expect.phase)?;
                Some(Check {
                    what: format!(
                        "{}, {}: {}",
                        expect.fault.name(),
                        expect.phase.name(),
                        expect.count.name()
                    ),
                    measured: self.measure(span, expect.count),
                    max: expect.max,
                })
            })
            .collect();
        checks.push(Check {
            what: "acknowledged writes lost".to_owned(),
            measured: self.writes.lost,
            max: 0,
        });
        checks.push(Check {
            what: "writes duplicated".to_owned(),
            measured: self.writes.duplicated,
            max: 0,
        });
        checks
    }

    /// Requests and failures per second, by the second in which they ended.
    fn per_second(&self) -> Vec<(f64, f64, f64)> {
        let end = self.spans.last().map_or(0.0, |span| span.to);
        let buckets = (end / 500.0).ceil() as usize + 1;
        let mut counts = vec![(0u64, 0u64); buckets];
        for seen in &self.seen {
            let at = ((seen.ended / 500.0) as usize).min(buckets - 1);
            counts[at].0 += 1;
            counts[at].1 += u64::from(seen.failed());
        }
        counts
            .iter()
            .enumerate()
            .map(|(at, (requests, failures))| {
                (
                    at as f64 * 0.5,
                    *requests as f64 * 2.0,
                    *failures as f64 * 2.0,
                )
            })
            .collect()
    }

    fn markdown(&self, checks: &[Check], plot: Option<&str>) -> String {
        let mut out = format!(
            "# Reliability: the demo with its servers killed under load\n\n\
             Written by `cargo xtask chaos{}` on {} (UTC), {}: the brisk variant of the demo on a throw-away \
             PostgreSQL with a throw-away Redis as its caches' second level ({} products, {} users, {} orders), \
             {CLIENTS} clients in a loop over HTTP on loopback (40 % product reads, 30 % a user's order list, \
             20 % top products, 10 % `POST /orders`). In one run: Redis killed (SIGKILL) and restarted, \
             then PostgreSQL (immediate shutdown, then crash recovery), then both; each fault {} s before, \
             {} s down, {} s after. A request belongs to the phase it started in, except that one in flight when a server \
             was killed belongs to the outage; a failure is any answer ≥ 400 but 404, or none within {} s.\n\n",
            if self.short { " -- --short" } else { "" },
            today(),
            crate::machine(),
            self.scale.products,
            self.scale.users,
            self.scale.orders,
            self.durations.before.as_secs(),
            self.durations.outage.as_secs(),
            self.durations.after.as_secs(),
            CLIENT_TIMEOUT.as_secs(),
        );
        out.push_str(
            "| fault | phase | s | requests | requests/s | failures (endpoint: status × n) | p50 ms | p99 ms | max ms | RSS MiB start → end |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for span in &self.spans {
            let seen: Vec<&Seen> = self.within(span).collect();
            let seconds = (span.to - span.from) / 1000.0;
            let mut failures: BTreeMap<(usize, u16), u64> = BTreeMap::new();
            for request in seen.iter().filter(|seen| seen.failed()) {
                *failures
                    .entry((request.endpoint, request.status))
                    .or_default() += 1;
            }
            let failures = if failures.is_empty() {
                "none".to_owned()
            } else {
                failures
                    .iter()
                    .map(|((endpoint, status), n)| {
                        let status = if *status == 0 {
                            "no answer".to_owned()
                        } else {
                            status.to_string()
                        };
                        format!("{}: {status} × {n}", short_name(*endpoint))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let mut latencies: Vec<u32> = seen
                .iter()
                .map(|seen| (seen.latency() * 1000.0) as u32)
                .collect();
            let q = |latencies: &mut [u32], q| load::quantile(latencies, q) / 1000.0;
            let (p50, p99) = (q(&mut latencies, 0.5), q(&mut latencies, 0.99));
            let max = latencies
                .iter()
                .max()
                .map_or(0.0, |max| f64::from(*max) / 1000.0);
            out.push_str(&format!(
                "| {} | {} | {seconds:.1} | {} | {:.0} | {failures} | {p50:.1} | {p99:.1} | {max:.0} | {} |\n",
                span.fault.name(),
                span.phase.name(),
                seen.len(),
                seen.len() as f64 / seconds.max(0.001),
                span.rss
                    .map_or(String::new(), |(a, b)| format!("{a:.0} → {b:.0}")),
            ));
        }
        out.push_str(
            "\n| fault | Redis accepting → first L2 operation that succeeds | PostgreSQL accepting → first order written (201) | requests failed (503) in between |\n|---|---|---|---|\n",
        );
        for restarted in &self.restarts {
            let redis = restarted.redis_at.map_or("—".to_owned(), |(ms, _)| {
                if ms.is_nan() {
                    "not seen".to_owned()
                } else {
                    format!("{ms:.0} ms")
                }
            });
            let postgres = restarted.postgres_at.map_or("—".to_owned(), |at| {
                self.seen
                    .iter()
                    .filter(|seen| seen.endpoint == PLACE && seen.status == 201 && seen.ended >= at)
                    .map(|seen| seen.ended - at)
                    .fold(None, |first: Option<f64>, ms| {
                        Some(first.map_or(ms, |f| f.min(ms)))
                    })
                    .map_or("not seen".to_owned(), |ms| format!("{ms:.0} ms"))
            });
            let between = self
                .back(restarted.fault)
                .map_or("—".to_owned(), |(_, failed)| failed.to_string());
            out.push_str(&format!(
                "| {} | {redis} | {postgres} | {between} |\n",
                restarted.fault.name()
            ));
        }
        let w = &self.writes;
        out.push_str(&format!(
            "\nWrites, checked against the database at the end: {} `POST /orders` sent, {} acknowledged (201 with an id), \
             {} rows placed. **Lost** (acknowledged, no row with that id and order): **{}**. **Duplicated** (a second row \
             with the same order; every POST of the run carries a unique user/product/quantity triple, so the rows \
             show it without a marker column): **{}**. Written though not acknowledged (answered an error, or no \
             answer, yet the row is in; a 503 says the order was not placed, and this count is where one that was \
             would show): {}.\n\n\
             Issue 29's timing targets (L2 back in use ≤ 1 s after Redis accepts connections; the first success \
             ≤ 100 ms after PostgreSQL is back; writes answered 503 quickly and cached reads at their normal \
             latency while it is down) are measured above and never asserted; the expectations below are counts.\n\n",
            w.posted, w.acknowledged, w.rows, w.lost, w.duplicated, w.written_unacknowledged
        ));
        if let Some(plot) = plot {
            out.push_str(&format!("![Requests and failures per second]({plot})\n\n"));
        }
        let mut examples: BTreeMap<(usize, u16), (&str, u64)> = BTreeMap::new();
        for seen in self.seen.iter().filter(|seen| seen.failed()) {
            let entry = examples
                .entry((seen.endpoint, seen.status))
                .or_insert((seen.said.as_deref().unwrap_or(""), 0));
            entry.1 += 1;
        }
        if !examples.is_empty() {
            out.push_str("What the failures said (the first of each endpoint and status):\n\n");
            for ((endpoint, status), (said, n)) in examples {
                out.push_str(&format!(
                    "- {} {} (× {n}): `{}`\n",
                    short_name(endpoint),
                    if status == 0 {
                        "no answer".to_owned()
                    } else {
                        status.to_string()
                    },
                    said.replace('`', "'").replace('\n', " ")
                ));
            }
            out.push('\n');
        }
        out.push_str(
            "## Expectations\n\nCounts only, never timings (`EXPECTATIONS` in crates/brisk-demo/src/chaos.rs); \
             the CI step (`cargo xtask ci`, `chaos --short`) fails when one does not hold.\n\n\
             | expectation | measured | allowed | |\n|---|---|---|---|\n",
        );
        for check in checks {
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                check.what,
                check.measured,
                check.max,
                if check.ok() { "ok" } else { "**FAILS**" }
            ));
        }
        out
    }
}

fn short_name(endpoint: usize) -> &'static str {
    match endpoint {
        0 => "GET /products/{id}",
        1 => "GET /users/{id}/orders",
        3 => "GET /top-products",
        PLACE => "POST /orders",
        _ => "other",
    }
}

/// Today's date, UTC, `YYYY-MM-DD`.
fn today() -> String {
    let days = (epoch_ms() / 86_400_000) as i64;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_post_of_a_run_carries_its_own_order() {
        let scale = Scale::SMOKE;
        let mut seen = std::collections::HashSet::new();
        for n in 0..100_000 {
            let (user, product, quantity) = triple(n, scale);
            assert!((1..=scale.users).contains(&user));
            assert!((1..=scale.products).contains(&product));
            assert!(model::valid(&model::NewOrder {
                user_id: user,
                product_id: product,
                quantity
            }));
            assert!(seen.insert((user, product, quantity)), "{n}");
        }
    }

    #[test]
    fn lost_and_duplicated_writes_are_counted() {
        let row = |id, user_id| model::Order {
            id,
            user_id,
            product_id: 1,
            quantity: 1,
            created_at: 0,
        };
        let post = |user, id| Posted {
            triple: (user, 1, 1),
            id,
        };
        // 10 acknowledged and in; 11 acknowledged, missing; 12 written twice; 13 written
        // though answered an error.
        let posted = [
            post(1, Some(10)),
            post(2, Some(11)),
            post(3, Some(12)),
            post(4, None),
        ];
        let rows = [row(10, 1), row(12, 3), row(14, 3), row(13, 4)];
        let writes = Writes::count(&posted, &rows);
        assert_eq!(
            (
                writes.acknowledged,
                writes.lost,
                writes.duplicated,
                writes.written_unacknowledged
            ),
            (3, 1, 1, 2)
        );
    }

    #[test]
    fn a_request_in_flight_at_a_kill_counts_in_the_outage() {
        let span = |phase, from, to| Span {
            fault: Fault::Postgres,
            phase,
            from,
            to,
            rss: None,
        };
        let seen = |started, ended, status| Seen {
            endpoint: 1,
            started,
            ended,
            status,
            said: None,
        };
        let report = Report {
            short: true,
            scale: Scale::SMOKE,
            durations: Durations::SHORT,
            // Before 0–100 ms, killed 100–200, after 200–300.
            seen: vec![
                seen(10.0, 20.0, 200),
                seen(90.0, 150.0, 500),
                seen(150.0, 250.0, 503),
                seen(250.0, 260.0, 200),
            ],
            spans: vec![
                span(Phase::Before, 0.0, 100.0),
                span(Phase::Outage, 100.0, 200.0),
                span(Phase::After, 200.0, 300.0),
            ],
            restarts: Vec::new(),
            writes: Writes::default(),
        };
        let count = |phase| {
            let span = report.span(Fault::Postgres, phase).unwrap();
            (
                report.within(span).count(),
                report.measure(span, Count::FailedReads),
                report.measure(span, Count::Status500),
            )
        };
        assert_eq!(count(Phase::Before), (1, 0, 0));
        assert_eq!(count(Phase::Outage), (2, 2, 1));
        assert_eq!(count(Phase::After), (1, 0, 0));
    }

    #[test]
    fn failures_before_the_first_order_after_the_restart_count_for_the_recovery() {
        let span = |phase, from, to| Span {
            fault: Fault::Postgres,
            phase,
            from,
            to,
            rss: None,
        };
        let seen = |endpoint, started, ended, status| Seen {
            endpoint,
            started,
            ended,
            status,
            said: None,
        };
        let report = Report {
            short: true,
            scale: Scale::SMOKE,
            durations: Durations::SHORT,
            // Killed 100–200; back at 200; the first order written is answered at 230.
            seen: vec![
                seen(1, 205.0, 206.0, 503),
                seen(PLACE, 210.0, 211.0, 503),
                seen(PLACE, 220.0, 230.0, 201),
                seen(1, 240.0, 241.0, 503),
                seen(1, 250.0, 251.0, 200),
            ],
            spans: vec![
                span(Phase::Outage, 100.0, 200.0),
                span(Phase::After, 200.0, 300.0),
            ],
            restarts: vec![Restarted {
                fault: Fault::Postgres,
                redis_at: None,
                postgres_at: Some(200.0),
            }],
            writes: Writes::default(),
        };
        assert_eq!(report.back(Fault::Postgres), Some((230.0, 2)));
        let after = report.span(Fault::Postgres, Phase::After).unwrap();
        assert_eq!(
            report.measure(after, Count::FailedReads),
            1,
            "only the one after 230"
        );
        assert_eq!(report.measure(after, Count::FailedWrites), 0);
        assert_eq!(report.back(Fault::Redis), None);
    }
}
