//! Keyset paging against a model, on real SQLite and PostgreSQL: every sort of up to two
//! columns (nullable or not, ascending or descending, NULLs first or last) plus a unique
//! tiebreak, over a table full of ties and NULLs, paged forward and back at several page
//! sizes. No row may be lost or repeated, and the pages must match the model's order.
#![allow(missing_docs, reason = "diesel's `table!` makes undocumented items")]

use std::cmp::Ordering;

use brisk_stream::{
    Cursors, Direction, Error, KeyValue, Keyset, Nulls, Page, Placeholders, Plan, SortOrder,
    diesel::{bind_all, filter, order},
};
use diesel::{Connection, QueryableByName, RunQueryDsl as _, prelude::*, sqlite::SqliteConnection};

diesel::table! {
    items (id) {
        id -> BigInt,
        a -> Nullable<Integer>,
        b -> Nullable<Text>,
        c -> Integer,
    }
}

#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName)]
#[diesel(table_name = items)]
struct Row {
    id: i64,
    a: Option<i32>,
    b: Option<String>,
    c: i32,
}

/// 40 rows with many ties and NULLs in `a`, `b` and `c`.
fn rows() -> Vec<Row> {
    (1..=40)
        .map(|id: i64| Row {
            id: id * 3 % 41, // ids not in insertion order
            a: [None, Some(1), Some(2), Some(2), Some(3)][(id % 5) as usize],
            b: [None, Some("x"), Some("y")][(id % 3) as usize].map(str::to_owned),
            c: (id % 2) as i32,
        })
        .collect()
}

const CREATE: &str =
    "CREATE TABLE items (id BIGINT PRIMARY KEY, a INTEGER, b TEXT, c INTEGER NOT NULL)";

fn inserts() -> String {
    let value = |v: Option<String>| v.unwrap_or_else(|| "NULL".to_owned());
    let values: Vec<String> = rows()
        .into_iter()
        .map(|r| {
            format!(
                "({}, {}, {}, {})",
                r.id,
                value(r.a.map(|a| a.to_string())),
                value(r.b.map(|b| format!("'{b}'"))),
                r.c
            )
        })
        .collect();
    format!(
        "INSERT INTO items (id, a, b, c) VALUES {}",
        values.join(", ")
    )
}

#[derive(Debug, Clone, Copy)]
enum Col {
    A,
    B,
    C,
}

#[derive(Debug, Clone)]
struct Spec {
    sort: Vec<(Col, SortOrder, Nulls)>,
    id: SortOrder,
}

/// Every sort of zero, one or two of `a`, `b`, `c`, each way, NULLs first and last (`c` is
/// NOT NULL), followed by `id` either way.
fn specs() -> Vec<Spec> {
    let mut choices = Vec::new();
    for col in [Col::A, Col::B, Col::C] {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            for nulls in [Nulls::First, Nulls::Last] {
                if matches!(col, Col::C) && nulls == Nulls::Last {
                    continue;
                }
                choices.push((col, order, nulls));
            }
        }
    }
    let mut sorts = vec![vec![]];
    for first in &choices {
        sorts.push(vec![*first]);
        for second in &choices {
            if std::mem::discriminant(&first.0) != std::mem::discriminant(&second.0) {
                sorts.push(vec![*first, *second]);
            }
        }
    }
    sorts
        .into_iter()
        .flat_map(|sort| {
            [SortOrder::Asc, SortOrder::Desc].map(|id| Spec {
                sort: sort.clone(),
                id,
            })
        })
        .collect()
}

fn keyset(spec: &Spec) -> Keyset {
    let mut builder = Keyset::builder().max_limit(50);
    for (col, order, nulls) in &spec.sort {
        builder = match col {
            Col::A => builder.nullable_column("a", *order, *nulls),
            Col::B => builder.nullable_column("b", *order, *nulls),
            Col::C => builder.column("c", *order),
        };
    }
    builder.unique_column("id", spec.id).build().unwrap()
}

fn key(spec: &Spec, row: &Row) -> Vec<KeyValue> {
    let mut key: Vec<KeyValue> = spec
        .sort
        .iter()
        .map(|(col, _, _)| match col {
            Col::A => row.a.into(),
            Col::B => row.b.clone().into(),
            Col::C => row.c.into(),
        })
        .collect();
    key.push(row.id.into());
    key
}

