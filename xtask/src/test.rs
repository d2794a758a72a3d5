//! `cargo xtask test`: doctests, then every test through cargo-nextest.

use std::env;

use anyhow::Result;

use crate::{cmd::Cmd, setup};

/// Installs what the tests need, then runs them; `extra` goes to nextest (e.g. a filter).
pub(crate) fn run(extra: &[String]) -> Result<()> {
    setup::servers()?;
    setup::cargo_tool("cargo-nextest", "nextest")?;
    run_tests(extra)
}

/// The nextest profile: `ci` (no fail-fast, longer timeouts) when `CI` is set.
pub(crate) fn profile() -> &'static str {
    if env::var_os("CI").is_some() {
        "ci"
    } else {
        "default"
    }
}

/// The tests alone, assuming prerequisites are in place.
pub(crate) fn run_tests(extra: &[String]) -> Result<()> {
    Cmd::cargo()
        .args(["test", "--doc", "--workspace", "--all-features"])
        .run()?;
    Cmd::cargo()
        .args([
            "nextest",
            "run",
            "--workspace",
            "--all-features",
            "--profile",
            profile(),
        ])
        .args(extra)
        .run()
}
