use std::{
    fs,
    os::unix::{fs::chown, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use rustix::process::Signal;
use tempfile::TempDir;

use crate::{
    error::{Error, Result, io_err},
    pgwire::{self, PgError},
    process::{self, ServerProcess},
};

const SERVER: &str = "postgres";
const PACKAGE: &str = "postgresql";
/// The superuser that `initdb` creates; trust authentication, no password.
const SUPERUSER: &str = "postgres";
const PORT_ATTEMPTS: usize = 5;
/// Per-attempt timeout of the readiness probe and of statements the testkit runs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A throw-away PostgreSQL server: `initdb` and `postgres` on a free 127.0.0.1 port in a temp
/// dir, trust authentication on loopback, `fsync` off for speed (commits still survive a
/// [`kill`](Self::kill), since only an OS crash needs fsync).
///
/// When the test runs as root the server runs as the `postgres` system user, since PostgreSQL
/// refuses to run as root. Dropping it kills every server process and removes the directory.
///
/// ```no_run
/// # fn main() -> Result<(), brisk_testkit::Error> {
/// let mut pg = brisk_testkit::PostgresServer::start()?;
/// let url = pg.create_database("app")?; // postgres://postgres@127.0.0.1:<port>/app
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresServer {
    // Declared before `dir`: the processes are killed before the directory is removed.
    process: ServerProcess,
    config: PostgresBuilder,
    bin_dir: PathBuf,
    run_as: Option<(u32, u32)>,
    /// The CA that signed the server's certificate, PEM (with [`PostgresBuilder::tls`]).
    ca_pem: Option<String>,
    dir: TempDir,
}

/// Configures a [`PostgresServer`] before starting it; from [`PostgresServer::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start()` is called"]
pub struct PostgresBuilder {
    bin_dir: Option<PathBuf>,
    settings: Vec<(String, String)>,
    tls: bool,
    start_timeout: Duration,
}

impl Default for PostgresBuilder {
    fn default() -> Self {
        Self {
            bin_dir: None,
            settings: Vec::new(),
            tls: false,
            start_timeout: Duration::from_secs(30),
        }
    }
}

impl PostgresBuilder {
    /// The directory holding `initdb` and `postgres`. Default: the directory `initdb` on `PATH`
    /// resolves to, else the newest `/usr/lib/postgresql/<version>/bin`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// A server setting (`-c name=value`), such as `max_connections` = `50`.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// Serves TLS with a certificate for `localhost` and `127.0.0.1`, signed by a CA made for
    /// this server alone ([`PostgresServer::ca_certificate_pem`]). Over TCP, only TLS
    /// sessions are accepted, except the superuser's (which the testkit's own probes and
    /// [`execute`](PostgresServer::execute) use): tests connect as another role to see a
    /// plain connection refused.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// How long to wait for the server to accept sessions. Default: 30 s.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Creates a cluster with `initdb`, starts `postgres` and waits until it accepts a session.
    ///
    /// # Errors
    /// [`Error::BinaryNotFound`] when PostgreSQL is not installed, [`Error::NoPostgresUser`] as
    /// root without a `postgres` user, [`Error::Setup`] when `initdb` fails, and
    /// [`Error::Exited`] or [`Error::NotReady`] (with the server log) when it does not come up.
    pub fn start(self) -> Result<PostgresServer> {
        let bin_dir = match &self.bin_dir {
            Some(dir) => dir.clone(),
            None => postgres_bin_dir()?,
        };
        for binary in ["initdb", "postgres"] {
            process::check_binary(&bin_dir.join(binary), binary, PACKAGE)?;
        }
        let run_as = if rustix::process::geteuid().is_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("brisk-postgres-")
            .tempdir()
            .map_err(io_err("creating a temp dir for PostgreSQL"))?;
        if let Some((uid, gid)) = run_as {
            chown(dir.path(), Some(uid), Some(gid)).map_err(io_err(format!(
                "handing {} to postgres",
                dir.path().display()
            )))?;
        }

        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .current_dir(dir.path())
            .arg("--pgdata")
            .arg(dir.path().join("data"))
            .args([
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
            ])
            .args(["--locale", "C", "--no-sync", "--no-instructions"]);
        as_user(&mut initdb, run_as);
        process::run_setup(&mut initdb)?;
        let ca_pem = if self.tls {
            Some(serve_tls(&dir.path().join("data"), run_as)?)
        } else {
            None
        };

        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = process::free_port()?;
            match launch(&self, &bin_dir, run_as, dir.path(), port) {
                Ok(process) => {
                    return Ok(PostgresServer {
                        process,
                        config: self,
                        bin_dir,
                        run_as,
                        ca_pem,
                        dir,
                    });
                }
                Err(e) if attempt < PORT_ATTEMPTS && process::port_taken(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The directory holding the `initdb` and `postgres` the testkit runs by default: the one of
/// `initdb` on `PATH`, else the newest `/usr/lib/postgresql/<version>/bin`.
pub fn postgres_bin_dir() -> Result<PathBuf> {
    if let Ok(initdb) = process::find_binary("initdb", PACKAGE, &[])
        && let Some(dir) = fs::canonicalize(&initdb)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .filter(|dir| dir.join("postgres").is_file())
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| Error::BinaryNotFound {
            binary: "initdb",
            package: PACKAGE,
            searched: "PATH and /usr/lib/postgresql/*/bin".to_owned(),
        })
}

/// Writes a CA-signed certificate and key into `data` and a `pg_hba.conf` that takes TCP
/// sessions over TLS only (the superuser's excepted); returns the CA certificate, PEM.
fn serve_tls(data: &Path, run_as: Option<(u32, u32)>) -> Result<String> {
    let certificate_error = |e: rcgen::Error| Error::Certificate(e.to_string());
    let ca_key = rcgen::KeyPair::generate().map_err(certificate_error)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(certificate_error)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "brisk-testkit CA");
    let ca_certificate = ca.self_signed(&ca_key).map_err(certificate_error)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().map_err(certificate_error)?;
    let mut server =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(certificate_error)?;
    server
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let certificate = server.signed_by(&key, &issuer).map_err(certificate_error)?;

    let write = |name: &str, contents: &str| -> Result<()> {
        let path = data.join(name);
        fs::write(&path, contents).map_err(io_err(format!("writing {}", path.display())))?;
        // PostgreSQL refuses a key others can read.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io_err(format!("restricting {}", path.display())))?;
        if let Some((uid, gid)) = run_as {
            chown(&path, Some(uid), Some(gid))
                .map_err(io_err(format!("handing {} to postgres", path.display())))?;
        }
        Ok(())
    };
    write("server.crt", &certificate.pem())?;
    write("server.key", &key.serialize_pem())?;
    write(
        "pg_hba.conf",
        &format!(
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             host all {SUPERUSER} 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 reject\n"
        ),
    )?;
    Ok(ca_certificate.pem())
}

/// The uid and gid of the `postgres` system user, from `/etc/passwd`.
fn postgres_user() -> Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&"postgres"))
        .and_then(|fields| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
        .ok_or(Error::NoPostgresUser)
}

fn as_user(command: &mut Command, run_as: Option<(u32, u32)>) {
    if let Some((uid, gid)) = run_as {
        command
            .uid(uid)
            .gid(gid)
            .env("HOME", "/tmp")
            .env("USER", "postgres");
    }
}

fn launch(
    config: &PostgresBuilder,
    bin_dir: &Path,
    run_as: Option<(u32, u32)>,
    dir: &Path,
    port: u16,
) -> Result<ServerProcess> {
    let mut command = Command::new(bin_dir.join("postgres"));
    command
        .current_dir(dir)
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // fsync and full-page writes only protect against an OS crash; a killed server still
        // recovers every committed transaction (commits stay synchronous).
        .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
        .args(["-c", "max_connections=200"]);
    if config.tls {
        command.args(["-c", "ssl=on"]);
    }
    for (name, value) in &config.settings {
        command.arg("-c").arg(format!("{name}={value}"));
    }
    as_user(&mut command, run_as);
    let mut process = ServerProcess::spawn(
        SERVER,
        Signal::QUIT,
        port,
        dir.join("postgres.log"),
        &mut command,
    )?;
    process.wait_ready(config.start_timeout, || {
        pgwire::session(port, SUPERUSER, None, PROBE_TIMEOUT).map_err(|e| e.to_string())
    })?;
    Ok(process)
}

impl PostgresServer {
    /// Starts a server with the default configuration; see [`PostgresBuilder::start`].
    ///
    /// # Errors
    /// As [`PostgresBuilder::start`].
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder for a server with another binary directory, settings or start timeout.
    pub fn builder() -> PostgresBuilder {
        PostgresBuilder::default()
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`: the superuser on the default database.
    pub fn url(&self) -> String {
        self.database_url(SUPERUSER)
    }

    /// The URL of database `name` on this server (which [`create_database`](Self::create_database)
    /// creates).
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port())
    }

    /// Creates an empty database and returns its URL; one per test keeps tests apart on one server.
    ///
    /// # Errors
    /// [`Error::InvalidDatabaseName`] unless `name` is 1–63 characters of `a-z`, `0-9`, `_` not
    /// starting with a digit; [`Error::Query`] when the server refuses (say, it exists);
    /// [`Error::NotRunning`] after [`kill`](Self::kill).
    pub fn create_database(&mut self, name: &str) -> Result<String> {
        let valid = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(Error::InvalidDatabaseName(name.to_owned()));
        }
        self.execute(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(self.database_url(name))
    }

    /// Runs one SQL statement as the superuser on the `postgres` database.
    ///
    /// # Errors
    /// [`Error::Query`] when the server answers with an error or cannot be reached;
    /// [`Error::NotRunning`] after [`kill`](Self::kill).
    pub fn execute(&mut self, sql: &str) -> Result<()> {
        if !self.is_running() {
            return Err(Error::NotRunning {
                server: SERVER,
                port: self.port(),
            });
        }
        pgwire::session(self.port(), SUPERUSER, Some(sql), PROBE_TIMEOUT).map_err(|e| {
            Error::Query {
                port: self.port(),
                sql: sql.to_owned(),
                message: match e {
                    PgError::Server { .. } => e.to_string(),
                    other => format!("no answer: {other}"),
                },
            }
        })
    }

    /// The PEM certificate of the CA that signed the server's, for clients to trust; `None`
    /// without [`PostgresBuilder::tls`].
    pub fn ca_certificate_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The loopback port the server listens on; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// The postmaster's OS process id (also its process group id) while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The temp dir holding the cluster and the server log; removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server log.
    pub fn log(&self) -> String {
        self.process.log_tail()
    }

    /// Whether the postmaster is alive.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Crashes the server: an immediate shutdown (SIGQUIT: every backend ends at once, no
    /// checkpoint), then SIGKILL for anything left after 5 s. Open connections break and new
    /// ones are refused until [`restart`](Self::restart), which runs crash recovery.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the server again on the same port and data directory (killing it first if it
    /// still runs); PostgreSQL runs crash recovery, so committed data survives.
    ///
    /// # Errors
    /// [`Error::Exited`] or [`Error::NotReady`], with the server log.
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        // A crashed postmaster leaves its lock file; its pid is gone, but a recycled pid
        // could make the new server refuse to start, so remove it.
        let _ = fs::remove_file(self.dir.path().join("data").join("postmaster.pid"));
        self.process = launch(
            &self.config,
            &self.bin_dir,
            self.run_as,
            self.dir.path(),
            self.port(),
        )?;
        Ok(())
    }
}
