//! The keyset row stream over a fake table: every row once, the next page fetched while the
//! current one is consumed, no more than that fetched for a consumer that stops, and a failing
//! page ending the stream after the rows before it.

use std::{
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use brisk_stream::{Error, KeyValue, Keyset, Placeholders, Plan, SortOrder};
use futures_util::{Stream, StreamExt};

fn by_id() -> Keyset {
    Keyset::builder()
        .unique_column("id", SortOrder::Asc)
        .build()
        .unwrap()
}

/// Where a plan starts: after the bound id, or at the beginning.
fn after(plan: &Plan) -> i64 {
    match plan.sql_where(Placeholders::Dollar, 1).1.first() {
        Some(KeyValue::Int(id)) => *id,
        None => 0,
        other => panic!("unexpected key {other:?}"),
    }
}

/// A table of ids 1..=rows; records which pages were asked for.
#[derive(Clone, Default)]
struct Table {
    rows: i64,
    fetched: Arc<Mutex<Vec<i64>>>,
    fail_after: Option<i64>,
}

impl Table {
    fn fetch(&self, plan: Plan) -> impl Future<Output = Result<Vec<i64>, String>> + Send + use<> {
        let from = after(&plan);
        self.fetched.lock().unwrap().push(from);
        let rows = self.rows;
        let fail = self.fail_after.is_some_and(|at| from >= at);
        let count = plan.fetch();
        async move {
            tokio::task::yield_now().await;
            if fail {
                return Err(format!("page after {from} failed"));
            }
            Ok((from + 1..=rows).take(count as usize).collect())
        }
    }
}

fn key(id: &i64) -> Vec<KeyValue> {
    vec![KeyValue::Int(*id)]
}

#[tokio::test]
async fn every_row_comes_once_at_every_page_size() {
    for rows in [0, 1, 9, 10, 11, 1000] {
        for page in [1, 3, 10, 100, 5000] {
            let table = Table {
                rows,
                ..Table::default()
            };
            let source = table.clone();
            let all: Vec<i64> = by_id()
                .stream(page, move |plan| source.fetch(plan), key)
                .map(Result::unwrap)
                .collect()
                .await;
            assert_eq!(
                all,
                (1..=rows).collect::<Vec<_>>(),
                "{rows} rows, pages of {page}"
            );
            let pages = table.fetched.lock().unwrap().len();
            // One extra row per query tells whether another page follows: no empty last query.
            let expected = (rows as usize).div_ceil(page).max(1);
            assert_eq!(pages, expected, "{rows} rows, pages of {page}");
        }
    }
}

#[tokio::test]
async fn the_next_page_is_fetched_while_this_one_is_consumed_and_no_further() {
    let table = Table {
        rows: 100,
        ..Table::default()
    };
    let source = table.clone();
    let mut stream = pin!(by_id().stream(10, move |plan| source.fetch(plan), key));
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    // Poll until the first row arrives.
    let mut polls = 0;
    let first = loop {
        if let Poll::Ready(row) = stream.as_mut().poll_next(&mut cx) {
            break row;
        }
        polls += 1;
        assert!(polls < 10_000, "the first page never arrived");
    };
    assert_eq!(first.unwrap().unwrap(), 1);
    // The second page's query started as soon as the first page arrived.
    assert_eq!(*table.fetched.lock().unwrap(), [0, 10]);
    // A consumer that takes the rest of page 1 and stops there: page 3 is not fetched.
    for expected in 2..=10 {
        let Poll::Ready(Some(Ok(row))) = stream.as_mut().poll_next(&mut cx) else {
            panic!("row {expected} was buffered");
        };
        assert_eq!(row, expected);
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        *table.fetched.lock().unwrap(),
        [0, 10],
        "one page ahead at most"
    );
}

#[tokio::test]
async fn a_failing_page_ends_the_stream_after_the_rows_before_it() {
    let table = Table {
        rows: 100,
        fail_after: Some(20),
        ..Table::default()
    };
    let source = table.clone();
    let results: Vec<Result<i64, Error>> = by_id()
        .stream(10, move |plan| source.fetch(plan), key)
        .collect()
        .await;
    assert_eq!(results.len(), 21);
    assert!(results[..20].iter().all(Result::is_ok));
    match &results[20] {
        Err(Error::Fetch { rows: 20, source }) => {
            assert_eq!(source.to_string(), "page after 20 failed")
        }
        other => panic!("expected the page's error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_send_and_runs_on_spawned_tasks() {
    let table = Table {
        rows: 5000,
        ..Table::default()
    };
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let stream = by_id().stream(100, move |plan| table.fetch(plan), key);
    let handle = tokio::spawn(async move {
        let mut stream = pin!(stream);
        let mut sum = 0;
        while let Some(row) = stream.next().await {
            sum += row.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
        }
        sum
    });
    assert_eq!(handle.await.unwrap(), 5000 * 5001 / 2);
    assert_eq!(pulled.load(Ordering::Relaxed), 5000);
}

/// A key closure that does not fit the keyset (another number of values, NULL in a NOT NULL
/// column) or does not move forward: the stream ends with an error after the first page, never
/// cleanly (an export would be cut short without anyone knowing).
#[tokio::test]
async fn a_key_that_does_not_fit_the_keyset_ends_the_stream_with_an_error() {
    type Key = fn(&i64) -> Vec<KeyValue>;
    let bad_keys: [(&str, Key, usize); 4] = [
        ("no values", |_| Vec::new(), 10),
        (
            "two values for one column",
            |id| vec![KeyValue::Int(*id), KeyValue::Int(0)],
            10,
        ),
        ("NULL in a NOT NULL column", |_| vec![KeyValue::Null], 10),
        // Fits, but never moves: the first page comes back, and its key is the one it was
        // fetched after.
        (
            "a key that does not advance",
            |_| vec![KeyValue::Int(0)],
            20,
        ),
    ];
    for (what, bad, before) in bad_keys {
        let table = Table {
            rows: 25,
            ..Table::default()
        };
        let source = table.clone();
        let results: Vec<_> = by_id()
            .stream(10, move |plan| source.fetch(plan), bad)
            .take(30)
            .collect()
            .await;
        let rows = results.iter().take_while(|r| r.is_ok()).count();
        assert_eq!(rows, before, "{what}: the rows fetched, then the error");
        assert_eq!(
            results.len(),
            rows + 1,
            "{what}: the stream ends with an error"
        );
        let error = results[rows].as_ref().unwrap_err();
        assert!(matches!(error, Error::SortKey { .. }), "{what}: {error:?}");
        assert!(
            !error.is_client_error(),
            "a bug in the server's key, not the client's"
        );
    }
}
