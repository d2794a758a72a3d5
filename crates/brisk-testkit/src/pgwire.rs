//! Just enough of the PostgreSQL frontend/backend protocol (v3) to check that a server accepts
//! sessions and to run one statement with the simple-query flow, with trust authentication.

use std::{
    fmt,
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

const PROTOCOL_V3: i32 = 196_608;
/// Larger backend messages than this are treated as a protocol error rather than allocated.
const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug)]
pub(crate) enum PgError {
    Io(io::Error),
    /// An `ErrorResponse`: SQLSTATE code and message.
    Server {
        code: String,
        message: String,
    },
    Protocol(String),
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Server { code, message } => write!(f, "{message} (SQLSTATE {code})"),
            Self::Protocol(p) => write!(f, "protocol error: {p}"),
        }
    }
}

impl From<io::Error> for PgError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Opens a session as `user` on database `user`; runs `sql` if given; closes the session.
pub(crate) fn session(
    port: u16,
    user: &str,
    sql: Option<&str>,
    timeout: Duration,
) -> Result<(), PgError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let mut params = Vec::new();
    for (key, value) in [("user", user), ("database", user)] {
        params.extend_from_slice(key.as_bytes());
        params.push(0);
        params.extend_from_slice(value.as_bytes());
        params.push(0);
    }
    params.push(0);
    let mut startup = Vec::with_capacity(params.len() + 8);
    startup.extend_from_slice(&frame_len(params.len() + 8)?.to_be_bytes());
    startup.extend_from_slice(&PROTOCOL_V3.to_be_bytes());
    startup.extend_from_slice(&params);
    stream.write_all(&startup)?;
    read_until_ready(&mut stream, Phase::Startup)?;

    if let Some(sql) = sql {
        let mut query = vec![b'Q'];
        query.extend_from_slice(&frame_len(sql.len() + 5)?.to_be_bytes());
        query.extend_from_slice(sql.as_bytes());
        query.push(0);
        stream.write_all(&query)?;
        read_until_ready(&mut stream, Phase::Query)?;
    }
    // Terminate; the server closes the connection.
    stream.write_all(&[b'X', 0, 0, 0, 4])?;
    Ok(())
}

fn frame_len(len: usize) -> Result<i32, PgError> {
    i32::try_from(len).map_err(|_| PgError::Protocol(format!("message of {len} bytes")))
}

/// Reads messages until `ReadyForQuery` and returns the first `ErrorResponse` seen, if any.
/// In the start-up phase the server closes the connection after an error, so it ends the read.
fn read_until_ready(stream: &mut TcpStream, phase: Phase) -> Result<(), PgError> {
    let mut first_error = None;
    loop {
        let mut header = [0u8; 5];
        stream.read_exact(&mut header)?;
        let tag = header[0];
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let body_len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(4))
            .filter(|&l| l <= MAX_MESSAGE)
            .ok_or_else(|| {
                PgError::Protocol(format!("message {:?} with length {len}", tag as char))
            })?;
        let mut body = vec![0u8; body_len];
        stream.read_exact(&mut body)?;
        match (tag, phase) {
            (b'R', _) => {
                let method = body
                    .get(..4)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .ok_or_else(|| PgError::Protocol("short authentication message".into()))?;
                if method != 0 {
                    return Err(PgError::Protocol(format!(
                        "server asks for authentication method {method}; the testkit sets up trust"
                    )));
                }
            }
            (b'E', Phase::Startup) => return Err(parse_error(&body)),
            (b'E', Phase::Query) => {
                first_error.get_or_insert_with(|| parse_error(&body));
            }
            (b'Z', _) => return first_error.map_or(Ok(()), Err),
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Startup,
    Query,
}

/// Parses an `ErrorResponse` body: (field type byte, NUL-terminated string)*, then NUL.
fn parse_error(body: &[u8]) -> PgError {
    let (mut code, mut message) = (String::new(), String::new());
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    PgError::Server { code, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_error_fields() {
        let body = b"SERROR\0C42P04\0Mdatabase \"x\" already exists\0\0";
        match parse_error(body) {
            PgError::Server { code, message } => {
                assert_eq!(code, "42P04");
                assert_eq!(message, "database \"x\" already exists");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn truncated_error_body_does_not_panic() {
        match parse_error(b"CXX") {
            PgError::Server { code, .. } => assert_eq!(code, "XX"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
