//! `QueryTracking` when a query's future is dropped (issue 30 item 6), on a real PostgreSQL:
//! diesel-async reports a statement's start when its future is made and its finish only when
//! it completes, so a cancelled statement leaves a start that no finish claims. A later run
//! of the same SQL records its own time, not the time since the cancelled start.
//!
//! The tracking reads tokio's clock; the runtime's clock is paused, so the only time that
//! passes is the hour the test advances between the cancelled run and the next one.

use std::time::Duration;

use brisk_metrics::{HistogramSnapshot, Registry};
use brisk_pool::diesel::QueryTracking;
use brisk_testkit::PostgresServer;
use diesel::{connection::InstrumentationEvent, sql_query, sql_types::Double};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

const SQL: &str = "SELECT pg_sleep($1)";
/// The virtual time between the cancelled start and the next run.
const GAP: Duration = Duration::from_secs(3600);
/// Less than any sample that holds the gap, with room for the histogram's rounding.
const HALF_GAP: f64 = 1800.0;

/// The histogram of the `pg_sleep` statement.
fn sleeps(registry: &Registry) -> Option<HistogramSnapshot> {
    registry.snapshot().histograms.into_iter().find(|h| {
        h.name == "brisk_pool_query_seconds"
            && h.labels
                .get("statement")
                .is_some_and(|s| s.contains("pg_sleep"))
    })
}

async fn tracked_connection(server: &PostgresServer, registry: &Registry) -> AsyncPgConnection {
    let tracking = QueryTracking::builder()
        .metrics(registry, "main")
        .slow_threshold(Duration::MAX)
        .build()
        .unwrap();
    let mut connection = AsyncPgConnection::establish(&server.url()).await.unwrap();
    connection
        .set_instrumentation(tracking.instrumentation_around(|_: InstrumentationEvent<'_>| {}));
    connection
}

/// A query cancelled by a timeout while the server runs it (`pg_sleep`), one dropped before
/// it was polled, an hour, then the same SQL run to completion: one sample, and it does not
/// hold the hour since the cancelled starts.
#[tokio::test(start_paused = true)]
async fn a_cancelled_query_does_not_lend_its_start_to_the_next_run() {
    let server = PostgresServer::start().unwrap();
    let registry = Registry::new();
    let mut connection = tracked_connection(&server, &registry).await;

    // The paused clock fires the timeout as soon as the runtime waits on the server.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        sql_query(SQL)
            .bind::<Double, _>(0.2)
            .execute(&mut connection),
    )
    .await;
    assert!(cancelled.is_err(), "the timeout cancels the query");
    drop(
        sql_query(SQL)
            .bind::<Double, _>(0.0)
            .execute(&mut connection),
    );
    assert!(sleeps(&registry).is_none_or(|h| h.count == 0));

    tokio::time::advance(GAP).await;
    sql_query(SQL)
        .bind::<Double, _>(0.0)
        .execute(&mut connection)
        .await
        .unwrap();
    let recorded = sleeps(&registry).expect("the completed run is recorded");
    assert_eq!(recorded.count, 1, "only the completed run is a sample");
    assert!(
        recorded.sum < HALF_GAP,
        "the run recorded {} s: the time since a cancelled start",
        recorded.sum
    );

    // Later runs keep recording their own time.
    for _ in 0..3 {
        tokio::time::advance(GAP).await;
        sql_query(SQL)
            .bind::<Double, _>(0.0)
            .execute(&mut connection)
            .await
            .unwrap();
    }
    let recorded = sleeps(&registry).unwrap();
    assert_eq!(recorded.count, 4);
    assert!(recorded.sum < HALF_GAP, "{} s", recorded.sum);
}

/// Two runs of the same SQL in flight together on one connection (diesel-async pipelines
/// them) are both recorded, and neither holds time from before its start.
#[tokio::test(start_paused = true)]
async fn pipelined_runs_of_one_statement_are_each_recorded() {
    let server = PostgresServer::start().unwrap();
    let registry = Registry::new();
    let connection = tracked_connection(&server, &registry).await;
    drop(
        sql_query(SQL)
            .bind::<Double, _>(0.0)
            .execute(&mut &connection),
    );
    tokio::time::advance(GAP).await;
    let (a, b) = tokio::join!(
        sql_query(SQL)
            .bind::<Double, _>(0.0)
            .execute(&mut &connection),
        sql_query(SQL)
            .bind::<Double, _>(0.0)
            .execute(&mut &connection),
    );
    a.unwrap();
    b.unwrap();
    let recorded = sleeps(&registry).unwrap();
    assert_eq!(recorded.count, 2);
    assert!(recorded.sum < HALF_GAP, "{} s", recorded.sum);
}
