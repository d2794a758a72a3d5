//! Prerequisites: the server binaries the tests start, and the cargo tools CI runs. Missing ones
//! are installed where that is possible (apt-get as root; `cargo install --locked`).

use anyhow::{Result, bail};

use crate::cmd::Cmd;

/// `redis-server` and PostgreSQL, for brisk-testkit, and the real clients tests drive
/// (`curl`, headless `chromium`, Prometheus' `promtool`).
pub(crate) fn servers() -> Result<()> {
    let mut missing = Vec::new();
    if !on_path("curl") {
        missing.push(("curl", "curl"));
    }
    if !on_path("chromium") {
        missing.push(("chromium", "chromium"));
    }
    if !on_path("promtool") {
        missing.push(("promtool", "prometheus"));
    }
    if brisk_testkit::redis_server_binary().is_err() {
        missing.push(("redis-server", "redis-server"));
    }
    if brisk_testkit::postgres_bin_dir().is_err() {
        missing.push(("PostgreSQL (initdb, postgres)", "postgresql"));
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(what, _)| *what).collect();
        let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
        if !(is_root() && on_path("apt-get")) {
            bail!(
                "the tests need {} and it is not installed: install it (Debian/Ubuntu: `sudo apt-get install {}`) and re-run",
                names.join(" and "),
                packages.join(" ")
            );
        }
        println!(
            "{} missing: installing {} with apt-get",
            names.join(" and "),
            packages.join(" ")
        );
        Cmd::new("apt-get").args(["update", "-qq"]).run()?;
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .run()?;
    }
    // PostgreSQL refuses to run as root; brisk-testkit runs it as `postgres`.
    if is_root() && !Cmd::new("id").args(["-u", "postgres"]).succeeds() {
        println!(
            "running as root and there is no `postgres` user to run PostgreSQL as: creating it"
        );
        Cmd::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--home-dir",
                "/var/lib/postgresql",
            ])
            .args(["--shell", "/bin/bash", "postgres"])
            .run()?;
    }
    Ok(())
}

/// Installs a cargo subcommand with `cargo install --locked` unless `cargo <sub> --version` works.
pub(crate) fn cargo_tool(package: &str, subcommand: &str) -> Result<()> {
    if Cmd::cargo().args([subcommand, "--version"]).succeeds() {
        return Ok(());
    }
    println!("`cargo {subcommand}` is missing: installing {package} (takes a few minutes once)");
    Cmd::cargo().args(["install", "--locked", package]).run()
}

fn is_root() -> bool {
    Cmd::new("id")
        .arg("-u")
        .read()
        .is_ok_and(|uid| uid.trim() == "0")
}

/// Whether `binary` is on `PATH`, found as brisk-testkit finds programs (one lookup).
fn on_path(binary: &'static str) -> bool {
    brisk_testkit::find_binary(binary, "", &[]).is_ok()
}
