//! [`Proxy`]: a loopback TCP relay in front of a server, whose link can be cut and healed, for
//! tests of a server that is unreachable for a while without losing its data (a network
//! partition), where killing and restarting it would also empty it.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use crate::error::{Error, Result};

/// A relay on a free 127.0.0.1 port to `target`. While [`cut`](Self::cut), every connection
/// through it is closed and new ones are closed as soon as they are accepted, as a partition
/// looks to a client whose reconnects are refused; [`heal`](Self::heal) lets new connections
/// through again. Stops with its last handle.
///
/// ```no_run
/// use brisk_testkit::{Proxy, RedisServer};
///
/// # fn main() -> Result<(), brisk_testkit::Error> {
/// let redis = RedisServer::start()?;
/// let proxy = Proxy::start(([127, 0, 0, 1], redis.port()).into())?;
/// let url = format!("redis://127.0.0.1:{}", proxy.port()); // the client connects here
/// proxy.cut(); // the client's commands fail; Redis keeps its data
/// proxy.heal(); // reconnects succeed again
/// # let _ = url;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    port: u16,
}

#[derive(Debug)]
struct Shared {
    target: SocketAddr,
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every relayed connection, to shut down on a cut.
    live: Mutex<Vec<TcpStream>>,
}

impl Proxy {
    /// Starts relaying to `target`.
    ///
    /// # Errors
    /// [`Error::Io`] if no loopback port can be bound.
    pub fn start(target: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|source| Error::Io {
            action: "binding the proxy's port".to_owned(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| Error::Io {
                action: "reading the proxy's port".to_owned(),
                source,
            })?
            .port();
        let shared = Arc::new(Shared {
            target,
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
        });
        let accepting = Arc::clone(&shared);
        thread::spawn(move || accept(&listener, &accepting));
        Ok(Self { shared, port })
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Cuts the link: closes every relayed connection, and closes new ones at once until
    /// [`heal`](Self::heal).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Lets new connections through again (the ones closed by [`cut`](Self::cut) stay
    /// closed: clients reconnect).
    pub fn heal(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wakes the accept loop so that it sees `stopped`.
        drop(TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        ));
    }
}

impl Shared {
    fn close_all(&self) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in live.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            continue;
        };
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let ends = (client.try_clone(), server.try_clone());
        let (Ok(client_end), Ok(server_end)) = ends else {
            continue;
        };
        {
            let mut live = shared.live.lock().unwrap_or_else(PoisonError::into_inner);
            // A cut between the check above and here must close this one too.
            if shared.cut.load(Ordering::SeqCst) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                continue;
            }
            live.retain(|stream| stream.peer_addr().is_ok());
            live.push(client_end);
            live.push(server_end);
        }
        relay(client, server);
    }
}

/// Copies both ways on two threads; each direction ends the other when it ends.
fn relay(client: TcpStream, server: TcpStream) {
    let (Ok(client_back), Ok(server_back)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    thread::spawn(move || pump(client, server));
    thread::spawn(move || pump(server_back, client_back));
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if to.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: answers each line with itself.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let address = listener.local_addr().unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(read) = stream.read(&mut buffer) {
                        if read == 0 || stream.write_all(&buffer[..read]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    fn round_trip(port: u16) -> std::io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.write_all(b"ping")?;
        let mut answer = [0u8; 4];
        stream.read_exact(&mut answer)?;
        Ok(answer.to_vec())
    }

    #[test]
    fn relays_until_cut_and_again_once_healed() {
        let proxy = Proxy::start(echo()).unwrap();
        assert_eq!(round_trip(proxy.port()).unwrap(), b"ping");

        let mut open = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        open.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        open.read_exact(&mut answer).unwrap();

        proxy.cut();
        assert!(proxy.is_cut());
        // The open connection is closed: a read ends (0 bytes or an error), never hangs.
        let _ = open.write_all(b"ping");
        assert!(matches!(open.read(&mut answer), Ok(0) | Err(_)));
        assert!(
            round_trip(proxy.port()).is_err(),
            "new connections are closed"
        );

        proxy.heal();
        assert_eq!(round_trip(proxy.port()).unwrap(), b"ping");
    }
}
