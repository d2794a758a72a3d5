//! [`RedisCluster`]: three throw-away `redis-server` masters joined into a Redis Cluster with
//! `CLUSTER MEET` and `CLUSTER ADDSLOTSRANGE` (no `redis-cli` needed).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    redis::RedisServer,
};

/// The hash slots a Redis Cluster divides keys into.
const SLOTS: u16 = 16_384;

/// A small Redis Cluster of three masters (no replicas) on free loopback ports, each in its own
/// temp dir, with the 16 384 slots split evenly. Dropping it kills every node.
///
/// ```no_run
/// # fn main() -> Result<(), brisk_testkit::Error> {
/// let cluster = brisk_testkit::RedisCluster::start()?;
/// let urls = cluster.urls(); // one per master, for a cluster client
/// # let _ = urls;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three masters, joins them, assigns the slots, and waits (up to 30 s) until every
    /// node reports `cluster_state:ok` and knows all three.
    ///
    /// # Errors
    /// As [`RedisServer::start`]; [`Error::Cluster`] when a cluster command is refused or the
    /// cluster does not come up.
    pub fn start() -> Result<Self> {
        let nodes = (0..3)
            .map(|_| {
                RedisServer::builder()
                    .arg("--cluster-enabled")
                    .arg("yes")
                    .arg("--cluster-config-file")
                    .arg("nodes.conf")
                    .arg("--cluster-node-timeout")
                    .arg("2000")
                    .start()
            })
            .collect::<Result<Vec<_>>>()?;
        let first = nodes[0].port();
        for node in &nodes[1..] {
            command(
                first,
                &["CLUSTER", "MEET", "127.0.0.1", &node.port().to_string()],
            )?;
        }
        let share = SLOTS / 3;
        for (at, node) in nodes.iter().enumerate() {
            let start = share * at as u16;
            let end = if at == nodes.len() - 1 {
                SLOTS - 1
            } else {
                start + share - 1
            };
            command(
                node.port(),
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &start.to_string(),
                    &end.to_string(),
                ],
            )?;
        }
        let cluster = Self { nodes };
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let mut last = String::new();
            let ready =
                self.nodes
                    .iter()
                    .all(|node| match command(node.port(), &["CLUSTER", "INFO"]) {
                        Ok(info) => {
                            let ok = info.contains("cluster_state:ok")
                                && info.contains("cluster_known_nodes:3")
                                && info.contains("cluster_slots_assigned:16384");
                            if !ok {
                                last = info;
                            }
                            ok
                        }
                        Err(error) => {
                            last = error.to_string();
                            false
                        }
                    });
            if ready {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(Error::Cluster {
                    message: format!("not ready within {timeout:?}; last CLUSTER INFO: {last}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:<port>/` of each master, for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The masters, to inspect (their logs, say) or to kill and restart one.
    pub fn nodes(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }
}

/// One command over a raw RESP connection: the reply as text (a status, an integer or a bulk
/// string), or the server's error.
fn command(port: u16, args: &[&str]) -> Result<String> {
    let failed = |message: String| Error::Cluster {
        message: format!("{} on port {port}: {message}", args.join(" ")),
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| failed(e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| failed(e.to_string()))?;
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream
        .write_all(request.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| failed(e.to_string()))?;
    let line = line.trim_end();
    match line.split_at_checked(1) {
        Some(("+" | ":", rest)) => Ok(rest.to_owned()),
        Some(("-", rest)) => Err(failed(rest.to_owned())),
        Some(("$", length)) => {
            let length: usize = length
                .parse()
                .map_err(|_| failed(format!("bad bulk length {length:?}")))?;
            let mut body = vec![0; length + 2];
            reader
                .read_exact(&mut body)
                .map_err(|e| failed(e.to_string()))?;
            body.truncate(length);
            Ok(String::from_utf8_lossy(&body).into_owned())
        }
        _ => Err(failed(format!("unexpected reply {line:?}"))),
    }
}
