//! What both servers share: finding binaries, free ports, spawning into a process group,
//! readiness polling with a deadline, killing the whole group, and reading the log.

use std::{
    env,
    fs::{self, File},
    net::{Ipv4Addr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal};

use crate::error::{Error, Result, io_err};

/// How many lines of a server log an error carries.
const LOG_TAIL_LINES: usize = 60;

/// Looks for `binary` in each directory of `PATH`, then in `extra_dirs`, in that order;
/// [`Error::BinaryNotFound`] names `package` (the Debian/Ubuntu package to install) and where
/// it looked. The one lookup of the workspace: the testkit's servers and clients, and xtask's
/// prerequisites, all find programs through it.
pub fn find_binary(
    binary: &'static str,
    package: &'static str,
    extra_dirs: &[PathBuf],
) -> Result<PathBuf> {
    let path_dirs = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let dirs: Vec<&Path> = path_dirs
        .iter()
        .chain(extra_dirs)
        .map(PathBuf::as_path)
        .collect();
    dirs.iter()
        .map(|dir| dir.join(binary))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::BinaryNotFound {
            binary,
            package,
            searched: if dirs.is_empty() {
                "nowhere: PATH is empty".to_owned()
            } else {
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            },
        })
}

/// Checks that an explicitly configured binary exists.
pub(crate) fn check_binary(path: &Path, binary: &'static str, package: &'static str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::BinaryNotFound {
            binary,
            package,
            searched: path.display().to_string(),
        })
    }
}

/// A loopback port that was free a moment ago. Callers retry when a server still finds it taken.
pub(crate) fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(io_err("binding 127.0.0.1:0 to find a free port"))?;
    let port = listener
        .local_addr()
        .map_err(io_err("reading the free port"))?
        .port();
    Ok(port)
}

/// A running (or killed) server process, its port and log. Killing kills its whole process
/// group, so worker processes (PostgreSQL backends) never outlive it.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    pub(crate) server: &'static str,
    /// The signal that crashes the server; SIGKILL follows for whatever it leaves alive.
    crash_signal: Signal,
    pub(crate) port: u16,
    pub(crate) log_path: PathBuf,
    child: Option<Child>,
}

impl ServerProcess {
    /// Spawns `command` as the leader of a new process group, with stdout and stderr appended to
    /// `log_path`.
    pub(crate) fn spawn(
        server: &'static str,
        crash_signal: Signal,
        port: u16,
        log_path: PathBuf,
        command: &mut Command,
    ) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err(format!("opening log {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(io_err("duplicating the log handle"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .spawn()
            .map_err(io_err(format!(
                "spawning {}",
                Path::new(command.get_program()).display()
            )))?;
        Ok(Self {
            server,
            crash_signal,
            port,
            log_path,
            child: Some(child),
        })
    }

    /// Polls `probe` until it succeeds, the process exits, or `timeout` runs out.
    pub(crate) fn wait_ready(
        &mut self,
        timeout: Duration,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.fail(Error::Exited {
                    server: self.server,
                    port: self.port,
                    status,
                    log: self.log_tail(),
                }));
            }
            let last_error = match probe() {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                self.kill();
                return Err(self.fail(Error::NotReady {
                    server: self.server,
                    port: self.port,
                    timeout,
                    last_error,
                    log: self.log_tail(),
                }));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Prints a start failure to stderr (the test harness shows it beside the failing test).
    fn fail(&self, error: Error) -> Error {
        eprintln!("brisk-testkit: {error}");
        error
    }

    /// The OS process id of the server, while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still alive.
    pub(crate) fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Crashes the server with its crash signal, then SIGKILLs it and every process it started
    /// that is still alive, reaps it, and waits (bounded) until none of them is alive, so a
    /// restart on the same port and data dir cannot collide.
    pub(crate) fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let leader = Pid::from_child(&child);
        if self.crash_signal != Signal::KILL {
            let _ = rustix::process::kill_process(leader, self.crash_signal);
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
        }
        // The leader is stopped first so that it cannot fork while its tree is read.
        // Errors below only mean the process is already gone.
        let _ = rustix::process::kill_process(leader, Signal::STOP);
        let tree = process_tree(child.id());
        for &pid in &tree {
            if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
            }
        }
        let _ = rustix::process::kill_process_group(leader, Signal::KILL);
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(5);
        while tree.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last lines of the server log.
    pub(crate) fn log_tail(&self) -> String {
        read_tail(&self.log_path)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn read_tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(LOG_TAIL_LINES);
            lines[start..].join("\n")
        }
        Err(e) => format!("(log {} unreadable: {e})", path.display()),
    }
}

/// Runs a set-up program to completion, turning a non-zero exit into [`Error::Setup`].
pub(crate) fn run_setup(command: &mut Command) -> Result<()> {
    let program = PathBuf::from(command.get_program());
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {}", program.display())))?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Err(Error::Setup {
        program,
        status: output.status,
        output: text,
    })
}

/// Whether the log says the port was taken (a race with another process; the caller retries).
pub(crate) fn port_taken(error: &Error) -> bool {
    match error {
        Error::Exited { log, .. } | Error::NotReady { log, .. } => {
            log.contains("Address already in use")
        }
        _ => false,
    }
}

/// `(pid, parent pid, state)` of every process, read from `/proc`.
fn all_processes() -> Vec<(u32, u32, char)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let (state, ppid) = stat(pid)?;
            Some((pid, ppid, state))
        })
        .collect()
}

/// State and parent pid of `pid` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command is parenthesised and may hold spaces; then come: state ppid ...
    let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is running (a zombie has exited: it only waits to be reaped).
pub(crate) fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| !matches!(state, 'Z' | 'X' | 'x'))
}

/// `root` and all its live descendants, parents before children.
pub(crate) fn process_tree(root: u32) -> Vec<u32> {
    if !is_alive(root) {
        return Vec::new();
    }
    let processes = all_processes();
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&parent) = tree.get(next) {
        next += 1;
        let children: Vec<u32> = processes
            .iter()
            .filter(|&&(pid, ppid, state)| {
                ppid == parent && !matches!(state, 'Z' | 'X' | 'x') && !tree.contains(&pid)
            })
            .map(|&(pid, _, _)| pid)
            .collect();
        tree.extend(children);
    }
    tree
}
