//! The `Stream` and `AsyncRead` adapters: round trips, flushing, limits and errors.

use std::{io, pin::pin, task::Poll};

use brisk_compress::{
    CompressReader, CompressStream, Decoder, DecompressReader, DecompressStream, Encoding, Error,
    Flush, Level, compress, decompress,
};
use bytes::Bytes;
use futures_util::{FutureExt as _, StreamExt as _, stream};
use proptest::prelude::*;
use tokio::{io::AsyncReadExt as _, sync::mpsc};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn chunks() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            prop::collection::vec(prop::sample::select(b"data: {\"n\":1}\n".to_vec()), 0..3000),
        ],
        0..20,
    )
}

fn flush() -> impl Strategy<Value = Flush> {
    prop::sample::select(vec![Flush::Never, Flush::WhenIdle, Flush::EveryChunk])
}

async fn collect(
    mut stream: impl futures_util::Stream<Item = Result<Bytes, Error>> + Unpin,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn source(
    chunks: &[Vec<u8>],
) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Unpin + use<> {
    stream::iter(
        chunks
            .iter()
            .map(|chunk| Ok(Bytes::from(chunk.clone())))
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn streams_round_trip(
        encoding in prop::sample::select(Encoding::ALL.to_vec()),
        flush in flush(),
        chunks in chunks(),
        pieces in 1..30usize,
    ) {
        let data = chunks.concat();
        let compressed = runtime().block_on(collect(
            CompressStream::new(source(&chunks), encoding, Level::Fastest).flush(flush),
        )).unwrap();
        prop_assert_eq!(&decompress(encoding, &compressed, u64::MAX).unwrap(), &data);

        let split: Vec<Vec<u8>> = compressed.chunks(compressed.len().div_ceil(pieces).max(1)).map(<[u8]>::to_vec).collect();
        let decompressed = runtime().block_on(collect(
            DecompressStream::new(source(&split), encoding, data.len() as u64),
        )).unwrap();
        prop_assert_eq!(decompressed, data);
    }

    #[test]
    fn readers_round_trip(
        encoding in prop::sample::select(Encoding::ALL.to_vec()),
        chunks in chunks(),
    ) {
        let data = chunks.concat();
        runtime().block_on(async {
            let mut compressed = Vec::new();
            CompressReader::new(&data[..], encoding, Level::Default).read_to_end(&mut compressed).await.unwrap();
            assert_eq!(decompress(encoding, &compressed, u64::MAX).unwrap(), data);
            let mut decompressed = Vec::new();
            DecompressReader::new(&compressed[..], encoding, u64::MAX).read_to_end(&mut decompressed).await.unwrap();
            assert_eq!(decompressed, data);
        });
    }
}

/// Sends one event at a time through a channel and checks what the compressed stream makes
/// available before the next event is sent.
fn events_visible_before_the_next(flush: Flush) -> Vec<usize> {
    let events = ["data: one\n\n", "data: two\n\n", "data: three\n\n"];
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, io::Error>>();
    let rx = stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut compressed = pin!(CompressStream::new(rx, Encoding::Gzip, Level::Default).flush(flush));
    let mut decoder = Decoder::new(Encoding::Gzip, 1 << 20);
    let mut visible = Vec::new();
    let mut decoded = 0;
    for event in events {
        tx.send(Ok(Bytes::from_static(event.as_bytes()))).unwrap();
        // Take everything the stream offers without waiting.
        while let Some(Some(chunk)) = compressed.next().now_or_never() {
            decoder.write(&chunk.unwrap()).unwrap();
        }
        decoded += decoder.take().len();
        visible.push(decoded);
    }
    drop(tx);
    let rest = runtime().block_on(collect(compressed)).unwrap();
    decoder.write(&rest).unwrap();
    decoder.finish().unwrap();
    visible
}

#[test]
fn an_idle_source_flushes_each_event_through() {
    // 11, 22 and 35 bytes of events are decodable as soon as each was sent.
    assert_eq!(
        events_visible_before_the_next(Flush::WhenIdle),
        [11, 22, 35]
    );
    assert_eq!(
        events_visible_before_the_next(Flush::EveryChunk),
        [11, 22, 35]
    );
}

#[test]
fn without_flushing_small_events_are_held_back() {
    // The failure tower-http #292 describes: nothing reaches the client until the end.
    assert_eq!(events_visible_before_the_next(Flush::Never), [0, 0, 0]);
}

#[test]
fn every_chunk_flushes_even_when_the_source_is_always_ready() {
    let chunks: Vec<Vec<u8>> = (0..5)
        .map(|n| format!("{{\"row\":{n}}}\n").into_bytes())
        .collect();
    let outputs: Vec<Bytes> = runtime().block_on(
        CompressStream::new(source(&chunks), Encoding::Zstd, Level::Default)
            .flush(Flush::EveryChunk)
            .map(Result::unwrap)
            .collect(),
    );
    // One output per row, and each prefix of the outputs decodes to a prefix of the rows.
    assert!(outputs.len() >= chunks.len());
    let mut decoder = Decoder::new(Encoding::Zstd, 1 << 20);
    for (n, output) in outputs.iter().take(chunks.len()).enumerate() {
        decoder.write(output).unwrap();
        assert_eq!(decoder.take(), Bytes::from(chunks[n].clone()), "row {n}");
    }
}

#[test]
fn source_errors_end_the_stream_with_the_error() {
    let items = vec![
        Ok(Bytes::from_static(b"fine")),
        Err(io::Error::other("disk on fire")),
    ];
    let outcome = runtime().block_on(collect(CompressStream::new(
        stream::iter(items),
        Encoding::Brotli,
        Level::Default,
    )));
    let Err(Error::Source(error)) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(error.to_string(), "disk on fire");
}

#[test]
fn a_stream_bomb_stops_at_the_limit() {
    let bomb = compress(Encoding::Zstd, Level::Fastest, &vec![0; 64 << 20]).unwrap();
    let mut stream = pin!(DecompressStream::new(
        source(&[bomb]),
        Encoding::Zstd,
        1 << 20
    ));
    let outcome = runtime().block_on(async {
        let mut largest = 0;
        while let Some(chunk) = stream.next().await {
            largest = largest.max(chunk?.len());
        }
        Ok::<_, Error>(largest)
    });
    assert!(
        matches!(outcome, Err(Error::TooLarge { limit: 1_048_576 })),
        "{outcome:?}"
    );
    // Output was handed on in bounded chunks, not as one buffer of the limit.
    assert!(stream.decoder().bytes_out() == (1 << 20) + 1);
}

#[test]
fn a_reader_bomb_is_an_invalid_data_error_carrying_too_large() {
    let bomb = compress(Encoding::Brotli, Level::Default, &vec![0; 32 << 20]).unwrap();
    let error = runtime()
        .block_on(async {
            DecompressReader::new(&bomb[..], Encoding::Brotli, 4096)
                .read_to_end(&mut Vec::new())
                .await
        })
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    let inner = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>());
    assert!(
        matches!(inner, Some(Error::TooLarge { limit: 4096 })),
        "{error}"
    );
}

#[test]
fn a_truncated_stream_is_an_error_at_its_end() {
    let mut wire = compress(Encoding::Deflate, Level::Default, b"complete sentence").unwrap();
    wire.truncate(wire.len() - 2);
    let outcome = runtime().block_on(collect(DecompressStream::new(
        source(&[wire]),
        Encoding::Deflate,
        100,
    )));
    assert!(
        matches!(
            outcome,
            Err(Error::Truncated {
                encoding: Encoding::Deflate
            })
        ),
        "{outcome:?}"
    );
}

#[test]
fn a_huge_ready_source_yields_to_the_executor() {
    // 64 MiB of zeros compresses to almost nothing; the stream must still return to the
    // executor between pieces of work instead of compressing everything in one poll.
    let zeros: Vec<Vec<u8>> = (0..64).map(|_| vec![0; 1 << 20]).collect();
    let mut stream = pin!(
        CompressStream::new(source(&zeros), Encoding::Zstd, Level::Fastest).flush(Flush::Never)
    );
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut returns = 0;
    let mut out = Vec::new();
    loop {
        returns += 1;
        match futures_util::Stream::poll_next(stream.as_mut(), &mut cx) {
            Poll::Pending => {}
            Poll::Ready(Some(chunk)) => out.extend_from_slice(&chunk.unwrap()),
            Poll::Ready(None) => break,
        }
    }
    // At most 512 KiB of input per poll: at least 128 returns, with a Pending or some output.
    assert!(returns >= 128, "returned {returns} times");
    assert_eq!(
        decompress(Encoding::Zstd, &out, 64 << 20).unwrap().len(),
        64 << 20
    );
}
