//! `cargo xtask chaos`: the brisk variant of the demo (crates/brisk-demo, release build) on a
//! throw-away PostgreSQL and Redis under the demo's load while Redis, then PostgreSQL, then
//! both are killed and restarted (`brisk-demo --chaos`). Reports each phase, checks every
//! acknowledged write against the database, writes docs/reliability.md with its plot, and
//! fails unless every expectation holds (counts only: the table `EXPECTATIONS` in
//! crates/brisk-demo/src/chaos.rs). `--short`: 3 s per phase and smaller data, nothing
//! written (the CI step); `--outage N` keeps each server down N s; `--out FILE` writes the
//! report elsewhere.

use anyhow::Result;

use crate::{cmd::Cmd, setup};

pub(crate) fn run(args: &[String]) -> Result<()> {
    let args: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|arg| *arg != "--")
        .collect();
    setup::servers()?;
    Cmd::cargo()
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            "brisk-demo",
            "--",
            "--chaos",
        ])
        .args(args)
        .run()
}

/// The CI step: the short run; fails when an expectation (lost or duplicated writes,
/// failures by phase, 500s) does not hold. About 40 s of run time once built.
pub(crate) fn short() -> Result<()> {
    run(&["--short".to_owned()])
}
