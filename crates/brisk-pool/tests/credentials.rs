//! No password byte in any `Display`, `Debug` or log line, for every documented form of
//! connection string: PostgreSQL URLs (raw and percent-encoded passwords, passwords in the
//! query, Unix sockets), `key=value` strings (plain and quoted values), Redis URLs (`redis://`,
//! `rediss://`, Unix sockets, URLs that fail to parse).
//!
//! Nothing listens on 127.0.0.1:1 or on the socket paths used here, so every connect fails at
//! once and every error path is taken without a server.

use std::time::Duration;

use brisk_pool::{
    Config, Error,
    diesel::{PgConnector, PgPool},
    redis::{RedisConnector, RedisPool, SharedRedis},
};
use brisk_testkit::{LogCapture, error_chain};
use proptest::prelude::*;

/// Everything a user (or an attacker reading logs) can see about `error`.
fn error_texts(error: &Error) -> Vec<String> {
    vec![
        error.to_string(),
        format!("{error:?}"),
        format!("{error:#?}"),
        error_chain(error),
    ]
}

/// The parts of `password` that must not appear anywhere: the whole of it, raw and
/// percent-encoded, and each run of at least five characters between its special
/// characters (a parser that cut it at a `/`, `?`, `#` or `@` would leak such a run).
fn secrets(password: &str) -> Vec<String> {
    let mut secrets = vec![password.to_owned(), encode(password)];
    secrets.extend(
        password
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|run| run.len() >= 5)
            .map(str::to_owned),
    );
    secrets
}

fn assert_clean(texts: &[String], password: &str, form: &str) {
    for secret in secrets(password) {
        for text in texts {
            assert!(
                !text.contains(&secret),
                "{form}: `{secret}` (from the password {password:?}) appears in {text:?}"
            );
        }
    }
}

/// Percent-encodes everything but unreserved characters, as a URL's userinfo needs.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// A `key=value` quoted value: backslash and quote escaped.
fn quote(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '\\' | '\'' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("'{escaped}'")
}

/// Every PostgreSQL form of a connection string holding `password`.
fn postgres_forms(password: &str) -> Vec<(&'static str, String)> {
    let encoded = encode(password);
    vec![
        (
            "url, encoded",
            format!("postgres://app:{encoded}@127.0.0.1:1/appdb"),
        ),
        (
            "url, raw",
            format!("postgres://app:{password}@127.0.0.1:1/appdb"),
        ),
        (
            "url, raw, with parameters",
            format!(
                "postgresql://app:{password}@127.0.0.1:1/appdb?sslmode=disable&application_name=api"
            ),
        ),
        (
            "url, password parameter",
            format!("postgres://app@127.0.0.1:1/appdb?password={encoded}"),
        ),
        (
            "url, raw password parameter",
            format!("postgres://127.0.0.1:1/appdb?user=app&password={password}"),
        ),
        (
            "url, unix socket",
            format!("postgres://app:{encoded}@%2Ftmp%2Fbrisk-no-such-dir/appdb"),
        ),
        (
            "key=value, quoted",
            format!(
                "host=127.0.0.1 port=1 user=app password={} dbname=appdb",
                quote(password)
            ),
        ),
        (
            "key=value, raw",
            format!("host=127.0.0.1 port=1 user=app password={password} dbname=appdb"),
        ),
        (
            "key=value, unix socket",
            format!(
                "host=/tmp/brisk-no-such-dir user=app password={} dbname=appdb",
                quote(password)
            ),
        ),
    ]
}

