//! The encoders beside serializing the same rows directly (serde_json::to_writer into one
//! buffer, csv::Writer into one buffer), in one process: 100k order rows, each side producing
//! the same bytes. brisk streams them as chunks of 32 KiB from a `Stream` of rows; the peers
//! hold the whole document.

use std::{
    hint::black_box,
    io::Write as _,
    time::{Duration, Instant},
};

use brisk_stream::Encoder;
use futures_util::{StreamExt, stream};
use serde::Serialize;

const ROWS: usize = 100_000;
const ROUNDS: usize = 15;

#[derive(Serialize)]
struct Order {
    id: i64,
    user_id: i64,
    status: &'static str,
    created_at: String,
    total_cents: i64,
    note: Option<String>,
}

fn orders() -> Vec<Order> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    (0..ROWS as i64)
        .map(|id| Order {
            id,
            user_id: next(20_000) as i64,
            status: ["paid", "shipped", "pending", "refunded"][next(4) as usize],
            created_at: format!(
                "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                1 + next(12),
                1 + next(28),
                next(24),
                next(60),
                next(60)
            ),
            total_cents: next(1_000_000) as i64,
            note: (next(5) == 0).then(|| "leave at the door, \"please\"".to_owned()),
        })
        .collect()
}

/// What one side produced: bytes, and the largest buffer it held at once.
struct Output {
    bytes: usize,
    largest: usize,
}

#[derive(Clone, Copy)]
enum Format {
    Json,
    Ndjson,
    Csv,
}

fn peer(format: Format, rows: &[Order]) -> Output {
    let mut out = Vec::new();
    match format {
        Format::Json => serde_json::to_writer(&mut out, rows).unwrap(),
        Format::Ndjson => {
            for row in rows {
                serde_json::to_writer(&mut out, row).unwrap();
                out.push(b'\n');
            }
        }
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(&mut out);
            for row in rows {
                writer.serialize(row).unwrap();
            }
            writer.flush().unwrap();
        }
    }
    black_box(&out);
    Output {
        bytes: out.len(),
        largest: out.len(),
    }
}

fn brisk(runtime: &tokio::runtime::Runtime, format: Format, rows: &[Order]) -> Output {
    runtime.block_on(async {
        let source = stream::iter(rows.iter().map(Ok::<_, std::io::Error>));
        let encoder = Encoder::default();
        let mut body = match format {
            Format::Json => encoder.json_array(source).boxed_local(),
            Format::Ndjson => encoder.ndjson(source).boxed_local(),
            Format::Csv => encoder.csv(source).boxed_local(),
        };
        let mut output = Output {
            bytes: 0,
            largest: 0,
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.unwrap();
            output.bytes += chunk.len();
            output.largest = output.largest.max(chunk.len());
            black_box(&chunk);
        }
        output
    })
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort_unstable();
    times[times.len() / 2]
}

pub(crate) fn run() {
    let rows = orders();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    println!(
        "### Encoders\n\nEncoding {ROWS} order rows (median of {ROUNDS} interleaved rounds). Throughput ratio is brisk / peer (higher is better); brisk holds one 32 KiB chunk, the peer the whole document.\n"
    );
    println!("| format | peer | peer MB/s | brisk MB/s | ratio | peer holds | brisk holds |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (format, name, peer_name) in [
        (Format::Json, "JSON array", "serde_json::to_writer"),
        (Format::Ndjson, "NDJSON", "serde_json::to_writer per row"),
        (Format::Csv, "CSV", "csv::Writer::serialize"),
    ] {
        let mut peer_times = Vec::new();
        let mut brisk_times = Vec::new();
        let (mut peer_out, mut brisk_out) = (None, None);
        for round in 0..ROUNDS {
            // Each side goes first in turn: the allocator's state after one side's round
            // (a 10 MiB buffer just freed) favours whichever runs next.
            for side in [round % 2, 1 - round % 2] {
                let start = Instant::now();
                if side == 0 {
                    peer_out = Some(peer(format, &rows));
                    peer_times.push(start.elapsed());
                } else {
                    brisk_out = Some(brisk(&runtime, format, &rows));
                    brisk_times.push(start.elapsed());
                }
            }
        }
        let (peer_out, brisk_out) = (peer_out.unwrap(), brisk_out.unwrap());
        assert_eq!(
            peer_out.bytes, brisk_out.bytes,
            "both sides write the same bytes"
        );
        let mb_per_s = |bytes: usize, time: Duration| bytes as f64 / 1e6 / time.as_secs_f64();
        let peer_rate = mb_per_s(peer_out.bytes, median(peer_times));
        let brisk_rate = mb_per_s(brisk_out.bytes, median(brisk_times));
        println!(
            "| {name} | {peer_name} | {peer_rate:.0} | {brisk_rate:.0} | {:.2}× | {:.1} MiB | {} KiB |",
            brisk_rate / peer_rate,
            peer_out.largest as f64 / (1024.0 * 1024.0),
            brisk_out.largest / 1024,
        );
    }
    let _ = std::io::stdout().flush();
}