/// The model: the order the spec describes, computed in Rust.
fn model(spec: &Spec) -> Vec<i64> {
    fn compare<T: Ord>(x: Option<T>, y: Option<T>, order: SortOrder, nulls: Nulls) -> Ordering {
        match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => match nulls {
                Nulls::First => Ordering::Less,
                Nulls::Last => Ordering::Greater,
            },
            (Some(_), None) => match nulls {
                Nulls::First => Ordering::Greater,
                Nulls::Last => Ordering::Less,
            },
            (Some(x), Some(y)) => match order {
                SortOrder::Asc => x.cmp(&y),
                SortOrder::Desc => y.cmp(&x),
            },
        }
    }
    let mut rows = rows();
    rows.sort_by(|x, y| {
        for (col, order, nulls) in &spec.sort {
            let ordering = match col {
                Col::A => compare(x.a, y.a, *order, *nulls),
                Col::B => compare(x.b.as_ref(), y.b.as_ref(), *order, *nulls),
                Col::C => compare(Some(x.c), Some(y.c), *order, *nulls),
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        compare(Some(x.id), Some(y.id), spec.id, Nulls::Last)
    });
    rows.into_iter().map(|r| r.id).collect()
}

fn ids(page: &Page<Row>) -> Vec<i64> {
    page.items.iter().map(|r| r.id).collect()
}

/// Pages through every spec at several sizes with `fetch` running a plan; checks each walk.
async fn walk_every_spec<F>(mut fetch: F)
where
    F: AsyncFnMut(&Plan) -> Vec<Row>,
{
    let cursors = Cursors::builder().key(1, [5u8; 32]).build().unwrap();
    let specs = specs();
    assert_eq!(specs.len(), 2 * (1 + 10 + 64));
    for spec in &specs {
        let keyset = keyset(spec);
        let scope = keyset.scope();
        let expected = model(spec);
        for size in [1, 3, 7, 40, 50] {
            let context = format!("{spec:?}, pages of {size}");
            // Forward from the start.
            let mut pages: Vec<Page<Row>> = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let plan = keyset
                    .page_at(&cursors, &scope, cursor.as_deref(), Some(size))
                    .unwrap();
                let page = plan
                    .page(fetch(&plan).await, |r| key(spec, r), &cursors, &scope)
                    .unwrap();
                assert!(page.items.len() <= size, "{context}");
                assert_eq!(page.prev.is_some(), !pages.is_empty(), "{context}");
                cursor = page.next.clone();
                pages.push(page);
                if cursor.is_none() {
                    break;
                }
                assert!(pages.len() <= 40, "{context}: paging does not end");
            }
            let seen: Vec<i64> = pages.iter().flat_map(ids).collect();
            assert_eq!(seen, expected, "forward: {context}");
            assert!(!pages.last().unwrap().has_more);

            // Back from the last page to the first: the same pages, in reverse.
            let mut back = pages.last().unwrap().prev.clone();
            for (index, forward) in pages.iter().enumerate().rev().skip(1) {
                let text = back.expect("a page before");
                let plan = keyset
                    .page_at(&cursors, &scope, Some(&text), Some(size))
                    .unwrap();
                assert_eq!(plan.direction(), Direction::Before);
                let page = plan
                    .page(fetch(&plan).await, |r| key(spec, r), &cursors, &scope)
                    .unwrap();
                assert_eq!(
                    ids(&page),
                    ids(forward),
                    "backward to page {index}: {context}"
                );
                assert_eq!(page.has_more, index > 0, "{context}");
                assert_eq!(page.prev.is_some(), index > 0, "{context}");
                // And forward again from a page reached backwards.
                let plan = keyset
                    .page_at(&cursors, &scope, page.next.as_deref(), Some(size))
                    .unwrap();
                let again = plan
                    .page(fetch(&plan).await, |r| key(spec, r), &cursors, &scope)
                    .unwrap();
                assert_eq!(ids(&again), ids(&pages[index + 1]), "{context}");
                back = page.prev;
            }
        }
    }
}

fn sqlite() -> SqliteConnection {
    let mut connection = SqliteConnection::establish(":memory:").unwrap();
    diesel::sql_query(CREATE).execute(&mut connection).unwrap();
    diesel::sql_query(inserts())
        .execute(&mut connection)
        .unwrap();
    connection
}

