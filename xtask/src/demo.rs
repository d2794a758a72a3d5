//! `cargo xtask demo`: builds the demo (crates/brisk-demo) in release mode and runs it: one
//! catalog service built naive and built with brisk, measured side by side, with nothing to
//! set up (SQLite, seeded on the first run). Arguments go to the demo (`--smoke`, `--serve`,
//! `--seconds N`, …; `cargo xtask demo -- --help` lists them).

use anyhow::Result;

use crate::{cmd::Cmd, setup};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| *arg != "--")
        .collect();
    // `--services` starts PostgreSQL and redis-server: installed like the tests' servers.
    if args.contains(&"--services") {
        setup::servers()?;
    }
    Cmd::cargo()
        .args(["run", "--release", "--quiet", "-p", "brisk-demo", "--"])
        .args(args)
        .run()
}

/// The CI step: tiny data, a few seconds, on SQLite and then on a throw-away PostgreSQL and
/// Redis; fails unless both variants answer alike and the brisk one makes fewer database
/// round trips.
pub(crate) fn smoke() -> Result<()> {
    run(&["--smoke".to_owned()])?;
    run(&["--smoke".to_owned(), "--services".to_owned()])
}
