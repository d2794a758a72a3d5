//! The encoders over row streams: documents that parse, chunks of bounded size, rows sent as
//! soon as the source stalls, and failures that never look like a clean end.

use std::{
    collections::{BTreeMap, HashMap},
    pin::pin,
    task::{Context, Poll},
};

use brisk_stream::{Encoder, Error, Fields};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: i64,
    customer: String,
    total: f64,
    note: Option<String>,
}

fn order(id: i64) -> Order {
    Order {
        id,
        customer: format!("customer \"{id}\", of Zürich\nline two"),
        total: id as f64 * 1.25,
        note: (id % 3 == 0).then(|| "gift".to_owned()),
    }
}

type Rows = Vec<Result<Order, std::io::Error>>;

fn ok_rows(n: i64) -> Rows {
    (0..n).map(|id| Ok(order(id))).collect()
}

/// Every item the encoded stream yields.
async fn drain<S: Stream<Item = Result<Bytes, Error>>>(encoded: S) -> Vec<Result<Bytes, Error>> {
    encoded.collect().await
}

/// The bytes of the chunks before the first error, and the error.
fn split(items: Vec<Result<Bytes, Error>>) -> (Vec<Bytes>, Option<Error>) {
    let mut chunks = Vec::new();
    let mut failure = None;
    let mut items = items.into_iter();
    for item in items.by_ref() {
        match item {
            Ok(chunk) => chunks.push(chunk),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    assert!(items.next().is_none(), "nothing follows the error");
    (chunks, failure)
}

fn concat(chunks: &[Bytes]) -> Vec<u8> {
    chunks
        .iter()
        .flat_map(|chunk| chunk.iter().copied())
        .collect()
}

fn encoder(chunk_size: usize) -> Encoder {
    Encoder::builder().chunk_size(chunk_size).build().unwrap()
}

#[tokio::test]
async fn a_json_array_of_many_rows_parses_back_and_comes_in_full_chunks() {
    let items = drain(encoder(16 * 1024).json_array(stream::iter(ok_rows(10_000)))).await;
    let (chunks, failure) = split(items);
    assert!(failure.is_none());
    let body = concat(&chunks);
    let back: Vec<Order> = serde_json::from_slice(&body).unwrap();
    assert_eq!(back, (0..10_000).map(order).collect::<Vec<_>>());
    assert!(chunks.iter().all(|chunk| chunk.len() <= 16 * 1024));
    // A source that is always ready fills every chunk but the last up to the row that would
    // not fit: batched, not per row.
    let row = body.len() / 10_000;
    let (last, full) = chunks.split_last().unwrap();
    assert!(
        full.iter().all(|chunk| chunk.len() > 16 * 1024 - 4 * row),
        "{:?}",
        chunks.iter().map(Bytes::len).collect::<Vec<_>>()
    );
    assert!(!last.is_empty());
}

#[tokio::test]
async fn empty_streams_are_complete_documents() {
    let none = || stream::iter(Rows::new());
    let whole = |items| concat(&split(items).0);
    assert_eq!(
        whole(drain(Encoder::default().json_array(none())).await),
        b"[]"
    );
    assert_eq!(
        whole(drain(Encoder::default().json_envelope(none(), "data", |_| ())).await),
        br#"{"data":[]}"#
    );
    assert_eq!(whole(drain(Encoder::default().ndjson(none())).await), b"");
    assert_eq!(whole(drain(Encoder::default().csv(none())).await), b"");
}

#[tokio::test]
async fn an_envelope_carries_a_trailer_read_from_the_stream() {
    #[derive(Serialize)]
    struct Trailer {
        next: Option<String>,
        has_more: bool,
    }
    let rows = stream::iter(ok_rows(2));
    let encoded = Encoder::default().json_envelope(rows, "data", |rows| Trailer {
        // The row stream is there to read from: here, whether it ran dry.
        next: (rows.size_hint().1 != Some(0)).then(|| "more".to_owned()),
        has_more: false,
    });
    let body = concat(&split(drain(encoded).await).0);
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(value["data"].as_array().unwrap().len(), 2);
    assert_eq!(value["next"], serde_json::Value::Null);
    assert_eq!(value["has_more"], false);
    assert!(
        body.starts_with(br#"{"data":[{"id":0"#),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // A trailer that is not an object fails the body rather than writing bad JSON.
    let encoded = Encoder::default().json_envelope(stream::iter(ok_rows(1)), "data", |_| 42);
    let (chunks, failure) = split(drain(encoded).await);
    assert!(matches!(failure, Some(Error::Encode { .. })), "{failure:?}");
    assert!(serde_json::from_slice::<serde_json::Value>(&concat(&chunks)).is_err());
}

fn failing_after(n: i64) -> impl Stream<Item = Result<Order, std::io::Error>> {
    stream::iter(ok_rows(n)).chain(stream::iter([
        Err(std::io::Error::other("connection reset by peer")),
        Ok(order(999)),
    ]))
}

#[tokio::test]
async fn a_failing_source_ends_a_json_body_with_an_error_not_a_clean_end() {
    for chunk_size in [64, 32 * 1024] {
        let (chunks, failure) =
            split(drain(encoder(chunk_size).json_array(failing_after(50))).await);
        match failure {
            Some(Error::Source { rows: 50, source }) => {
                assert_eq!(source.to_string(), "connection reset by peer")
            }
            other => panic!("expected the source's error, got {other:?}"),
        }
        let body = concat(&chunks);
        // Every row before the failure was sent, and the document is visibly incomplete.
        assert!(serde_json::from_slice::<Vec<Order>>(&body).is_err());
        let mut whole = body.clone();
        whole.push(b']');
        assert_eq!(
            serde_json::from_slice::<Vec<Order>>(&whole).unwrap(),
            (0..50).map(order).collect::<Vec<_>>()
        );
    }
}

#[tokio::test]
async fn ndjson_writes_an_error_record_before_it_aborts() {
    let (chunks, failure) = split(drain(Encoder::default().ndjson(failing_after(3))).await);
    assert!(matches!(failure, Some(Error::Source { rows: 3, .. })));
    let body = String::from_utf8(concat(&chunks)).unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 4);
    for (id, line) in lines[..3].iter().enumerate() {
        assert_eq!(
            serde_json::from_str::<Order>(line).unwrap(),
            order(id as i64)
        );
    }
    assert_eq!(lines[3], r#"{"error":"row stream failed","rows":3}"#);
    assert!(
        !lines[3].contains("connection reset"),
        "server details stay on the server"
    );
}

#[tokio::test]
async fn csv_stops_at_the_last_complete_line() {
    let (chunks, failure) = split(drain(Encoder::default().csv(failing_after(2))).await);
    assert!(matches!(failure, Some(Error::Source { rows: 2, .. })));
    let body = concat(&chunks);
    assert!(body.ends_with(b"\n"));
    let mut reader = csv::Reader::from_reader(&body[..]);
    let back: Vec<Order> = reader.deserialize().map(Result::unwrap).collect();
    assert_eq!(back, vec![order(0), order(1)]);
}

#[tokio::test]
async fn a_row_that_cannot_be_encoded_leaves_nothing_half_written() {
    // JSON object keys must be strings: the third row cannot be written.
    let rows = || {
        stream::iter([HashMap::new(), HashMap::new(), HashMap::from([((1, 2), 3)])])
            .map(Ok::<HashMap<(i32, i32), i32>, std::io::Error>)
    };
    let (chunks, failure) = split(drain(Encoder::default().json_array(rows())).await);
    assert!(matches!(failure, Some(Error::Encode { .. })), "{failure:?}");
    assert_eq!(concat(&chunks), b"[{},{}");

    let (chunks, failure) = split(drain(Encoder::default().ndjson(rows())).await);
    assert!(matches!(failure, Some(Error::Encode { .. })));
    assert_eq!(
        String::from_utf8(concat(&chunks)).unwrap(),
        "{}\n{}\n{\"error\":\"a row could not be encoded\",\"rows\":2}\n"
    );

    // CSV rows are flat: a nested value cannot be a cell.
    #[derive(Clone, Serialize)]
    struct Nested {
        id: i64,
        tags: Vec<String>,
    }
    let rows = vec![Ok::<_, std::io::Error>(Nested {
        id: 1,
        tags: vec!["a".into()],
    })];
    let (chunks, failure) = split(drain(Encoder::default().csv(stream::iter(rows))).await);
    assert!(matches!(failure, Some(Error::Encode { .. })), "{failure:?}");
    assert!(concat(&chunks).is_empty());
}

#[tokio::test]
async fn rows_leave_as_soon_as_the_source_stalls() {
    let (sender, receiver) =
        tokio::sync::mpsc::unbounded_channel::<Result<Order, std::io::Error>>();
    let rows = tokio_stream(receiver);
    let mut encoded = pin!(Encoder::default().ndjson(rows));
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(encoded.as_mut().poll_next(&mut cx).is_pending());
    sender.send(Ok(order(1))).unwrap();
    sender.send(Ok(order(2))).unwrap();
    // Two rows ready, then nothing: both go out in one chunk now, without waiting for more.
    let Poll::Ready(Some(Ok(chunk))) = encoded.as_mut().poll_next(&mut cx) else {
        panic!("the ready rows were held back");
    };
    assert_eq!(chunk.iter().filter(|b| **b == b'\n').count(), 2);
    assert!(encoded.as_mut().poll_next(&mut cx).is_pending());
    drop(sender);
    assert!(matches!(
        encoded.as_mut().poll_next(&mut cx),
        Poll::Ready(None)
    ));
}

/// A receiver as a stream (tokio-stream's wrapper, without the dependency).
fn tokio_stream<T>(mut receiver: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> {
    stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[tokio::test]
async fn a_row_larger_than_a_chunk_is_cut_into_chunks() {
    let big = Order {
        note: Some("x".repeat(100_000)),
        ..order(1)
    };
    let rows = stream::iter([
        Ok::<_, std::io::Error>(order(0)),
        Ok(big.clone()),
        Ok(order(2)),
    ]);
    let (chunks, failure) = split(drain(encoder(4096).ndjson(rows)).await);
    assert!(failure.is_none());
    assert!(chunks.iter().all(|chunk| chunk.len() <= 4096));
    let body = String::from_utf8(concat(&chunks)).unwrap();
    let back: Vec<Order> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, vec![order(0), big, order(2)]);
}

#[tokio::test]
async fn chosen_fields_are_applied_in_every_format() {
    const OFFERED: &[&str] = &["id", "customer", "total", "note"];
    let fields = Fields::parse("note, id", OFFERED).unwrap();
    let rows = || stream::iter(ok_rows(4));

    let body =
        concat(&split(drain(Encoder::default().json_array(rows()).select(fields.clone())).await).0);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"[{"id":0,"note":"gift"},{"id":1,"note":null},{"id":2,"note":null},{"id":3,"note":"gift"}]"#
    );
    let body = concat(&split(drain(Encoder::default().csv(rows()).select(fields.clone())).await).0);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "id,note\n0,gift\n1,\n2,\n3,gift\n"
    );

    // Maps (and structs written as maps by `#[serde(flatten)]`) are filtered by key.
    #[derive(Serialize)]
    struct Flat {
        id: i64,
        #[serde(flatten)]
        extra: BTreeMap<String, i64>,
    }
    let flat = Flat {
        id: 5,
        extra: BTreeMap::from([("total".to_owned(), 7), ("secret".to_owned(), 1)]),
    };
    let fields = Fields::parse("id,total", OFFERED).unwrap();
    assert_eq!(
        serde_json::to_string(&fields.select(&flat)).unwrap(),
        r#"{"id":5,"total":7}"#
    );
    // Fields the endpoint does not offer never pass, even if the type has them.
    let fields = Fields::all(&["id"]);
    assert_eq!(
        serde_json::to_string(&fields.select(&flat)).unwrap(),
        r#"{"id":5}"#
    );
    // An `Option` row is filtered inside.
    assert_eq!(
        serde_json::to_string(
            &Fields::parse("id", OFFERED)
                .unwrap()
                .select(&Some(order(9)))
        )
        .unwrap(),
        r#"{"id":9}"#
    );
}

#[test]
fn field_lists_are_checked() {
    const OFFERED: &[&str] = &["id", "name"];
    let unknown = Fields::parse("id,password", OFFERED).unwrap_err();
    assert!(matches!(&unknown, Error::UnknownField { field } if field == "password"));
    assert!(unknown.is_client_error());
    for bad in ["", " ", "id,", ",id", "id,,name"] {
        assert!(
            matches!(
                Fields::parse(bad, OFFERED),
                Err(Error::InvalidFields { .. })
            ),
            "{bad:?}"
        );
    }
    // Within the bound on a list's length (1 KiB here), an unknown name is echoed cut short.
    let long = "é".repeat(500);
    match Fields::parse(&long, OFFERED) {
        Err(Error::UnknownField { field }) => assert!(field.len() <= 64),
        other => panic!("{other:?}"),
    }
    let fields = Fields::parse("name,id,name", OFFERED).unwrap();
    assert_eq!(fields.names().collect::<Vec<_>>(), ["id", "name"]);
}

#[tokio::test]
async fn rows_and_bytes_are_counted() {
    let registry = brisk_metrics::Registry::new();
    let encoder = Encoder::builder()
        .metrics(&registry, "export")
        .build()
        .unwrap();
    let ok = concat(&split(drain(encoder.ndjson(stream::iter(ok_rows(10)))).await).0);
    let _ = drain(encoder.ndjson(failing_after(2))).await;
    let text = registry.snapshot().to_prometheus();
    for line in [
        "brisk_stream_rows_total{name=\"export\"} 12".to_owned(),
        "brisk_stream_aborted_total{name=\"export\"} 1".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    let bytes_line = text
        .lines()
        .find(|l| l.starts_with("brisk_stream_bytes_total{name=\"export\"}"))
        .unwrap();
    let counted: usize = bytes_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted > ok.len(), "both bodies counted: {counted}");
}

#[test]
fn a_chunk_size_out_of_range_is_refused() {
    for size in [0, 16 * 1024 * 1024 + 1] {
        assert!(matches!(
            Encoder::builder().chunk_size(size).build(),
            Err(Error::Config {
                setting: "chunk_size",
                ..
            })
        ));
    }
}

/// A stream that is `Pending` (and wakes itself) before each item where `stalls` says so, as
/// rows arriving from a socket are.
fn stalling<T: Unpin>(items: Vec<T>, stalls: Vec<bool>) -> impl Stream<Item = T> {
    let mut items = items.into_iter();
    let mut stalls = stalls.into_iter().cycle();
    let mut stalled = false;
    stream::poll_fn(move |cx| {
        if !stalled && stalls.next().unwrap_or(false) {
            stalled = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        stalled = false;
        Poll::Ready(items.next())
    })
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,30}",
        "[a-z,\"\n\r ]{0,30}",
        "\\PC{0,2000}",
        // What a spreadsheet might run, and numbers that look like it.
        "[=+@\t\r-][0-9a-z.+=()-]{0,8}",
        // ... after blanks or a NUL.
        "[ \t\n\u{a0}\u{0}]{1,3}[=+@0-9a-z-][0-9a-z.+=()-]{0,8}",
    ]
}

fn orders() -> impl Strategy<Value = Vec<Order>> {
    proptest::collection::vec(
        (
            any::<i64>(),
            text(),
            -1e12f64..1e12,
            proptest::option::of(text()),
        )
            .prop_map(|(id, customer, total, note)| Order {
                id,
                customer,
                total,
                note,
            }),
        0..200,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_rows_any_chunk_size_any_stalls_encode_to_what_was_sent(
        rows in orders(),
        chunk_size in prop_oneof![1usize..64, 64usize..70_000],
        stalls in proptest::collection::vec(any::<bool>(), 1..16),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let source = || stalling(rows.iter().cloned().map(Ok::<_, std::io::Error>).collect(), stalls.clone());
            let encoder = encoder(chunk_size);

            let (chunks, failure) = split(drain(encoder.json_array(source())).await);
            prop_assert!(failure.is_none());
            prop_assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= chunk_size));
            prop_assert_eq!(concat(&chunks), serde_json::to_vec(&rows).unwrap());

            let (chunks, _) = split(drain(encoder.ndjson(source())).await);
            let expected: Vec<u8> = rows.iter().flat_map(|r| {
                let mut line = serde_json::to_vec(r).unwrap();
                line.push(b'\n');
                line
            }).collect();
            prop_assert_eq!(concat(&chunks), expected);

            // CSV has no null: an empty note reads back as `Some("")` or `None` alike.
            let no_empty = |mut r: Order| {
                if r.note.as_deref() == Some("") { r.note = None; }
                r
            };
            let expected: Vec<Order> = rows.iter().cloned().map(no_empty).collect();
            let verbatim = Encoder::builder().chunk_size(chunk_size).no_csv_neutralising().build().unwrap();
            let (chunks, _) = split(drain(verbatim.csv(source())).await);
            let body = concat(&chunks);
            let back: Vec<Order> = csv::Reader::from_reader(&body[..]).deserialize().map(Result::unwrap).map(no_empty).collect();
            prop_assert_eq!(&back, &expected);

            // Neutralised (the default): each text cell as sent, or with a `'` in front of a
            // formula's first character; no cell read back starts a formula.
            let (chunks, _) = split(drain(encoder.csv(source())).await);
            let body = concat(&chunks);
            let back: Vec<Order> = csv::Reader::from_reader(&body[..]).deserialize().map(Result::unwrap).map(no_empty).collect();
            prop_assert_eq!(back.len(), expected.len());
            let blank = |c: char| c.is_whitespace() || c == '\0';
            let trigger = |cell: &str| {
                let rest = cell.trim_start_matches(blank);
                cell[..cell.len() - rest.len()].contains(['\0', '\t', '\r'])
                    || rest.starts_with(['=', '+', '-', '@'])
            };
            let number = |cell: &str| {
                let cell = cell.trim_start_matches(blank);
                cell.parse::<f64>().is_ok()
                    && !cell.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            };
            for (back, sent) in back.iter().zip(&expected) {
                prop_assert_eq!((back.id, back.total), (sent.id, sent.total));
                let cells = [
                    (back.customer.as_str(), sent.customer.as_str()),
                    (back.note.as_deref().unwrap_or(""), sent.note.as_deref().unwrap_or("")),
                ];
                for (back, sent) in cells {
                    if !trigger(sent) {
                        prop_assert_eq!(back, sent);
                    } else if number(sent) {
                        prop_assert!(back == sent || back == format!("'{sent}"), "{:?}", back);
                    } else {
                        prop_assert_eq!(back, format!("'{sent}"));
                    }
                    prop_assert!(!trigger(back) || number(back), "{:?}", back);
                }
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn a_slow_consumer_holds_back_the_source() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let pulled = std::sync::Arc::new(AtomicU64::new(0));
    let counter = pulled.clone();
    // An endless source, as a large table is to a client that reads slowly.
    let rows = stream::iter(0..).map(move |id| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(order(id))
    });
    let mut body = pin!(encoder(4096).ndjson(rows));
    let mut lines = 0;
    let mut most_ahead = 0;
    for _ in 0..200 {
        let chunk = body.next().await.unwrap().unwrap();
        assert!(chunk.len() <= 4096);
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        // Rows pulled but not yet handed on: at most what one chunk holds plus the row in hand.
        let ahead = pulled.load(Ordering::SeqCst) - lines;
        most_ahead = most_ahead.max(ahead);
    }
    let rows_per_chunk = 4096 / serde_json::to_vec(&order(1)).unwrap().len() as u64;
    assert!(
        most_ahead <= rows_per_chunk + 1,
        "{most_ahead} rows ahead of the consumer"
    );
}

/// A CSV cell a spreadsheet would run as a formula (OWASP "CSV injection": text starting with
/// `=`, `+`, `-`, `@`, tab or carriage return) is written with a `'` before it, by default.
/// Numbers (serialized from numeric types, or text that is a plain decimal number) are not.
#[tokio::test]
async fn csv_cells_that_start_a_formula_are_neutralised_by_default() {
    #[derive(Serialize)]
    struct Cell {
        text: String,
        number: i64,
        float: f64,
        single: char,
        maybe: Option<String>,
    }
    let cells = [
        (
            "=HYPERLINK(\"http://evil\",\"x\")",
            "'=HYPERLINK(\"http://evil\",\"x\")",
        ),
        ("+1+1", "'+1+1"),
        ("-1+1", "'-1+1"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-", "'-"),
        ("a=1", "a=1"),
        ("", ""),
        // A plain decimal number as text (say a `Decimal` amount) stays a number.
        ("-5.20", "-5.20"),
        ("+44", "+44"),
        ("-1e5", "-1e5"),
        // ... but not what only looks like one to Rust.
        ("-inf", "'-inf"),
        ("-NaN", "'-NaN"),
        ("-0x10", "'-0x10"),
        // Blanks before a formula: a spreadsheet that trims them runs it.
        ("  =1+1", "'  =1+1"),
        (" \t@SUM(A1)", "' \t@SUM(A1)"),
        ("\u{a0}-1+1", "'\u{a0}-1+1"),
        // NUL first (OWASP ASVS 5.0 V1.2.10).
        ("\0=1", "'\0=1"),
        ("\0", "'\0"),
        // A number after spaces is still a number.
        (" -5.20", " -5.20"),
    ];
    let rows: Vec<Result<Cell, std::io::Error>> = cells
        .iter()
        .map(|(text, _)| {
            Ok(Cell {
                text: (*text).to_owned(),
                number: -5,
                float: -1.5,
                single: '=',
                maybe: Some((*text).to_owned()),
            })
        })
        .collect();
    let (chunks, failure) = split(drain(Encoder::default().csv(stream::iter(rows))).await);
    assert!(failure.is_none(), "{failure:?}");
    let body = concat(&chunks);
    let mut reader = csv::Reader::from_reader(&body[..]);
    assert_eq!(
        reader.headers().unwrap(),
        vec!["text", "number", "float", "single", "maybe"]
    );
    for ((_, expected), record) in cells.iter().zip(reader.records()) {
        let record = record.unwrap();
        assert_eq!(&record[0], *expected);
        assert_eq!(&record[1], "-5", "numbers are left as they are");
        assert_eq!(&record[2], "-1.5");
        assert_eq!(&record[3], "'=");
        assert_eq!(&record[4], *expected);
    }
    // Field selection and neutralising together.
    let rows = stream::iter([Ok::<_, std::io::Error>(Cell {
        text: "=1+1".into(),
        number: 1,
        float: 0.0,
        single: 'a',
        maybe: None,
    })]);
    let fields = Fields::parse("text,number", &["text", "number"]).unwrap();
    let body = concat(&split(drain(Encoder::default().csv(rows).select(fields)).await).0);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "text,number\n'=1+1,1\n"
    );
    // Turned off, for CSV only programs read: the cells as they are.
    let verbatim = Encoder::builder().no_csv_neutralising().build().unwrap();
    let rows = stream::iter([Ok::<_, std::io::Error>(Cell {
        text: "=1+1".into(),
        number: -5,
        float: 0.5,
        single: '@',
        maybe: Some("-1+1".into()),
    })]);
    let body = concat(&split(drain(verbatim.csv(rows)).await).0);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "text,number,float,single,maybe\n=1+1,-5,0.5,@,-1+1\n"
    );
}
