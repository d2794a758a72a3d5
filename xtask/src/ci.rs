//! `cargo xtask ci`: everything CI checks, one step at a time, stopping at the first failure.

use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

use crate::{
    chaos,
    cmd::{self, Cmd},
    demo, fuzz, setup, test,
};

type Step = (&'static str, fn() -> Result<()>);

const STEPS: &[Step] = &[
    ("prerequisites", prerequisites),
    ("rustfmt", fmt),
    ("clippy", clippy),
    ("msrv", msrv),
    ("cargo-deny", deny),
    ("rustdoc", doc),
    ("tests", tests),
    ("tests, default features", default_feature_tests),
    ("facade features", facade_features),
    ("fuzz smoke", fuzz::smoke),
    ("demo smoke", demo::smoke),
    ("chaos --short", chaos::short),
];

pub(crate) fn run() -> Result<()> {
    cmd::lean_builds();
    let started = Instant::now();
    for (index, (name, step)) in STEPS.iter().enumerate() {
        println!("\n==> [{}/{}] {name}", index + 1, STEPS.len());
        let step_started = Instant::now();
        let outcome = step();
        let secs = step_started.elapsed().as_secs_f64();
        if let Err(error) = outcome {
            println!("<== {name}: FAILED after {secs:.1}s");
            return Err(error.context(format!("ci step `{name}` failed")));
        }
        println!("<== {name}: ok ({secs:.1}s)");
    }
    println!(
        "\nci: all {} steps passed in {:.1}s",
        STEPS.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn prerequisites() -> Result<()> {
    setup::servers()?;
    setup::cargo_tool("cargo-nextest", "nextest")?;
    setup::cargo_tool("cargo-deny", "deny")
}

fn fmt() -> Result<()> {
    Cmd::cargo().args(["fmt", "--all", "--check"]).run()
}

fn clippy() -> Result<()> {
    Cmd::cargo()
        .args(["clippy", "--workspace", "--all-targets", "--all-features"])
        .args(["--", "-D", "warnings"])
        .run()
}

/// No dependency may need a newer toolchain than the workspace's `rust-version` promises.
/// (Only one toolchain can be installed here, so this reads what each package declares.)
fn msrv() -> Result<()> {
    let metadata = metadata(false)?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata without packages")?;
    let msrv_text = packages
        .iter()
        .find(|p| p["name"] == "brisk")
        .and_then(|p| p["rust_version"].as_str())
        .context("the brisk crate declares no rust-version")?;
    let msrv = parse_version(msrv_text)?;
    let mut too_new = Vec::new();
    for package in packages {
        if let Some(needs) = package["rust_version"].as_str()
            && parse_version(needs)? > msrv
        {
            too_new.push(format!(
                "{} {} needs Rust {needs}",
                package["name"].as_str().unwrap_or("?"),
                package["version"].as_str().unwrap_or("?")
            ));
        }
    }
    if !too_new.is_empty() {
        bail!(
            "rust-version is {msrv_text}, but:\n  {}\nraise workspace.package.rust-version or pin older versions",
            too_new.join("\n  ")
        );
    }
    println!(
        "all {} packages build with Rust {msrv_text}",
        packages.len()
    );
    Ok(())
}

fn parse_version(text: &str) -> Result<(u64, u64, u64)> {
    let mut parts = text.split('.').map(str::parse::<u64>);
    let mut next = || parts.next().transpose().map(Option::unwrap_or_default);
    let parsed = (|| Ok::<_, std::num::ParseIntError>((next()?, next()?, next()?)))();
    parsed.map_err(|e| anyhow!("rust-version {text:?}: {e}"))
}

fn deny() -> Result<()> {
    println!(
        "advisories: skipped here (checking them needs the RustSec database from the network); run `cargo deny check advisories` where it is reachable"
    );
    Cmd::cargo()
        .args([
            "deny",
            "--all-features",
            "check",
            "licenses",
            "bans",
            "sources",
        ])
        .run()
}

fn doc() -> Result<()> {
    Cmd::cargo()
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--workspace", "--no-deps", "--all-features"])
        .run()
}

fn tests() -> Result<()> {
    test::run_tests(&[])
}

/// Each published crate's tests with only its default features, as a user who adds the crate
/// alone gets it: `--all-features` (and a workspace run's feature unification) can hide a
/// test or an API that needs a feature it does not turn on.
fn default_feature_tests() -> Result<()> {
    let metadata = metadata(true)?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata lists no packages")?;
    let published = packages.iter().filter(|package| {
        let name = package["name"].as_str().unwrap_or_default();
        // `publish = false` shows as an empty list of registries.
        let unpublished = package["publish"].as_array().is_some_and(Vec::is_empty);
        name.starts_with("brisk") && !unpublished
    });
    for package in published {
        let name = package["name"].as_str().unwrap_or_default();
        Cmd::cargo()
            .args(["nextest", "run", "--no-tests", "pass", "-p", name])
            .args(["--profile", test::profile()])
            .run()?;
    }
    Ok(())
}

/// The facade must build with no feature, each feature alone, and `full`.
fn facade_features() -> Result<()> {
    let metadata = metadata(true)?;
    let facade = metadata["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|p| p["name"] == "brisk"))
        .context("no `brisk` package in the workspace")?;
    let features: Vec<&String> = facade["features"]
        .as_object()
        .context("brisk has no [features] table")?
        .keys()
        .filter(|name| *name != "default")
        .collect();
    Cmd::cargo()
        .args(["check", "--quiet", "-p", "brisk", "--no-default-features"])
        .run()?;
    for feature in features {
        Cmd::cargo()
            .args(["check", "--quiet", "-p", "brisk", "--no-default-features"])
            .args(["--features", feature])
            .run()?;
    }
    Ok(())
}

fn metadata(no_deps: bool) -> Result<Value> {
    let mut cmd = Cmd::cargo().args(["metadata", "--format-version", "1"]);
    if no_deps {
        cmd = cmd.arg("--no-deps");
    }
    serde_json::from_str(&cmd.read()?).context("parsing cargo metadata")
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("1.88").unwrap(), (1, 88, 0));
        assert!(parse_version("1.100").unwrap() > parse_version("1.88.1").unwrap());
        assert!(parse_version("1.x").is_err());
    }
}
