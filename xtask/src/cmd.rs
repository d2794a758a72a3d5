//! Running programs: print what runs, fail with the command line when it fails.

use std::{
    env,
    ffi::OsStr,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};

/// A command that prints itself before it runs.
#[derive(Debug)]
pub(crate) struct Cmd {
    command: Command,
    shown: String,
}

/// Set by `cargo xtask ci`: every cargo it runs builds without incremental caches.
static LEAN_BUILDS: AtomicBool = AtomicBool::new(false);

/// Makes every later [`Cmd::cargo`] build without incremental compilation and without debug
/// info. A CI run builds each crate once, so the caches only cost disk: on a fresh clone they
/// were about half of `target/`, and a full disk kills the linker (`ld terminated with signal
/// 7 [Bus error]`). Debug info (line tables, and the standard library's, stripped) is most of
/// each test binary; panics still name their file and line, backtraces their functions.
pub(crate) fn lean_builds() {
    LEAN_BUILDS.store(true, Ordering::Relaxed);
}

impl Cmd {
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Self {
        let program = program.as_ref();
        Self {
            command: Command::new(program),
            shown: program.to_string_lossy().into_owned(),
        }
    }

    /// `cargo`, the same one that runs xtask.
    pub(crate) fn cargo() -> Self {
        let mut cmd = Self::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.shown = "cargo".to_owned();
        if LEAN_BUILDS.load(Ordering::Relaxed) {
            cmd = cmd
                .env("CARGO_INCREMENTAL", "0")
                .env("CARGO_PROFILE_DEV_DEBUG", "false")
                .env("CARGO_PROFILE_DEV_STRIP", "debuginfo");
        }
        cmd
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        self.shown.push(' ');
        self.shown.push_str(&arg.to_string_lossy());
        self.command.arg(arg);
        self
    }

    pub(crate) fn args<I, S>(self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        args.into_iter().fold(self, Self::arg)
    }

    pub(crate) fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref();
        self.shown = format!("{key}={} {}", value.to_string_lossy(), self.shown);
        self.command.env(key, value);
        self
    }

    /// Runs in `dir` instead of the current directory.
    pub(crate) fn current_dir(mut self, dir: &std::path::Path) -> Self {
        self.shown = format!("(cd {} && {})", dir.display(), self.shown);
        self.command.current_dir(dir);
        self
    }

    /// Runs with inherited output; fails unless it exits 0.
    pub(crate) fn run(mut self) -> Result<()> {
        println!("$ {}", self.shown);
        let status = self
            .command
            .status()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        if !status.success() {
            bail!("`{}` failed ({status})", self.shown);
        }
        Ok(())
    }

    /// Runs quietly and returns stdout; fails unless it exits 0.
    pub(crate) fn read(mut self) -> Result<String> {
        let output = self
            .command
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("could not start `{}`", self.shown))?;
        if !output.status.success() {
            bail!("`{}` failed ({})", self.shown, output.status);
        }
        String::from_utf8(output.stdout)
            .with_context(|| format!("`{}` printed non-UTF-8", self.shown))
    }

    /// Whether it runs and exits 0, with all output discarded.
    pub(crate) fn succeeds(mut self) -> bool {
        self.command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}
