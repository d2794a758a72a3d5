//! What a pool shows of its connection string in errors, `Debug` and logs: the form the
//! driver's own parser read, rebuilt without credentials. A string that does not parse is
//! shown as a fixed placeholder with no part of it, since where its password ends cannot be
//! known.

/// Shown instead of a connection string that does not parse (or parses ambiguously).
pub(crate) const UNPARSEABLE: &str = "<unparseable connection string>";

/// Where the credentials of a URL end, as libpq-style parsers (tokio-postgres) read them: after
/// the first `@`, whatever comes before it (a password may hold `/`, `?`, `#`). 0 without `@`.
/// The query and fragment are looked for from here.
pub(crate) fn after_credentials(url: &str) -> usize {
    url.find('@').map_or(0, |at| at + 1)
}

/// Whether the text a libpq-style parser reads as the credentials of `url` (what comes
/// before its first `@`) holds a `?`: part of the query, and maybe a password given there,
/// would then be read as the user, the password or (after the `@`) the host.
pub(crate) fn query_in_credentials(url: &str) -> bool {
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    url.find('@')
        .is_some_and(|at| at > start && url[start..at].contains('?'))
}

/// Whether the `?` in the credentials of `url` starts the query rather than being part of a
/// password: the text before it is a host (no `:`), or `host:port` followed by a path. A
/// password written raw (`app:p?w@db`) is told apart by what comes after its `:`.
pub(crate) fn query_read_as_credentials(url: &str) -> bool {
    if !query_in_credentials(url) {
        return false;
    }
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    let question = start + url[start..].find('?').unwrap_or(0);
    let before = &url[start..question];
    match before.split_once(':') {
        None => true,
        Some((user, rest)) => {
            let port = rest.split('/').next().unwrap_or_default();
            user.contains('/') || (!port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        }
    }
}

/// Percent-encodes all but the characters that need no encoding in a URL's authority or path.
#[cfg(feature = "postgres")]
fn encode(text: &str, out: &mut String) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte));
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

/// A PostgreSQL connection string, parsed by tokio-postgres.
#[cfg(feature = "postgres")]
#[derive(Clone)]
pub(crate) struct PgTarget {
    /// The driver's settings; `None` when the string does not parse.
    pub(crate) config: Option<tokio_postgres::Config>,
    /// Whether the string sets `sslmode` itself (tokio-postgres defaults to `prefer`).
    #[cfg_attr(not(feature = "postgres-rustls"), allow(dead_code))] // Read by `rustls()`.
    pub(crate) sslmode_explicit: bool,
    /// `postgres://user@host:port,.../dbname`, or [`UNPARSEABLE`].
    pub(crate) shown: String,
}

#[cfg(feature = "postgres")]
impl PgTarget {
    /// Parses a `postgres://` (or `postgresql://`) URL or a `key=value` string.
    pub(crate) fn parse(text: &str) -> Self {
        let Ok(config) = text.parse::<tokio_postgres::Config>() else {
            return Self {
                config: None,
                sslmode_explicit: false,
                shown: UNPARSEABLE.to_owned(),
            };
        };
        // tokio-postgres ends the credentials at the first `@`: a second one (an unencoded `@`
        // in the password) leaves part of the password in what it reads as the host or the
        // database, so nothing of such a URL is shown. It still connects as the driver reads it.
        // An `@` after a `?` puts part of the query (maybe a password given there) into what
        // it reads as the credentials and the host: such a URL is not shown either. A user or
        // host with characters outside a safe set is not shown, whatever put them there.
        let ambiguous = (is_url(text)
            && (text.matches('@').count() > 1 || query_in_credentials(text)))
            || !shows_safely(&config);
        Self {
            sslmode_explicit: sslmode_explicit(text, &config),
            shown: if ambiguous {
                UNPARSEABLE.to_owned()
            } else {
                show(&config)
            },
            config: Some(config),
        }
    }
}