/// Every Redis form of a URL holding `password`.
fn redis_forms(password: &str) -> Vec<(&'static str, String)> {
    let encoded = encode(password);
    vec![
        (
            "redis, encoded",
            format!("redis://:{encoded}@127.0.0.1:1/0"),
        ),
        (
            "redis, user and encoded",
            format!("redis://app:{encoded}@127.0.0.1:1/0"),
        ),
        ("redis, raw", format!("redis://:{password}@127.0.0.1:1/0")),
        (
            "redis, raw with user",
            format!("redis://app:{password}@127.0.0.1:1/3"),
        ),
        (
            "rediss, encoded",
            format!("rediss://:{encoded}@127.0.0.1:1/0"),
        ),
        (
            "redis+unix",
            format!("redis+unix:///tmp/brisk-no-such.sock?db=1&pass={encoded}"),
        ),
        (
            "unix",
            format!("unix:///tmp/brisk-no-such.sock?pass={encoded}"),
        ),
    ]
}

/// Builds pools on `connector` every way that fails (warm-up connect, checkout timeout,
/// closed pool) and returns every text shown: errors, pool and builder `Debug`, log lines.
async fn pg_texts(url: &str) -> Vec<String> {
    let logs = LogCapture::this_thread();
    let mut texts = Vec::new();
    let connector = PgConnector::new(url);
    texts.push(format!("{connector:?}"));
    let builder = PgPool::builder(connector).connect_retries(0);
    texts.push(format!("{builder:?}"));
    let error = builder.build().await.unwrap_err();
    texts.extend(error_texts(&error));

    let pool = PgPool::builder(PgConnector::new(url))
        .min_idle(0)
        .connect_retries(1)
        .retry_backoff(Duration::from_millis(1))
        .acquire_timeout(Duration::from_millis(30))
        .build()
        .await
        .unwrap();
    texts.push(format!("{pool:?}"));
    texts.push(pool.target().to_owned());
    let error = pool.get().await.unwrap_err();
    texts.extend(error_texts(&error));
    pool.close().await;
    let error = pool.get().await.unwrap_err();
    texts.extend(error_texts(&error));

    // `from_url`: the pool's own parameters, then the driver's.
    let with_params = if url.starts_with("postgres") {
        format!(
            "{url}{}pool_min_idle=1",
            if url.contains('?') { "&" } else { "?" }
        )
    } else {
        url.to_owned()
    };
    if let Err(error) = PgPool::from_url(&with_params).await {
        texts.extend(error_texts(&error));
    }
    let mut config = Config::default();
    if let Err(error) = config.apply_url(&format!("{url}?pool_max_size=x")) {
        texts.extend(error_texts(&error));
    }
    texts.extend(logs.lines());
    texts
}

