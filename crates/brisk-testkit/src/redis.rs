use std::{
    ffi::OsString,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rustix::process::Signal;
use tempfile::TempDir;

use crate::{
    error::{Error, Result, io_err},
    process::{self, ServerProcess},
};

const SERVER: &str = "redis-server";
const PACKAGE: &str = "redis-server";
/// Attempts at finding a port that stays free until the server binds it.
const PORT_ATTEMPTS: usize = 5;

/// A throw-away `redis-server` on a free 127.0.0.1 port, with no persistence, in a temp dir.
///
/// Dropping it kills the server and removes the directory. [`kill`](Self::kill) and
/// [`restart`](Self::restart) simulate a crash and a recovery on the same port, for fault tests.
///
/// ```no_run
/// # fn main() -> Result<(), brisk_testkit::Error> {
/// let redis = brisk_testkit::RedisServer::start()?;
/// let url = redis.url(); // redis://127.0.0.1:<port>/
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `dir`: the process is killed before its directory is removed.
    process: ServerProcess,
    config: RedisBuilder,
    binary: PathBuf,
    dir: TempDir,
}

/// Configures a [`RedisServer`] before starting it; from [`RedisServer::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start()` is called"]
pub struct RedisBuilder {
    binary: Option<PathBuf>,
    args: Vec<OsString>,
    start_timeout: Duration,
}

impl Default for RedisBuilder {
    fn default() -> Self {
        Self {
            binary: None,
            args: Vec::new(),
            start_timeout: Duration::from_secs(15),
        }
    }
}

impl RedisBuilder {
    /// The `redis-server` binary to run. Default: the first one on `PATH`, then `/usr/sbin`,
    /// `/usr/local/sbin`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// An extra command-line argument for `redis-server`, such as `--maxmemory` then `64mb`.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How long to wait for the server to answer `PING`. Default: 15 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Starts the server and waits until it answers `PING`.
    ///
    /// # Errors
    /// [`Error::BinaryNotFound`] when `redis-server` is not installed; [`Error::Exited`] or
    /// [`Error::NotReady`] (carrying the server log) when it does not come up.
    pub fn start(self) -> Result<RedisServer> {
        let binary = match &self.binary {
            Some(path) => {
                process::check_binary(path, SERVER, PACKAGE)?;
                path.clone()
            }
            None => redis_server_binary()?,
        };
        let dir = tempfile::Builder::new()
            .prefix("brisk-redis-")
            .tempdir()
            .map_err(io_err("creating a temp dir for redis-server"))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = process::free_port()?;
            match launch(&self, &binary, dir.path(), port) {
                Ok(process) => {
                    return Ok(RedisServer {
                        process,
                        config: self,
                        binary,
                        dir,
                    });
                }
                Err(e) if attempt < PORT_ATTEMPTS && process::port_taken(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn launch(config: &RedisBuilder, binary: &Path, dir: &Path, port: u16) -> Result<ServerProcess> {
    let mut command = Command::new(binary);
    command
        .current_dir(dir)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--daemonize", "no", "--protected-mode", "no"])
        .arg("--dir")
        .arg(dir)
        .args(&config.args);
    let mut process = ServerProcess::spawn(
        SERVER,
        Signal::KILL,
        port,
        dir.join("redis.log"),
        &mut command,
    )?;
    process.wait_ready(config.start_timeout, || ping(port))?;
    Ok(process)
}

/// One `PING` over a raw connection: `Ok` only for `+PONG`.
fn ping(port: u16) -> Result<(), String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_millis(500);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut reply = [0u8; 64];
    let n = stream.read(&mut reply).map_err(|e| e.to_string())?;
    let reply = String::from_utf8_lossy(&reply[..n]);
    if reply.starts_with("+PONG") {
        Ok(())
    } else {
        Err(format!("PING answered {:?}", reply.trim_end()))
    }
}

impl RedisServer {
    /// Starts a server with the default configuration; see [`RedisBuilder::start`].
    ///
    /// # Errors
    /// As [`RedisBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder for a server with a custom binary, arguments or start timeout.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// `redis://127.0.0.1:<port>/`, for any Redis client.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.process.port)
    }

    /// The loopback port the server listens on; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// The server's OS process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The temp dir holding the server's log; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server log.
    pub fn log(&self) -> String {
        self.process.log_tail()
    }

    /// Whether the server process is alive.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Kills the server with SIGKILL, as a crash would: clients see refused connections until
    /// [`restart`](Self::restart). Killing a killed server does nothing.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port (killing it first if it still runs) and waits
    /// until it answers `PING`. Its data is gone: there is no persistence.
    ///
    /// # Errors
    /// [`Error::Exited`] or [`Error::NotReady`], with the server log.
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        self.process = launch(&self.config, &self.binary, self.dir.path(), self.port())?;
        Ok(())
    }

    /// Whether the server answers `PING` right now.
    ///
    /// # Errors
    /// [`Error::NotRunning`] after [`kill`](Self::kill).
    pub fn ping(&mut self) -> Result<()> {
        if !self.is_running() {
            return Err(Error::NotRunning {
                server: SERVER,
                port: self.port(),
            });
        }
        ping(self.port()).map_err(|e| Error::Io {
            action: format!("PING redis-server on 127.0.0.1:{}", self.port()),
            source: std::io::Error::other(e),
        })
    }
}

/// The `redis-server` the testkit starts by default: the first on `PATH`, then in
/// `/usr/sbin` or `/usr/local/sbin`.
pub fn redis_server_binary() -> Result<PathBuf> {
    process::find_binary(
        SERVER,
        PACKAGE,
        &["/usr/sbin".into(), "/usr/local/sbin".into()],
    )
}