fn query_builder(plan: &Plan) -> items::BoxedQuery<'static, diesel::sqlite::Sqlite> {
    items::table
        .filter(filter(plan))
        .order(order(plan))
        .limit(plan.fetch())
        .into_boxed()
}

#[tokio::test]
async fn sqlite_pages_every_sort_without_losing_or_repeating_a_row() {
    let mut connection = sqlite();
    // The database's own order for a spec agrees with the model's.
    for spec in specs() {
        let plan = keyset(&spec).first_page(Some(50)).unwrap();
        let all: Vec<Row> = query_builder(&plan).load(&mut connection).unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            model(&spec),
            "{spec:?}"
        );
    }
    walk_every_spec(async |plan: &Plan| query_builder(plan).load(&mut connection).unwrap()).await;
}

#[tokio::test]
async fn sqlite_raw_sql_pages_the_same() {
    let mut connection = sqlite();
    walk_every_spec(async |plan: &Plan| {
        let (condition, values) = plan.sql_where(Placeholders::Question, 1);
        let sql = format!(
            "SELECT id, a, b, c FROM items WHERE {condition} ORDER BY {} LIMIT {}",
            plan.order_by(),
            plan.fetch()
        );
        bind_all(diesel::sql_query(sql).into_boxed(), values)
            .load(&mut connection)
            .unwrap()
    })
    .await;
}