async fn redis_texts(url: &str, connect_shared: bool) -> Vec<String> {
    let logs = LogCapture::this_thread();
    let mut texts = Vec::new();
    match RedisConnector::new(url) {
        Err(error) => texts.extend(error_texts(&error)),
        Ok(connector) => {
            texts.push(format!("{connector:?}"));
            let shared =
                SharedRedis::builder(connector.clone()).connect_timeout(Duration::from_millis(200));
            texts.push(format!("{shared:?}"));
            // redis-rs retries the first connect with backoff: slow, so not in every case.
            if connect_shared && let Err(error) = shared.build().await {
                texts.extend(error_texts(&error));
            }
            let builder = RedisPool::builder(connector.clone()).connect_retries(0);
            texts.push(format!("{builder:?}"));
            texts.extend(error_texts(&builder.build().await.unwrap_err()));
            let pool = RedisPool::builder(connector)
                .min_idle(0)
                .acquire_timeout(Duration::from_millis(30))
                .retry_backoff(Duration::from_millis(1))
                .build()
                .await
                .unwrap();
            texts.push(format!("{pool:?}"));
            texts.extend(error_texts(&pool.get().await.unwrap_err()));
        }
    }
    texts.extend(logs.lines());
    texts
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The reproduction from issue 30: a `key=value` string's password in the builder's `Debug`.
#[test]
fn a_key_value_password_is_not_in_the_builder_debug() {
    let texts = runtime().block_on(pg_texts("host=db user=app password=s3cret"));
    assert_clean(&texts, "s3cret", "key=value");
    let texts = runtime().block_on(pg_texts(
        "host=127.0.0.1 port=1 user=app password='s3cret with spaces'",
    ));
    assert_clean(&texts, "s3cret with spaces", "key=value quoted");
    assert!(
        texts.iter().any(|text| text.contains("app@127.0.0.1:1")),
        "{texts:#?}"
    );
}

/// The reproduction from issue 30: a URL whose password holds a `/` in `Error::Connect`.
#[test]
fn a_url_password_with_a_slash_is_not_in_connect_errors() {
    let texts = runtime().block_on(pg_texts("postgres://app:pa/ss@127.0.0.1:1/app"));
    assert_clean(&texts, "pa/ss", "url");
    for text in &texts {
        assert!(!text.contains("app:pa"), "{text}");
    }
    let texts = runtime().block_on(pg_texts("postgres://app:hunter?two#x@127.0.0.1:1/app"));
    for text in &texts {
        assert!(
            !text.contains("hunter") && !text.contains("two#x"),
            "{text}"
        );
    }
}

/// An `@` in the query, after a password given there (or before it): tokio-postgres ends the
/// credentials at the first `@`, so the password would be read as the user or the host.
#[test]
fn a_query_password_before_or_after_an_at_is_not_shown() {
    for (url, password) in [
        (
            "postgres://127.0.0.1:1/app?user=app@corp&password=s3cret",
            "s3cret",
        ),
        (
            "postgres://127.0.0.1:1/app?user=app&password=p@ssw0rd",
            "p@ssw0rd",
        ),
    ] {
        let texts = runtime().block_on(pg_texts(url));
        assert_clean(&texts, password, url);
        for text in &texts {
            assert!(
                !text.contains("ssw0rd") && !text.contains("s3cret"),
                "{text}"
            );
        }
    }
}

/// The reproduction from issue 30: a Redis URL that does not parse, in `Error::Config`.
#[test]
fn a_redis_url_that_fails_to_parse_shows_no_part_of_it() {
    // The URL parser stops the authority at the `/`, so the old redaction found no `@`.
    let error = RedisConnector::new("redis://:s3cr/etpw@127.0.0.1:6379/0").unwrap_err();
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
    assert_clean(&error_texts(&error), "s3cr/etpw", "redis");
    for text in error_texts(&error) {
        assert!(!text.contains("s3cr"), "{text}");
    }
    let error = RedisConnector::new("redis://:s3cretpw@127.0.0.1:notaport/0").unwrap_err();
    assert!(matches!(error, Error::Config { .. }), "{error:?}");
    let texts = runtime().block_on(redis_texts("redis://app:s3cr%2Fetpw@127.0.0.1:1/2", true));
    assert_clean(&texts, "s3cr/etpw", "redis");
    assert!(
        texts
            .iter()
            .any(|text| text.contains("redis://127.0.0.1:1/2")),
        "{texts:#?}"
    );
    assert!(!format!("{error:?}").contains("127.0.0.1"), "{error:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any printable password, in every form: no part of it is shown.
    #[test]
    fn no_password_byte_is_shown_in_any_form(
        password in "[ -~]{8,24}",
        runs in proptest::collection::vec(("[A-Za-z0-9]{5,8}", "[/?#@:%=' ]"), 1..4),
    ) {
        // Runs of letters between special characters, so that a password cut anywhere by a
        // parser leaves a recognisable run; and any printable text.
        let structured: String = runs.iter().map(|(run, special)| format!("{run}{special}")).collect();
        for password in [password, structured] {
            for (form, url) in postgres_forms(&password) {
                let texts = runtime().block_on(pg_texts(&url));
                assert_clean(&texts, &password, form);
            }
            for (form, url) in redis_forms(&password) {
                let texts = runtime().block_on(redis_texts(&url, false));
                assert_clean(&texts, &password, form);
            }
        }
    }
}
