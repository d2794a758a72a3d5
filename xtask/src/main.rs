//! brisk's project automation, run as `cargo xtask <command>` (see `.cargo/config.toml`).
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool reports its progress on stdout"
)]

mod bench;
mod budget;
mod chaos;
mod ci;
mod cmd;
mod demo;
mod fuzz;
mod setup;
mod test;

use std::{env, process::ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  demo    one catalog service built naive and with brisk, measured side by side (release
          build; SQLite seeded on the first run; writes docs/demo.md) [--smoke] [--serve]
          [--services] [--database-url URL] [--redis-url URL] [--seconds N] [--writes F]
  chaos   the demo's brisk variant under load while Redis, then PostgreSQL, then both are
          killed and restarted; per-phase failures and latency, lost and duplicated writes;
          writes docs/reliability.md; fails unless every expectation holds [--short]
  ci      everything CI checks: prerequisites, rustfmt, clippy, msrv, cargo-deny, rustdoc,
          tests, the facade with each feature, a fixed-seed fuzz run of each target, and the
          demo's smoke run and the short chaos run
  test    doctests and every test through cargo-nextest (extra args go to nextest)
  bench   benchmarks beside their peers, written to docs/benchmarks.md [crate...: metrics]
  fuzz    the cargo-fuzz targets in fuzz/, 60 s each [target...] [--seconds N]
  budget  <budgets.toml> <snapshot.json>: fail when a metrics snapshot breaks a budget
";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        None | Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("ci") => ci::run(),
        Some("demo") => demo::run(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("budget") => budget::run(&args[1..]),
        Some(other) => {
            eprint!("xtask: unknown command `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}
