//! One query streamed whole from an owned connection, on a real PostgreSQL: every row in
//! order, an error after the rows before it, and the connection released when the stream is
//! dropped early.

use std::{
    ops::{Deref, DerefMut},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use brisk_stream::diesel::stream_query;
use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::StreamExt;

#[derive(Debug, QueryableByName)]
struct Number {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// A connection that says when it is dropped.
struct Tracked {
    connection: AsyncPgConnection,
    dropped: Arc<AtomicBool>,
}

impl Deref for Tracked {
    type Target = AsyncPgConnection;
    fn deref(&self) -> &AsyncPgConnection {
        &self.connection
    }
}

impl DerefMut for Tracked {
    fn deref_mut(&mut self) -> &mut AsyncPgConnection {
        &mut self.connection
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_streams_whole_fails_in_place_and_lets_go_of_its_connection() {
    let server = brisk_testkit::PostgresServer::start().unwrap();
    let url = server.url();
    let connect = || async { AsyncPgConnection::establish(&url).await.unwrap() };

    // Every row, in order, from a connection the stream owns.
    let numbers: Vec<i64> = stream_query(
        Box::new(connect().await),
        diesel::sql_query("SELECT i AS n FROM generate_series(1::bigint, 20000) AS i"),
    )
    .map(|row: diesel::QueryResult<Number>| row.unwrap().n)
    .collect()
    .await;
    assert_eq!(numbers, (1..=20_000).collect::<Vec<_>>());

    // A division by zero at row 1000: the rows before it, then the error, then the end.
    let results: Vec<diesel::QueryResult<Number>> = stream_query(
        Box::new(connect().await),
        diesel::sql_query(
            "SELECT 1000000 / (1000 - i) AS n FROM generate_series(1::bigint, 2000) AS i",
        ),
    )
    .collect()
    .await;
    let failed = results.iter().position(Result::is_err).expect("an error");
    assert!(results[..failed].iter().all(Result::is_ok));
    assert_eq!(failed, results.len() - 1, "nothing after the error");
    let error = results[failed].as_ref().unwrap_err().to_string();
    assert!(error.contains("division by zero"), "{error}");

    // Dropped after one row: the task stops and the connection goes.
    let dropped = Arc::new(AtomicBool::new(false));
    let mut rows = stream_query(
        Tracked {
            connection: connect().await,
            dropped: dropped.clone(),
        },
        diesel::sql_query("SELECT i AS n FROM generate_series(1::bigint, 10000000) AS i"),
    );
    let first: Number = rows.next().await.unwrap().unwrap();
    assert_eq!(first.n, 1);
    drop(rows);
    tokio::time::timeout(Duration::from_secs(30), async {
        while !dropped.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the connection was dropped with the stream");
}
