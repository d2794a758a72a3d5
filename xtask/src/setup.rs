//! Prerequisites: the server binaries the tests start, and the cargo tools CI runs. Missing ones
//! are installed where that is possible (apt-get as root; `cargo install --locked`).

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Result, bail};

use crate::cmd::Cmd;

/// `redis-server` and PostgreSQL, for brisk-testkit, and the real clients tests drive
/// (`curl`, headless `chromium`, Prometheus' `promtool`).
pub(crate) fn servers() -> Result<()> {
    let mut missing = Vec::new();
    if find_on_path("curl", &[]).is_none() {
        missing.push(("curl", "curl"));
    }
    if find_on_path("chromium", &[]).is_none() {
        missing.push(("chromium", "chromium"));
    }
    if find_on_path("promtool", &[]).is_none() {
        missing.push(("promtool", "prometheus"));
    }
    if find_on_path("redis-server", &["/usr/sbin", "/usr/local/sbin"]).is_none() {
        missing.push(("redis-server", "redis-server"));
    }
    if find_postgres().is_none() {
        missing.push(("PostgreSQL (initdb, postgres)", "postgresql"));
    }
    if !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|(what, _)| *what).collect();
        let packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
        if !(is_root() && find_on_path("apt-get", &[]).is_some()) {
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

fn find_on_path(binary: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
}

/// Where brisk-testkit finds PostgreSQL: `initdb` on PATH or `/usr/lib/postgresql/*/bin`.
fn find_postgres() -> Option<PathBuf> {
    find_on_path("initdb", &[]).or_else(|| {
        fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin").join("initdb")))
            .find(|initdb| initdb.is_file() && has_sibling(initdb, "postgres"))
    })
}

fn has_sibling(path: &Path, name: &str) -> bool {
    path.parent().is_some_and(|dir| dir.join(name).is_file())
}