#[tokio::test]
async fn sqlite_streams_every_row_of_every_sort() {
    use futures_util::StreamExt;
    let connection = std::sync::Arc::new(std::sync::Mutex::new(sqlite()));
    for spec in specs() {
        for page_size in [1, 4, 100] {
            let connection = connection.clone();
            let rows: Vec<Row> = keyset(&spec)
                .stream(
                    page_size,
                    move |plan| {
                        let mut connection = connection.lock().unwrap();
                        std::future::ready(query_builder(&plan).load::<Row>(&mut *connection))
                    },
                    |row| key(&spec, row),
                )
                .map(Result::unwrap)
                .collect()
                .await;
            assert_eq!(
                rows.iter().map(|r| r.id).collect::<Vec<_>>(),
                model(&spec),
                "{spec:?}, pages of {page_size}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_pages_every_sort_without_losing_or_repeating_a_row() {
    use diesel_async::{
        AsyncConnection, AsyncPgConnection, RunQueryDsl as Async, SimpleAsyncConnection,
    };
    let mut server = brisk_testkit::PostgresServer::start().unwrap();
    let url = server.create_database("keyset").unwrap();
    let mut connection = AsyncPgConnection::establish(&url).await.unwrap();
    connection
        .batch_execute(&format!("{CREATE}; {}", inserts()))
        .await
        .unwrap();
    for spec in specs() {
        let plan = keyset(&spec).first_page(Some(50)).unwrap();
        let all: Vec<Row> = Async::load(
            items::table
                .filter(filter(&plan))
                .order(order(&plan))
                .limit(plan.fetch()),
            &mut connection,
        )
        .await
        .unwrap();
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            model(&spec),
            "{spec:?}"
        );
    }
    walk_every_spec(async |plan: &Plan| {
        Async::load(
            items::table
                .filter(filter(plan))
                .order(order(plan))
                .limit(plan.fetch()),
            &mut connection,
        )
        .await
        .unwrap()
    })
    .await;
    // The prefetching stream, one shared connection.
    let shared = std::sync::Arc::new(tokio::sync::Mutex::new(connection));
    for spec in specs().into_iter().step_by(3) {
        use futures_util::StreamExt;
        let fetching = shared.clone();
        let rows: Vec<Row> = keyset(&spec)
            .stream(
                6,
                move |plan| {
                    let connection = fetching.clone();
                    async move {
                        let mut connection = connection.lock().await;
                        Async::load(
                            items::table
                                .filter(filter(&plan))
                                .order(order(&plan))
                                .limit(plan.fetch()),
                            &mut *connection,
                        )
                        .await
                    }
                },
                |row| key(&spec, row),
            )
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            model(&spec),
            "{spec:?}"
        );
    }
    let mut connection = std::sync::Arc::try_unwrap(shared)
        .ok()
        .unwrap()
        .into_inner();
    // Raw SQL with numbered placeholders, on one sort of each shape.
    for spec in specs().into_iter().step_by(7) {
        let keyset = keyset(&spec);
        let plan = keyset.first_page(Some(5)).unwrap();
        let cursors = Cursors::builder().key(1, [5u8; 32]).build().unwrap();
        let first: Vec<Row> = Async::load(
            items::table
                .filter(filter(&plan))
                .order(order(&plan))
                .limit(plan.fetch()),
            &mut connection,
        )
        .await
        .unwrap();
        let page = plan
            .page(first, |r| key(&spec, r), &cursors, &keyset.scope())
            .unwrap();
        let plan = keyset
            .page_at(&cursors, &keyset.scope(), page.next.as_deref(), Some(5))
            .unwrap();
        let (condition, values) = plan.sql_where(Placeholders::Dollar, 1);
        let sql = format!(
            "SELECT id, a, b, c FROM items WHERE {condition} ORDER BY {} LIMIT {}",
            plan.order_by(),
            plan.fetch()
        );
        let rows: Vec<Row> = Async::load(
            bind_all(diesel::sql_query(sql).into_boxed(), values),
            &mut connection,
        )
        .await
        .unwrap();
        assert_eq!(
            rows.iter().take(5).map(|r| r.id).collect::<Vec<_>>(),
            model(&spec)[5..10],
            "{spec:?}"
        );
    }
}

#[test]
fn predicates_take_the_shape_the_sort_allows() {
    let plan = |keyset: &Keyset, key: Vec<KeyValue>| {
        keyset
            .plan(Some(brisk_stream::Cursor::after(key)), None)
            .unwrap()
            .sql_where(Placeholders::Dollar, 1)
    };
    // All NOT NULL, one direction: a row-value comparison.
    let same = Keyset::builder()
        .column("created_at", SortOrder::Desc)
        .unique_column("id", SortOrder::Desc)
        .build()
        .unwrap();
    let (sql, values) = plan(&same, vec![100.into(), 7.into()]);
    assert_eq!(sql, "((created_at, id) < ($1, $2))");
    assert_eq!(values, [KeyValue::Int(100), KeyValue::Int(7)]);
    // Mixed directions: the expanded form, led by a range on the first column.
    let mixed = Keyset::builder()
        .column("price", SortOrder::Desc)
        .unique_column("id", SortOrder::Asc)
        .build()
        .unwrap();
    let (sql, _) = plan(&mixed, vec![500.into(), 7.into()]);
    assert_eq!(
        sql,
        "(price <= $1 AND (price < $2 OR (price = $3 AND (id > $4))))"
    );
    // A nullable column sorted NULLS LAST, at a NULL: only later NULLs by id follow.
    let nullable = Keyset::builder()
        .nullable_column("shipped_at", SortOrder::Asc, Nulls::Last)
        .cast("timestamptz")
        .unique_column("id", SortOrder::Asc)
        .build()
        .unwrap();
    let (sql, values) = plan(&nullable, vec![KeyValue::Null, 7.into()]);
    assert_eq!(sql, "(((shipped_at IS NULL AND (id > $1))))");
    assert_eq!(values, [KeyValue::Int(7)]);
    let (sql, _) = plan(&nullable, vec!["2026-01-01T00:00:00Z".into(), 7.into()]);
    assert_eq!(
        sql,
        "(((shipped_at > CAST($1 AS timestamptz) OR shipped_at IS NULL) OR (shipped_at = CAST($2 AS timestamptz) AND (id > $3))))"
    );
}

#[test]
fn a_sort_without_a_unique_last_column_or_with_bad_names_is_refused() {
    let setting = |result: Result<Keyset, Error>| match result {
        Err(Error::Config { setting, .. }) => setting,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(
        setting(Keyset::builder().column("a", SortOrder::Asc).build()),
        "unique_column"
    );
    assert_eq!(
        setting(
            Keyset::builder()
                .unique_column("id", SortOrder::Asc)
                .column("a", SortOrder::Asc)
                .build()
        ),
        "column"
    );
    assert_eq!(
        setting(
            Keyset::builder()
                .column("a; DROP TABLE users", SortOrder::Asc)
                .unique_column("id", SortOrder::Asc)
                .build()
        ),
        "column"
    );
    assert_eq!(
        setting(
            Keyset::builder()
                .unique_column("id", SortOrder::Asc)
                .cast("int); --")
                .build()
        ),
        "cast"
    );
    assert_eq!(
        setting(
            Keyset::builder()
                .unique_column("id", SortOrder::Asc)
                .default_limit(500)
                .build()
        ),
        "default_limit"
    );
    let keyset = Keyset::builder()
        .unique_column("items.id", SortOrder::Asc)
        .max_limit(100)
        .build()
        .unwrap();
    assert_eq!(keyset.limit(None), 20);
    assert_eq!(keyset.limit(Some(0)), 1);
    assert_eq!(
        keyset.limit(Some(10_000)),
        100,
        "a client's limit is capped"
    );
}

#[test]
fn a_cursor_for_another_sort_is_refused() {
    let cursors = Cursors::builder().key(1, [5u8; 32]).build().unwrap();
    let by_id = Keyset::builder()
        .unique_column("id", SortOrder::Asc)
        .build()
        .unwrap();
    let by_id_desc = Keyset::builder()
        .unique_column("id", SortOrder::Desc)
        .build()
        .unwrap();
    let text = cursors
        .encode(
            &by_id.scope(),
            &brisk_stream::Cursor::after(vec![KeyValue::Int(3)]),
        )
        .unwrap();
    assert!(
        by_id
            .page_at(&cursors, &by_id.scope(), Some(&text), None)
            .is_ok()
    );
    assert!(matches!(
        by_id_desc.page_at(&cursors, &by_id_desc.scope(), Some(&text), None),
        Err(Error::InvalidCursor { .. })
    ));
    // A key of the wrong shape, even signed for this scope, is the wrong query.
    let text = cursors
        .encode(
            &by_id.scope(),
            &brisk_stream::Cursor::after(vec![KeyValue::Null]),
        )
        .unwrap();
    assert!(matches!(
        by_id.page_at(&cursors, &by_id.scope(), Some(&text), None),
        Err(Error::InvalidCursor { .. })
    ));
}

#[test]
fn offset_pages_cover_the_table_and_refuse_deep_or_zero_pages() {
    use brisk_stream::OffsetPaging;
    let mut connection = sqlite();
    let spec = &specs()[25];
    let order_by = keyset(spec).first_page(None).unwrap().order_by().to_owned();
    let paging = OffsetPaging::builder()
        .default_limit(5)
        .max_limit(7)
        .max_offset(35)
        .build()
        .unwrap();
    let total: i64 = items::table.count().get_result(&mut connection).unwrap();
    let mut seen = Vec::new();
    for number in 1.. {
        let plan = paging.page(Some(number), Some(1000)).unwrap();
        assert_eq!(plan.limit(), 7, "a client's limit is capped");
        let rows: Vec<Row> = items::table
            .order(diesel::dsl::sql::<diesel::sql_types::Bool>(&order_by))
            .limit(plan.fetch())
            .offset(plan.offset())
            .load(&mut connection)
            .unwrap();
        let page = plan.page(rows, Some(total as u64));
        assert_eq!(page.page, number);
        seen.extend(page.items.iter().map(|r| r.id));
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen, model(spec));
    assert!(matches!(
        paging.page(Some(0), None),
        Err(Error::InvalidPage { .. })
    ));
    // Page 7 of 7 starts at 42, beyond the 35 this listing serves.
    let deep = paging.page(Some(7), Some(7)).unwrap_err();
    assert!(
        deep.is_client_error() && deep.to_string().contains("deeper"),
        "{deep}"
    );
    assert!(matches!(
        OffsetPaging::builder().default_limit(200).build(),
        Err(Error::Config {
            setting: "default_limit",
            ..
        })
    ));
}

#[tokio::test]
async fn pages_served_are_counted() {
    use futures_util::StreamExt;
    let registry = brisk_metrics::Registry::new();
    let keyset = Keyset::builder()
        .unique_column("id", SortOrder::Asc)
        .metrics(&registry, "items")
        .build()
        .unwrap();
    let cursors = Cursors::builder().key(1, [5u8; 32]).build().unwrap();
    let mut connection = sqlite();
    let plan = keyset.first_page(Some(10)).unwrap();
    let rows: Vec<Row> = query_builder(&plan).load(&mut connection).unwrap();
    plan.page(rows, |r| vec![r.id.into()], &cursors, &keyset.scope())
        .unwrap();
    let connection = std::sync::Arc::new(std::sync::Mutex::new(connection));
    let streamed = keyset
        .stream(
            15,
            move |plan| {
                let mut connection = connection.lock().unwrap();
                std::future::ready(query_builder(&plan).load::<Row>(&mut *connection))
            },
            |r: &Row| vec![r.id.into()],
        )
        .count()
        .await;
    assert_eq!(streamed, 40);
    let text = registry.snapshot().to_prometheus();
    // One page served, then three streamed (15 + 15 + 10).
    assert!(
        text.contains("brisk_stream_pages_total{name=\"items\"} 4"),
        "{text}"
    );
}

#[test]
fn chosen_fields_select_only_their_columns() {
    use brisk_stream::Fields;
    #[derive(Debug, QueryableByName, serde::Serialize)]
    struct Item {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
        a: Option<i32>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        b: Option<String>,
    }
    const OFFERED: &[&str] = &["id", "a", "b"];
    let mut connection = sqlite();
    // `?fields=id,b`: `a` is neither read nor sent by the database, nor written out.
    let fields = Fields::parse("id,b", OFFERED).unwrap();
    assert_eq!(fields.sql_columns(), "id, NULL AS a, b");
    let sql = format!(
        "SELECT {} FROM items WHERE b IS NOT NULL AND a IS NOT NULL ORDER BY id LIMIT 1",
        fields.sql_columns()
    );
    let rows: Vec<Item> = diesel::sql_query(sql).load(&mut connection).unwrap();
    assert_eq!(rows[0].a, None, "not selected");
    assert!(rows[0].b.is_some());
    let json = serde_json::to_string(&fields.select(&rows[0])).unwrap();
    assert!(
        json.starts_with(r#"{"id":"#) && json.contains(r#""b":"#) && !json.contains(r#""a""#),
        "{json}"
    );
    // A name that is not a plain identifier is quoted, never spliced.
    let odd = Fields::all(&["id", "a\"; DROP TABLE items; --"]);
    assert_eq!(odd.sql_columns(), r#"id, "a""; DROP TABLE items; --""#);
}

/// A key closure that gives a key that cannot be a position (another number of values, NULL in
/// a NOT NULL column, or the very cursor the page was fetched after) fails the page, rather
/// than issuing a cursor the next request refuses (or one that fetches the same page forever).
#[test]
fn a_page_whose_key_does_not_fit_is_an_error() {
    let keyset = Keyset::builder()
        .column("price", SortOrder::Asc)
        .unique_column("id", SortOrder::Asc)
        .build()
        .unwrap();
    let cursors = Cursors::builder().key(1, [5u8; 32]).build().unwrap();
    let scope = keyset.scope();
    let rows = || (1..=11).collect::<Vec<i64>>();
    let first = keyset.first_page(Some(10)).unwrap();
    let good = first
        .page(
            rows(),
            |id| vec![100.into(), (*id).into()],
            &cursors,
            &scope,
        )
        .unwrap();
    assert!(good.next.is_some());
    type Key = fn(&i64) -> Vec<KeyValue>;
    let bad_keys: [(&str, Key); 3] = [
        ("one value for two columns", |id| vec![(*id).into()]),
        ("three values", |id| vec![1.into(), (*id).into(), 0.into()]),
        ("NULL in a NOT NULL column", |id| {
            vec![KeyValue::Null, (*id).into()]
        }),
    ];
    for (what, bad) in bad_keys {
        let error = first.page(rows(), bad, &cursors, &scope).unwrap_err();
        assert!(
            error.to_string().starts_with("a row's sort key"),
            "{what}: {error}"
        );
        assert!(!error.is_client_error(), "{what}");
    }
    // After the cursor at (100, 5), a key that is (100, 5) again would come back here forever.
    let after = keyset
        .page_at(&cursors, &scope, good.next.as_deref(), Some(10))
        .unwrap();
    let stuck = after.page(rows(), |_| vec![100.into(), 10.into()], &cursors, &scope);
    assert!(
        matches!(&stuck, Err(error) if error.to_string().starts_with("a row's sort key")),
        "{stuck:?}"
    );
}
