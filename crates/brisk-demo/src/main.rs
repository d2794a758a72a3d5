//! `cargo xtask demo`: one catalog service built naive and built with brisk, each run in a
//! process of its own on the same SQLite file, driven by the same seeded workload over real
//! HTTP, measured side by side.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a command-line program reports on stdout"
)]

mod backend;
mod chaos;
mod db;
mod fast;
mod level;
mod load;
mod model;
mod naive;
mod plot;
mod server;

use std::{
    io::{BufRead, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    time::Duration,
};

use crate::{
    backend::Target,
    db::Scale,
    load::{ENDPOINTS, Run, Workload},
};

const USAGE: &str = "\
usage: brisk-demo [--smoke] [--services | --database-url URL] [--seconds N] [--concurrency N]
                  [--writes F] [--db PATH] [--out FILE]
       brisk-demo --serve [--port N] [--db PATH | --database-url URL]
       brisk-demo --chaos [--short] [--outage N] [--out FILE]

  (default)      seed (once) and run both variants, print the table, write --out
  --smoke        tiny data, 2 s per variant; fails unless the variants agree and brisk makes
                 fewer database round trips
  --serve        run only the brisk variant, on --port (default 3000), to try with curl
  --chaos        the brisk variant on a throw-away PostgreSQL and Redis under load while
                 Redis, then PostgreSQL, then both are killed and restarted; writes
                 docs/reliability.md (or --out); fails unless every expectation holds
  --short        with --chaos: 3 s per phase, smaller data, no report written unless --out
  --outage N     with --chaos: each server stays down N s (default 8; 3 with --short)
  --seconds N    load per variant (default 20)
  --concurrency  requests in flight (default 32)
  --writes F     share of requests that place an order (default 0.1)
  --services     run on a throw-away PostgreSQL (brisk-testkit; seeded each run)
  --services     … and a throw-away Redis, the brisk variant's second cache level
  --database-url a PostgreSQL database of yours (four tables are created in it)
  --redis-url    a Redis of yours for the brisk variant's caches
  --db PATH      the SQLite file (default target/brisk-demo/<scale>.sqlite)
  --out FILE     where the report goes (default docs/demo.md; not written with --smoke)
";

struct Options {
    smoke: bool,
    serve: bool,
    chaos: bool,
    short: bool,
    outage: Option<u64>,
    seconds: u64,
    concurrency: usize,
    writes: f64,
    db: Option<PathBuf>,
    out: Option<PathBuf>,
    port: u16,
    services: bool,
    database_url: Option<String>,
    redis_url: Option<String>,
    variant: Option<String>,
    target: Option<String>,
}

fn options(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut options = Options {
        smoke: false,
        serve: false,
        chaos: false,
        short: false,
        outage: None,
        seconds: 20,
        concurrency: 32,
        writes: 0.1,
        db: None,
        out: None,
        port: 3000,
        services: false,
        database_url: None,
        redis_url: None,
        variant: None,
        target: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--smoke" => options.smoke = true,
            "--serve" => options.serve = true,
            "--chaos" => options.chaos = true,
            "--short" => options.short = true,
            "--outage" => options.outage = Some(parse(&value("--outage")?, "--outage")?),
            "--seconds" => options.seconds = parse(&value("--seconds")?, "--seconds")?,
            "--concurrency" => {
                options.concurrency = parse(&value("--concurrency")?, "--concurrency")?
            }
            "--writes" => {
                let writes: f64 = parse(&value("--writes")?, "--writes")?;
                if !(0.0..=1.0).contains(&writes) {
                    return Err(format!("--writes {writes}: a share between 0 and 1"));
                }
                options.writes = writes;
            }
            "--db" => options.db = Some(PathBuf::from(value("--db")?)),
            "--out" => options.out = Some(PathBuf::from(value("--out")?)),
            "--port" => options.port = parse(&value("--port")?, "--port")?,
            "--services" => options.services = true,
            "--database-url" => options.database_url = Some(value("--database-url")?),
            "--redis-url" => options.redis_url = Some(value("--redis-url")?),
            // Internal: the database a variant serves from.
            "--target" => options.target = Some(value("--target")?),
            // Internal: run one variant's server (the parent starts it).
            "--variant" => options.variant = Some(value("--variant")?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if options.services && (options.database_url.is_some() || options.redis_url.is_some()) {
        return Err(
            "--services starts its own PostgreSQL and Redis: leave out --database-url and --redis-url"
                .to_owned(),
        );
    }
    if (options.short || options.outage.is_some()) && !options.chaos {
        return Err("--short and --outage go with --chaos".to_owned());
    }
    if options.outage == Some(0) {
        return Err("--outage must be at least 1 s".to_owned());
    }
    if options.chaos
        && (options.smoke
            || options.serve
            || options.database_url.is_some()
            || options.redis_url.is_some())
    {
        return Err("--chaos starts its own PostgreSQL and Redis and runs alone".to_owned());
    }
    if options.concurrency == 0 || options.seconds == 0 {
        return Err("--seconds and --concurrency must be at least 1".to_owned());
    }
    Ok(options)
}

fn parse<T: std::str::FromStr>(text: &str, name: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{name} {text}: not a valid value"))
}

fn main() -> ExitCode {
    let options = match options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("brisk-demo: {message}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("brisk-demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("brisk-demo: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> Result<(), String> {
    let scale = if options.smoke {
        Scale::SMOKE
    } else {
        Scale::FULL
    };
    if let Some(variant) = &options.variant {
        let target = Target::parse(
            options
                .target
                .as_deref()
                .ok_or("--variant needs --target")?,
        )?;
        let app = match variant.as_str() {
            "naive" => naive::router(target),
            "brisk" => fast::router(target, options.redis_url.as_deref()).await?,
            other => return Err(format!("unknown variant `{other}`")),
        };
        return server::serve(app, 0).await;
    }
    if options.chaos {
        let out = options
            .out
            .clone()
            .or_else(|| (!options.short).then(|| workspace().join("docs").join("reliability.md")));
        return chaos::run(options.short, options.outage, out).await;
    }
    // A throw-away PostgreSQL and Redis live as long as this run.
    let mut services = None;
    let mut redis_url = options.redis_url.clone();
    let target = if options.services {
        println!("starting a throw-away PostgreSQL (brisk-testkit)");
        let mut postgres = tokio::task::spawn_blocking(brisk_testkit::PostgresServer::start)
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("starting PostgreSQL: {error}"))?;
        let url = postgres
            .create_database("catalog")
            .map_err(|error| format!("creating the database: {error}"))?;
        println!("starting a throw-away Redis (brisk-testkit)");
        let redis = tokio::task::spawn_blocking(brisk_testkit::RedisServer::start)
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("starting Redis: {error}"))?;
        redis_url = Some(redis.url());
        services = Some((postgres, redis));
        Target::Pg(url.into())
    } else if let Some(url) = &options.database_url {
        Target::Pg(url.as_str().into())
    } else {
        let db = options.db.clone().unwrap_or_else(|| {
            workspace()
                .join("target")
                .join("brisk-demo")
                .join(scale.file_name())
        });
        if let Some(dir) = db.parent() {
            std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        }
        Target::Sqlite(db.display().to_string().into())
    };
    prepare(&target, scale, false).await?;
    if options.serve {
        println!(
            "brisk variant on http://127.0.0.1:{0}: try
  curl -s http://127.0.0.1:{0}/products/1
  curl -s http://127.0.0.1:{0}/users/7/orders
  curl -si http://127.0.0.1:{0}/products   (then the cursor in its Link header)
  curl -s http://127.0.0.1:{0}/top-products
  curl -s 'http://127.0.0.1:{0}/orders/export?from=1' --compressed
  curl -s -X POST -H 'content-type: application/json' -d '{{\"user_id\":7,\"product_id\":1,\"quantity\":2}}' http://127.0.0.1:{0}/orders
  curl -s http://127.0.0.1:{0}/metrics",
            options.port
        );
        return server::serve(
            fast::router(target, redis_url.as_deref()).await?,
            options.port,
        )
        .await;
    }
    let outcome = compare(&options, scale, &target, redis_url.as_deref()).await;
    drop(services);
    outcome
}

/// Seeds `target` unless an earlier run did; with `reset_only`, only removes the orders a
/// run placed.
async fn prepare(target: &Target, scale: Scale, reset_only: bool) -> Result<(), String> {
    match target {
        Target::Sqlite(path) => {
            let path = PathBuf::from(path.to_string());
            tokio::task::spawn_blocking(move || {
                if reset_only {
                    db::reset(&path, scale)
                } else {
                    db::prepare(&path, scale)
                }
            })
            .await
            .map_err(|error| error.to_string())?
        }
        Target::Pg(url) if reset_only => db::reset_pg(url, scale).await,
        Target::Pg(url) => db::prepare_pg(url, scale).await,
    }
}

/// A variant's server process, killed when dropped.
struct Variant {
    child: Child,
    base: String,
}

impl Drop for Variant {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Variant {
    fn start(name: &str, target: &Target, redis: Option<&str>) -> Result<Variant, String> {
        let exe = std::env::current_exe().map_err(|error| error.to_string())?;
        let mut command = Command::new(exe);
        command
            .args(["--variant", name, "--target"])
            .arg(target.spec());
        if let Some(url) = redis {
            command.args(["--redis-url", url]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("starting the {name} variant: {error}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|error| error.to_string())?;
        let port = line
            .trim()
            .strip_prefix("listening ")
            .ok_or_else(|| format!("the {name} variant did not start: {line:?}"))?
            .to_owned();
        Ok(Variant {
            child,
            base: format!("http://127.0.0.1:{port}"),
        })
    }

    /// The process's peak resident set (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

async fn compare(
    options: &Options,
    scale: Scale,
    target: &Target,
    redis: Option<&str>,
) -> Result<(), String> {
    let seconds = if options.smoke { 2 } else { options.seconds };
    let naive = Variant::start("naive", target, None)?;
    let brisk = Variant::start("brisk", target, redis)?;
    let client = load::client();
    let workload = Arc::new(Workload::new(scale, options.writes));
    let samples = if options.smoke { 100 } else { 300 };
    let checked = load::agree(&client, &naive.base, &brisk.base, &workload, samples).await?;
    println!("the variants agree on {checked} sampled read requests");
    let mut runs = Vec::new();
    for (name, variant) in [("naive", &naive), ("brisk", &brisk)] {
        print!("load on {name}: ");
        let _ = std::io::stdout().flush();
        let progress = |done: f64| {
            print!(
                "\rload on {name}: [{:<30}] {:>3.0} %",
                "#".repeat((done * 30.0) as usize),
                done * 100.0
            );
            let _ = std::io::stdout().flush();
        };
        let run = load::run(
            &client,
            &variant.base,
            Arc::clone(&workload),
            options.concurrency,
            Duration::from_secs(seconds),
            progress,
        )
        .await?;
        println!();
        let alone = if options.smoke { 20 } else { 200 };
        let statements =
            load::statements_per_endpoint(&client, &variant.base, &workload, alone).await?;
        runs.push((run, statements, variant.peak_rss_mib()));
        // Every run starts from the seeded data.
        prepare(target, scale, true).await?;
    }
    // Where the report goes: the repository's docs for its own configurations; a run on the
    // user's own database writes only where --out says.
    let out = options.out.clone().or_else(|| match target {
        _ if options.smoke => None,
        Target::Sqlite(_) if options.db.is_none() => Some(workspace().join("docs").join("demo.md")),
        Target::Pg(_) if options.services => {
            Some(workspace().join("docs").join("demo-services.md"))
        }
        _ => None,
    });
    let svg = out.as_ref().map(|out| {
        let stem = out
            .file_stem()
            .map_or("demo".into(), |stem| stem.to_string_lossy());
        out.with_file_name(format!("{stem}-latency.svg"))
    });
    let plot_name = svg
        .as_ref()
        .and_then(|svg| svg.file_name())
        .map(|name| name.to_string_lossy().into_owned());
    let report = report(
        options,
        scale,
        target,
        checked,
        plot_name.as_deref(),
        &mut runs,
    );
    print!("{report}");
    let (naive_run, brisk_run) = (&runs[0].0, &runs[1].0);
    let per_request = |run: &Run| {
        let requests = run.total().latencies.len().max(1) as f64;
        run.stats.queries as f64 / requests
    };
    if options.smoke {
        if brisk_run.total().errors > 0 || naive_run.total().errors > 0 {
            return Err("requests failed during the smoke run".to_owned());
        }
        if per_request(brisk_run) >= per_request(naive_run) {
            return Err(format!(
                "brisk made {:.2} database round trips per request, naive {:.2}: expected fewer",
                per_request(brisk_run),
                per_request(naive_run)
            ));
        }
        println!("smoke: the variants agree, and brisk makes fewer database round trips");
        return Ok(());
    }
    let (Some(out), Some(svg)) = (out, svg) else {
        println!("(not written: --out FILE writes the report and its plot)");
        return Ok(());
    };
    std::fs::write(&out, report).map_err(|error| format!("{}: {error}", out.display()))?;
    let (mut a, mut b) = (runs[0].0.total().latencies, runs[1].0.total().latencies);
    a.sort_unstable();
    b.sort_unstable();
    plot::latency(&svg, &a, &b)?;
    println!("wrote {} and {}", out.display(), svg.display());
    Ok(())
}

/// A variant's mixed run, its statements per request of each endpoint alone, its peak RSS.
type Measured = (Run, Vec<f64>, Option<f64>);

fn report(
    options: &Options,
    scale: Scale,
    target: &Target,
    checked: usize,
    plot: Option<&str>,
    runs: &mut [Measured],
) -> String {
    let seconds = if options.smoke { 2 } else { options.seconds };
    let mut out = format!(
        "# The demo: one catalog service, naive and with brisk\n\n\
         Written by `cargo xtask demo{}` on {}: {}, {} products, {} users, \
         {} orders; each variant in its own process, {} s of a mixed workload ({:.0} % writes, Zipf key popularity), \
         {} requests in flight, over HTTP on loopback. Both variants answered {checked} sampled read requests identically.\n\n",
        match target {
            Target::Sqlite(_) => "",
            Target::Pg(_) if options.services => " -- --services",
            Target::Pg(_) => " -- --database-url …",
        },
        machine(),
        match target {
            Target::Sqlite(_) => "SQLite (the embedded default)",
            Target::Pg(_) if options.services || options.redis_url.is_some() => {
                "PostgreSQL, and Redis under the brisk variant's caches"
            }
            Target::Pg(_) => "PostgreSQL",
        },
        scale.products,
        scale.users,
        scale.orders,
        seconds,
        options.writes * 100.0,
        options.concurrency
    );
    out.push_str("| endpoint | requests/s naive | requests/s brisk | × | p50 ms naive / brisk | p95 ms naive / brisk | p99 ms naive / brisk | DB round trips per request naive / brisk | bytes per response naive / brisk | errors naive / brisk |\n|---|---|---|---|---|---|---|---|---|---|\n");
    let (rss_naive, rss_brisk) = (runs[0].2, runs[1].2);
    let (alone_naive, alone_brisk) = (runs[0].1.clone(), runs[1].1.clone());
    let (naive, brisk) = runs.split_at_mut(1);
    let (naive, brisk) = (&mut naive[0].0, &mut brisk[0].0);
    for (at, name) in ENDPOINTS.iter().enumerate() {
        let (a, b) = (&mut naive.per_endpoint[at], &mut brisk.per_endpoint[at]);
        let rate = |seen: &load::Seen, seconds: f64| seen.latencies.len() as f64 / seconds;
        let per = |seen: &load::Seen| seen.bytes as f64 / seen.latencies.len().max(1) as f64;
        let (ra, rb) = (rate(a, naive.seconds), rate(b, brisk.seconds));
        let q = |seen: &mut load::Seen, q| load::quantile(&mut seen.latencies, q) / 1000.0;
        out.push_str(&format!(
            "| {name} | {ra:.0} | {rb:.0} | {:.1}× | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} / {:.0} | {} / {} |\n",
            rb / ra.max(f64::MIN_POSITIVE),
            q(a, 0.5), q(b, 0.5), q(a, 0.95), q(b, 0.95), q(a, 0.99), q(b, 0.99),
            alone_naive[at], alone_brisk[at],
            per(a), per(b), a.errors, b.errors
        ));
    }
    let (mut ta, mut tb) = (naive.total(), brisk.total());
    let (ra, rb) = (
        ta.latencies.len() as f64 / naive.seconds,
        tb.latencies.len() as f64 / brisk.seconds,
    );
    let trips = |run: &Run, total: &load::Seen| {
        run.stats.queries as f64 / total.latencies.len().max(1) as f64
    };
    let (trips_a, trips_b) = (trips(naive, &ta), trips(brisk, &tb));
    let per = |seen: &load::Seen| seen.bytes as f64 / seen.latencies.len().max(1) as f64;
    let (pa, pb) = (per(&ta), per(&tb));
    out.push_str(&format!(
        "| **all** | **{ra:.0}** | **{rb:.0}** | **{:.1}×** | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {trips_a:.2} / {trips_b:.2} | {pa:.0} / {pb:.0} | {} / {} |\n\n",
        rb / ra.max(f64::MIN_POSITIVE),
        load::quantile(&mut ta.latencies, 0.5) / 1000.0,
        load::quantile(&mut tb.latencies, 0.5) / 1000.0,
        load::quantile(&mut ta.latencies, 0.95) / 1000.0,
        load::quantile(&mut tb.latencies, 0.95) / 1000.0,
        load::quantile(&mut ta.latencies, 0.99) / 1000.0,
        load::quantile(&mut tb.latencies, 0.99) / 1000.0,
        ta.errors,
        tb.errors
    ));
    let rss = |value: Option<f64>| value.map_or("n/a".to_owned(), |mib| format!("{mib:.0} MiB"));
    let cache = |run: &Run| {
        let lookups = run.stats.cache_hits + run.stats.cache_misses;
        if lookups == 0 {
            "none".to_owned()
        } else {
            format!(
                "{:.1} %",
                run.stats.cache_hits as f64 * 100.0 / lookups as f64
            )
        }
    };
    out.push_str(&format!(
        "| process | naive | brisk |\n|---|---|---|\n\
         | database statements (all endpoints, counted at the connection) | {} | {} |\n\
         | connections opened | {} | {} |\n\
         | peak RSS | {} | {} |\n\
         | cache hit ratio | {} | {} |\n\n",
        naive.stats.queries,
        brisk.stats.queries,
        naive.stats.connections,
        brisk.stats.connections,
        rss(rss_naive),
        rss(rss_brisk),
        cache(naive),
        cache(brisk),
    ));
    if let Some(plot) = plot {
        out.push_str(&format!(
            "![Latency by percentile, naive and brisk]({plot})\n\n"
        ));
        // The repository's two reports point at each other.
        match plot {
            "demo-latency.svg" => out.push_str(
                "The same service on PostgreSQL and Redis: [demo-services.md](demo-services.md) (`cargo xtask demo -- --services`).\n\n",
            ),
            "demo-services-latency.svg" => out.push_str(
                "The same service on the embedded default, SQLite: [demo.md](demo.md) (`cargo xtask demo`).\n\n",
            ),
            _ => {}
        }
    }
    out.push_str(
        "Database round trips are counted at the connection (diesel's instrumentation): per endpoint, from up to 2 s of that endpoint alone (4 requests at a time) right after the mixed run \
         (statements of concurrent, batched requests cannot be told apart in the mix); the **all** row from the mixed run itself. \
         One statement of each naive request is its new connection's setup (WAL, busy timeout: without it, concurrent writers fail with \"database is locked\"). \
         The export is streamed by brisk (brisk-stream: a page of orders per query, the next fetched while this one is sent, NDJSON encoded in chunks) where naive reads it whole before sending. \
         Listing clients browse from the first page, following each page's `next` link for a Zipf-drawn number of pages (up to 500): naive links by page number (OFFSET, which reads and skips every earlier row), brisk by signed keyset cursor (brisk-stream: the rows after the last one seen, through the primary key, and each page cached by that position). \
         Bytes are response bodies as sent (brisk compresses for clients that accept it).\n",
    );
    out
}

/// The workspace's root (the demo runs from its checkout).
fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map_or_else(|| manifest.to_owned(), Path::to_owned)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_owned())
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned());
    format!("{cpus} × {model}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::db::{QUERIES, Rng, Zipf};
    use crate::server::FIRST_PAGE;

    const TINY: Scale = Scale {
        products: 300,
        users: 40,
        orders: 1_500,
    };

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn options_are_checked() {
        let parsed = options(args("--smoke --seconds 3 --writes 0.5")).unwrap();
        assert!(parsed.smoke);
        assert_eq!((parsed.seconds, parsed.writes), (3, 0.5));
        for wrong in [
            "--writes 2",
            "--seconds 0",
            "--seconds",
            "--bogus",
            "--concurrency x",
        ] {
            assert!(options(args(wrong)).is_err(), "{wrong}");
        }
    }

    #[test]
    fn zipf_ranks_stay_in_bounds_and_favour_the_first() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[9] * 5, "{} vs {}", counts[0], counts[9]);
        assert!(counts[999] < counts[0] / 100);
    }

    async fn call(app: &axum::Router, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_variants_answer_alike_and_brisk_asks_the_database_less() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.sqlite");
        db::prepare(&path, TINY).unwrap();
        let target = Target::Sqlite(path.display().to_string().into());
        let (naive, brisk) = (
            naive::router(target.clone()),
            fast::router(target, None).await.unwrap(),
        );
        let paths = [
            "/products/1",
            "/products/300",
            "/products/301",
            "/users/3/orders",
            "/users/41/orders",
            "/top-products",
            "/orders/export?from=1",
        ];
        let mut statements = [0u64; 2];
        // Twice: the second pass is what a warm service sees.
        for _ in 0..2 {
            for path in paths {
                let before = QUERIES.load(Ordering::Relaxed);
                let a = call(&naive, "GET", path, "").await;
                let middle = QUERIES.load(Ordering::Relaxed);
                let b = call(&brisk, "GET", path, "").await;
                statements[0] += middle - before;
                statements[1] += QUERIES.load(Ordering::Relaxed) - middle;
                assert_eq!(a.0, b.0, "{path}");
                let parse = |body: &[u8]| serde_json::from_slice::<serde_json::Value>(body).ok();
                match (parse(&a.1), parse(&b.1)) {
                    (Some(x), Some(y)) => assert_eq!(x, y, "{path}"),
                    _ => assert_eq!(a.1, b.1, "{path}"),
                }
            }
        }
        assert!(
            statements[1] * 3 < statements[0],
            "brisk {} statements, naive {}",
            statements[1],
            statements[0]
        );
        assert_eq!(call(&naive, "GET", "/products/301", "").await.0, 404);

        // The listing, browsed to its end on both, each variant following its own links
        // (page numbers, signed cursors): the same products, page by page.
        let (mut at_naive, mut at_brisk) = (FIRST_PAGE.to_owned(), FIRST_PAGE.to_owned());
        let mut listed = Vec::new();
        loop {
            let page = |answer: (u16, Vec<u8>)| {
                assert_eq!(answer.0, 200);
                serde_json::from_slice::<model::ProductPage>(&answer.1).unwrap()
            };
            let a = page(call(&naive, "GET", &at_naive, "").await);
            let b = page(call(&brisk, "GET", &at_brisk, "").await);
            assert_eq!(a.items, b.items, "{at_naive} vs {at_brisk}");
            listed.extend(a.items.iter().map(|product| product.id));
            match (a.next, b.next) {
                (Some(next_naive), Some(next_brisk)) => {
                    assert!(next_brisk.starts_with("/products?cursor="), "{next_brisk}");
                    (at_naive, at_brisk) = (next_naive, next_brisk);
                }
                (None, None) => break,
                other => panic!("one variant ends the listing early: {other:?}"),
            }
        }
        assert_eq!(listed, (1..=TINY.products).collect::<Vec<_>>());
        // A cursor the brisk variant did not sign is the client's mistake.
        let forged = format!("{}x", &at_brisk);
        assert_eq!(call(&brisk, "GET", &forged, "").await.0, 400);
        assert_eq!(
            call(&brisk, "GET", "/products?cursor=AAAA", "").await.0,
            400
        );

        // Writes: each variant gives each order its own id; a bad order is a 422.
        for app in [&naive, &brisk] {
            let placed = call(
                app,
                "POST",
                "/orders",
                r#"{"user_id":3,"product_id":5,"quantity":2}"#,
            )
            .await;
            assert_eq!(placed.0, 201);
            let id = serde_json::from_slice::<model::Placed>(&placed.1)
                .unwrap()
                .id;
            assert!(id > TINY.orders);
            let bad = call(
                app,
                "POST",
                "/orders",
                r#"{"user_id":3,"product_id":5,"quantity":0}"#,
            )
            .await;
            assert_eq!(bad.0, 422);
            let malformed = call(app, "POST", "/orders", "{").await;
            assert_eq!(malformed.0, 400);
        }
        // The brisk variant's HTTP layers: a shareable response is stored and answered
        // without the handler, tagged, and revalidated with a 304; a user's data is not.
        let headers = |path: &'static str, extra: Option<(&'static str, String)>| {
            let brisk = brisk.clone();
            async move {
                let mut request = http::Request::get(path);
                if let Some((name, value)) = extra {
                    request = request.header(name, value);
                }
                let response = brisk
                    .oneshot(request.body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                (response.status().as_u16(), response.headers().clone())
            }
        };
        let (_, first) = headers("/products/7", None).await;
        let (_, second) = headers("/products/7", None).await;
        assert_eq!(second["x-cache"], "hit");
        let tag = first["etag"].to_str().unwrap().to_owned();
        let (status, _) = headers("/products/7", Some(("if-none-match", tag))).await;
        assert_eq!(status, 304);
        let (_, listing) = headers("/products", None).await;
        let link = listing["link"].to_str().unwrap();
        assert!(
            link.starts_with("</products?cursor=") && link.ends_with(r#">; rel="next""#),
            "{link}"
        );
        // Its /metrics: Prometheus' media type, and nothing for promtool to complain of.
        let (status, exposition) = headers("/metrics", None).await;
        assert_eq!(status, 200);
        assert_eq!(
            exposition["content-type"],
            brisk_metrics::PROMETHEUS_CONTENT_TYPE
        );
        let text = String::from_utf8(call(&brisk, "GET", "/metrics", "").await.1).unwrap();
        for family in [
            "brisk_pool_",
            "brisk_batch_",
            "brisk_cache_tiered_",
            "brisk_cache_http_",
            "brisk_pool_query_seconds",
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "tokio_runtime_busy_seconds_total",
        ] {
            assert!(text.contains(&format!("# HELP {family}")), "{family}");
        }
        brisk_testkit::promtool_check_metrics(&text)
            .unwrap_or_else(|error| panic!("{error}\n{text}"));
        let (_, orders) = headers("/users/3/orders", None).await;
        assert_eq!(orders["cache-control"], "private, no-cache");
        assert_eq!(orders["x-cache"], "miss");

        // brisk's cached order list was dropped by its write: both show both new orders.
        let a = call(&naive, "GET", "/users/3/orders", "").await;
        let b = call(&brisk, "GET", "/users/3/orders", "").await;
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&a.1).unwrap(),
            serde_json::from_slice::<serde_json::Value>(&b.1).unwrap()
        );
        let orders: model::UserOrders = serde_json::from_slice(&a.1).unwrap();
        assert!(orders.orders[0].id > TINY.orders && orders.orders[1].id > TINY.orders);
    }

    #[test]
    fn the_latency_plot_draws_both_variants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        let naive: Vec<u32> = (1..=2000).map(|n| n * 50).collect();
        let brisk: Vec<u32> = (1..=5000).map(|n| n * 2).collect();
        plot::latency(&path, &naive, &brisk).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("naive") && svg.contains("brisk"));
        for color in ["#FF0000", "#0000FF"] {
            let curve = svg.lines().find(|line| {
                line.contains("<polyline") && line.contains(color) && line.len() > 2000
            });
            assert!(curve.is_some(), "a curve in {color}");
        }
    }

    #[test]
    fn the_chaos_timeline_draws_both_rates_and_shades_each_outage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reliability.svg");
        let points: Vec<(f64, f64, f64)> = (0..200)
            .map(|n| {
                let down = (50..80).contains(&n);
                let t = f64::from(n) * 0.5;
                (
                    t,
                    if down { 10.0 } else { 5000.0 },
                    if down { 3.0 } else { 0.0 },
                )
            })
            .collect();
        let outages = [(25.0, 40.0, "Redis killed".to_owned())];
        plot::timeline(&path, &points, &outages).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("Redis killed") && svg.contains("failures/s"));
        for color in ["#0000FF", "#FF0000"] {
            assert!(
                svg.lines()
                    .any(|line| line.contains("<polyline") && line.contains(color)),
                "a line in {color}"
            );
        }
    }

    #[tokio::test]
    async fn one_insert_gives_each_of_several_equal_orders_its_own_id() {
        use diesel_async::{AsyncConnection, SimpleAsyncConnection};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.sqlite");
        db::prepare(&path, TINY).unwrap();
        let mut connection = model::SqliteConnection::establish(&path.display().to_string())
            .await
            .unwrap();
        connection.batch_execute(db::PRAGMAS).await.unwrap();
        let order = |user_id, quantity| model::NewOrder {
            user_id,
            product_id: 9,
            quantity,
        };
        let orders = [order(1, 1), order(2, 1), order(1, 1), order(1, 3)];
        let ids = model::insert(model::Db::Sqlite(&mut connection), &orders, 5)
            .await
            .unwrap();
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 4, "{ids:?}");
        let exported = model::export(model::Db::Sqlite(&mut connection), 1)
            .await
            .unwrap();
        for (order, id) in orders.iter().zip(&ids) {
            let row = exported.iter().find(|row| row.id == *id).unwrap();
            assert_eq!(
                (row.user_id, row.quantity, row.created_at),
                (order.user_id, order.quantity, 5)
            );
        }
    }
}
