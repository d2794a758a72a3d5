//! `PgConnector::rustls` against a brisk-testkit PostgreSQL that accepts TCP sessions over TLS
//! only, with a certificate from a CA made for it.

use std::time::Duration;

use brisk_pool::{
    Error,
    diesel::{PgConnector, PgPool, QueryTracking, tls_config},
};
use brisk_testkit::{LogCapture, PostgresServer};
use diesel::{sql_query, sql_types::Text};
use diesel_async::RunQueryDsl;

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    value: String,
}

/// A TLS-only server with a role `app` (the superuser may still connect in plain text, for
/// the testkit's own probes) and the URL `app` connects with.
fn server() -> (PostgresServer, String) {
    let mut server = PostgresServer::builder().tls().start().unwrap();
    PostgresServer::execute(&mut server, "CREATE ROLE app LOGIN").unwrap();
    let url = format!(
        "postgres://app@localhost:{}/postgres?sslmode=require",
        server.port()
    );
    (server, url)
}

#[tokio::test]
async fn a_pool_over_rustls_reaches_a_tls_only_server_and_a_plain_one_is_refused() {
    let logs = LogCapture::this_thread();
    let (server, url) = server();
    let ca = server.ca_certificate_pem().unwrap().as_bytes().to_vec();

    // Without TLS: the server's refusal, named.
    let plain = PgPool::builder(PgConnector::new(
        url.replace("sslmode=require", "sslmode=disable"),
    ))
    .connect_retries(0)
    .build()
    .await
    .unwrap_err();
    let chain = brisk_testkit::error_chain(&plain);
    assert!(matches!(plain, Error::Connect { .. }), "{chain}");
    assert!(chain.contains("no encryption"), "{chain}");

    // With it: every connection is encrypted, and slow statements are explained over TLS too.
    let tracking = QueryTracking::builder()
        .slow_threshold(Duration::from_millis(20))
        .explain_slow_queries()
        .build()
        .unwrap();
    let pool = PgPool::builder(
        PgConnector::new(url.as_str())
            .track_queries(tracking)
            .rustls(tls_config(&ca).unwrap()),
    )
    .max_size(2)
    .build()
    .await
    .unwrap();
    let mut connection = pool.get().await.unwrap();
    let row: Row = sql_query(
        "SELECT ssl::text || ' ' || version AS value FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .get_result(&mut *connection)
    .await
    .unwrap();
    assert!(row.value.starts_with("true TLSv1."), "{}", row.value);
    sql_query("SELECT pg_sleep($1) IS NOT NULL AS slept")
        .bind::<diesel::sql_types::Double, _>(0.03)
        .execute(&mut *connection)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !logs
        .lines()
        .iter()
        .any(|line| line.contains("slow query plan"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no plan over TLS: {:?}",
            logs.lines()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_server_whose_certificate_another_ca_signed_is_not_trusted() {
    let (_server, url) = server();
    let (other, _) = server();
    let stranger = tls_config(other.ca_certificate_pem().unwrap().as_bytes()).unwrap();
    let error = PgPool::builder(PgConnector::new(url).rustls(stranger))
        .connect_retries(0)
        .build()
        .await
        .unwrap_err();
    let chain = brisk_testkit::error_chain(&error);
    // Both CAs carry the testkit's name, so rustls finds the issuer and rejects its signature.
    assert!(chain.contains("invalid peer certificate"), "{chain}");
}

#[test]
fn a_ca_bundle_without_certificates_is_refused() {
    for pem in [
        &b""[..],
        b"not a certificate",
        b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n",
    ] {
        match tls_config(pem) {
            Err(Error::Config { setting, .. }) => assert_eq!(setting, "ca_pem"),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(pem)),
        }
    }
}

/// A client configuration that trusts no server: enough to ask for TLS, which a server
/// without it refuses before any certificate is seen.
fn trusting_nobody() -> rustls::ClientConfig {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// Issue 30 item 8: a caller who configured TLS must not be downgraded to plain text by a
/// server (or an attacker) answering "no TLS"; only an explicit `sslmode` keeps plain text.
#[tokio::test]
async fn configured_tls_is_required_unless_the_string_says_otherwise() {
    let server = PostgresServer::start().unwrap(); // ssl=off
    let port = server.port();
    for string in [
        server.url(),
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
    ] {
        let error = PgPool::builder(PgConnector::new(&string).rustls(trusting_nobody()))
            .connect_retries(0)
            .build()
            .await
            .unwrap_err();
        let chain = brisk_testkit::error_chain(&error);
        assert!(matches!(error, Error::Connect { .. }), "{string}: {chain}");
        assert!(
            chain.contains("server does not support TLS"),
            "{string}: {chain}"
        );
    }
    for string in [
        format!("{}?sslmode=prefer", server.url()),
        format!("{}?sslmode=disable", server.url()),
        format!("host=127.0.0.1 port={port} user=postgres sslmode=prefer"),
    ] {
        let pool = PgPool::builder(PgConnector::new(&string).rustls(trusting_nobody()))
            .connect_retries(0)
            .build()
            .await
            .unwrap_or_else(|error| panic!("{string}: {error:?}"));
        let mut connection = pool.get().await.unwrap();
        let row: Row =
            sql_query("SELECT ssl::text AS value FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .get_result(&mut *connection)
                .await
                .unwrap();
        assert_eq!(row.value, "false", "{string}: the explicit choice is kept");
    }
}

/// Review H2: PostgreSQL refuses TLS on a Unix socket (libpq ignores `sslmode` there), so the
/// `require` that `rustls()` adds must not apply to a string whose hosts are all sockets. A
/// list mixing a socket and a TCP host keeps `require`: the TCP host is never downgraded, and
/// the socket host fails its TLS request, so the connection goes to the TCP host over TLS.
#[tokio::test]
async fn a_unix_socket_host_connects_in_plain_text_under_rustls() {
    let (server, _) = server();
    let ca = server.ca_certificate_pem().unwrap().as_bytes().to_vec();
    let socket = server.dir().display().to_string();
    let port = server.port();
    for (string, ssl) in [
        (
            format!("host={socket} port={port} user=app dbname=postgres"),
            "false",
        ),
        (
            format!(
                "postgres://app@{}:{port}/postgres",
                socket.replace('/', "%2F")
            ),
            "false",
        ),
        (
            format!("host={socket},localhost port={port},{port} user=app dbname=postgres"),
            "true",
        ),
    ] {
        let pool = PgPool::builder(PgConnector::new(&string).rustls(tls_config(&ca).unwrap()))
            .connect_retries(0)
            .build()
            .await
            .unwrap_or_else(|error| panic!("{string}: {}", brisk_testkit::error_chain(&error)));
        let mut connection = pool.get().await.unwrap();
        let row: Row =
            sql_query("SELECT ssl::text AS value FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .get_result(&mut *connection)
                .await
                .unwrap();
        assert_eq!(row.value, ssl, "{string}");
    }
}
