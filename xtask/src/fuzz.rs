//! `cargo xtask fuzz`: the cargo-fuzz targets in `fuzz/` (decoders of outside input).

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{cmd::Cmd, setup};

/// Every target in `fuzz/Cargo.toml`.
const TARGETS: &[&str] = &[
    "accept_encoding",
    "cache_control",
    "cursor",
    "decoders",
    "preconditions",
    "response_cache_key",
    "statement_label",
    "value_frame",
];

/// Runs `targets` (all when empty) for `seconds` each, from a fresh random seed.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let mut seconds = 60u64;
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--seconds" {
            let value = args.next().context("--seconds needs a number")?;
            seconds = value
                .parse()
                .with_context(|| format!("--seconds {value}"))?;
        } else if TARGETS.contains(&arg.as_str()) {
            targets.push(arg.as_str());
        } else {
            bail!("unknown fuzz target `{arg}`; known: {}", TARGETS.join(", "));
        }
    }
    if targets.is_empty() {
        targets = TARGETS.to_vec();
    }
    for target in targets {
        fuzz(target, &[format!("-max_total_time={seconds}")])?;
    }
    Ok(())
}

/// The CI smoke run: each target for a fixed number of inputs from a fixed seed, so that a
/// failure is reproducible and a pass is not luck of the draw.
pub(crate) fn smoke() -> Result<()> {
    for target in TARGETS {
        fuzz(target, &["-seed=1".to_owned(), "-runs=20000".to_owned()])?;
    }
    Ok(())
}

fn fuzz(target: &str, libfuzzer_args: &[String]) -> Result<()> {
    setup::cargo_tool("cargo-fuzz", "fuzz")?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask sits in the workspace root")?
        .join("fuzz");
    // cargo-fuzz passes nightly flags (sanitizers); the one stable toolchain here accepts them
    // with RUSTC_BOOTSTRAP.
    Cmd::cargo()
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(&dir)
        .args(["fuzz", "run", target, "--"])
        .args(libfuzzer_args)
        .run()
}