#[cfg(feature = "postgres")]
fn is_url(text: &str) -> bool {
    text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// Whether `text` (which parsed to `config`) sets `sslmode`. Any mode but tokio-postgres's
/// default `prefer` was set; for `prefer`, the string is parsed again with `sslmode=disable`
/// put before its own parameters, which a later `sslmode` of the string overrides.
#[cfg(feature = "postgres")]
fn sslmode_explicit(text: &str, config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::SslMode;
    if config.get_ssl_mode() != SslMode::Prefer {
        return true;
    }
    let probe = if is_url(text) {
        let start = after_credentials(text);
        match text[start..].find('?') {
            Some(question) => {
                let (head, tail) = text.split_at(start + question + 1);
                format!("{head}sslmode=disable&{tail}")
            }
            None => format!("{text}?sslmode=disable"),
        }
    } else {
        format!("sslmode=disable {text}")
    };
    probe
        .parse::<tokio_postgres::Config>()
        .is_ok_and(|probed| probed.get_ssl_mode() == SslMode::Prefer)
}

/// Whether the user and hosts of `config` hold only characters that a user name or host
/// name holds (and `/` in a Unix socket path): text from elsewhere in the string (a query, a
/// password) would hold `&`, `=`, `?`, spaces or quotes.
#[cfg(feature = "postgres")]
fn shows_safely(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~');
    let user_ok = config
        .get_user()
        .is_none_or(|user| user.chars().all(|c| plain(c) || matches!(c, '@' | '+')));
    user_ok
        && config.get_hosts().iter().all(|host| match host {
            Host::Tcp(host) => host.chars().all(|c| plain(c) || matches!(c, ':' | '%')),
            #[cfg(unix)]
            Host::Unix(path) => path
                .to_str()
                .is_some_and(|path| path.chars().all(|c| plain(c) || c == '/')),
        })
}

/// `postgres://user@host:port,host:port/dbname` from the parsed settings: no password, no
/// parameters.
#[cfg(feature = "postgres")]
fn show(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let mut shown = String::from("postgres://");
    if let Some(user) = config.get_user() {
        encode(user, &mut shown);
        shown.push('@');
    }
    let ports = config.get_ports();
    let port = |index: usize| match ports {
        [] => 5432,
        [port] => *port,
        ports => ports.get(index).copied().unwrap_or(5432),
    };
    let hosts = config.get_hosts();
    let hostaddrs = config.get_hostaddrs();
    let count = hosts.len().max(hostaddrs.len());
    for index in 0..count {
        if index > 0 {
            shown.push(',');
        }
        match (hosts.get(index), hostaddrs.get(index)) {
            (Some(Host::Tcp(host)), _)
                if host.contains(':')
                    && host
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') =>
            {
                shown.push_str(&format!("[{host}]"));
            }
            (Some(Host::Tcp(host)), _) => encode(host, &mut shown),
            #[cfg(unix)]
            (Some(Host::Unix(path)), _) => encode(&path.to_string_lossy(), &mut shown),
            (None, Some(std::net::IpAddr::V6(address))) => shown.push_str(&format!("[{address}]")),
            (None, Some(address)) => shown.push_str(&address.to_string()),
            (None, None) => {}
        }
        shown.push_str(&format!(":{}", port(index)));
    }
    if let Some(dbname) = config.get_dbname() {
        shown.push('/');
        encode(dbname, &mut shown);
    }
    shown
}

/// `redis://host:port/db` (`rediss://` over TLS, `redis+unix:///path?db=n` on a socket) from
/// redis-rs's parsed connection info: no user, no password.
#[cfg(feature = "redis")]
pub(crate) fn redis(info: &redis::ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    match info.addr() {
        redis::ConnectionAddr::Unix(path) => {
            format!("redis+unix://{}?db={db}", path.display())
        }
        address @ redis::ConnectionAddr::TcpTls { .. } => format!("rediss://{address}/{db}"),
        address => format!("redis://{address}/{db}"),
    }
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn urls_and_key_value_strings_are_shown_without_credentials() {
        for (text, shown) in [
            (
                "postgres://app:s3cret@db:5433/app?sslmode=disable",
                "postgres://app@db:5433/app",
            ),
            ("postgres://app:pa/ss@db/app", "postgres://app@db:5432/app"),
            ("postgresql://db/app?password=x", "postgres://db:5432/app"),
            (
                "host=db user=app password='s3 cret' dbname=orders",
                "postgres://app@db:5432/orders",
            ),
            (
                "host=/var/run/postgresql,db2 port=5433,5434 user=app",
                "postgres://app@%2Fvar%2Frun%2Fpostgresql:5433,db2:5434",
            ),
            ("postgres://[::1]:5433/app", "postgres://[::1]:5433/app"),
            ("postgres://app:p@ss@db/app", UNPARSEABLE),
            ("host=db password=s3 cret", UNPARSEABLE),
            ("postgres://app:x@db/app?unknown=s3cret", UNPARSEABLE),
            // An `@` in the query: tokio-postgres reads all before it as the credentials and
            // the text after it as the host.
            (
                "postgres://db.example.com/app?user=app@corp&password=s3cret",
                UNPARSEABLE,
            ),
            ("postgres://db/app?user=app&password=p@ssw0rd", UNPARSEABLE),
            (
                "postgres://127.0.0.1:1/appdb?user=app&password=ab@cdefgh",
                UNPARSEABLE,
            ),
            ("postgres://db/app@corp", UNPARSEABLE),
            ("host=db user='a b'", UNPARSEABLE),
        ] {
            assert_eq!(PgTarget::parse(text).shown, shown, "{text}");
        }
    }

    #[test]
    fn an_explicit_sslmode_is_told_from_the_default() {
        for (text, explicit) in [
            ("postgres://app@db/app", false),
            ("postgres://app:p?w@db/app", false),
            ("postgres://app:p?w@db/app?application_name=x", false),
            ("postgres://app@db/app?sslmode=prefer", true),
            ("postgres://app:p?w@db/app?sslmode=prefer", true),
            ("postgres://app@db/app?sslmode=disable", true),
            ("postgres://app@db/app?sslmode=require", true),
            ("host=db user=app", false),
            ("host=db sslmode=prefer", true),
            ("host=db password='sslmode=require'", false),
        ] {
            assert_eq!(PgTarget::parse(text).sslmode_explicit, explicit, "{text}");
        }
    }
}
