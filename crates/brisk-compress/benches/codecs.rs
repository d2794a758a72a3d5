//! brisk-compress beside the codec crates used directly (flate2, brotli, zstd: the same crates
//! and versions brisk runs on) in one process, on generated API JSON of 1 KB, 64 KB and 1 MB.
//! Both sides compress the same bytes at the same level from a `&[u8]` to a `Vec<u8>`, and
//! decompress back. Prints a markdown table (median of interleaved runs) that
//! `cargo xtask bench compress` writes to docs/benchmarks.md.
#![allow(
    clippy::print_stdout,
    missing_docs,
    reason = "a benchmark binary reports on stdout"
)]

use std::{
    hint::black_box,
    io::{Read as _, Write as _},
    time::{Duration, Instant},
};

use brisk_compress::{Encoding, Level, compress, decompress};

const ROUNDS: usize = 7;
/// Work per timed sample, so small inputs are measured over many calls.
const SAMPLE: Duration = Duration::from_millis(40);

/// Realistic API JSON: a page of orders with nested customers and items, ~`size` bytes,
/// deterministic (a small xorshift generator, no randomness between runs).
fn api_json(size: usize) -> Vec<u8> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let names = [
        "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
    ];
    let skus = ["KB-101", "MS-220", "MON-27", "USB-C", "HDMI-2", "DOCK-4"];
    let mut out = String::from("{\"page\":1,\"orders\":[");
    let mut id = 10_000;
    while out.len() < size {
        id += 1 + next(7);
        let name = names[next(names.len() as u64) as usize];
        let items: Vec<String> = (0..1 + next(4))
            .map(|_| {
                format!(
                    r#"{{"sku":"{}","qty":{},"price_cents":{}}}"#,
                    skus[next(skus.len() as u64) as usize],
                    1 + next(5),
                    499 + next(50_000)
                )
            })
            .collect();
        out.push_str(&format!(
            r#"{{"id":{id},"status":"{}","created_at":"2026-{:02}-{:02}T{:02}:{:02}:{:02}Z","customer":{{"id":{},"name":"{name} {}","email":"{}{}@example.com"}},"items":[{}],"total_cents":{}}},"#,
            ["paid", "shipped", "pending", "refunded"][next(4) as usize],
            1 + next(12), 1 + next(28), next(24), next(60), next(60),
            next(100_000), (b'A' + next(26) as u8) as char, name.to_lowercase(), next(1000),
            items.join(","), next(1_000_000),
        ));
    }
    out.truncate(size - 2);
    while !out.ends_with('}') {
        out.pop();
    }
    out.push_str("]}");
    out.into_bytes()
}

fn raw_compress(encoding: Encoding, level: i32, data: &[u8]) -> Vec<u8> {
    match encoding {
        Encoding::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level as u32));
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        Encoding::Deflate => {
            let mut encoder =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(level as u32));
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        Encoding::Brotli => {
            let params = brotli::enc::BrotliEncoderParams {
                quality: level,
                ..Default::default()
            };
            let mut out = Vec::new();
            brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
            out
        }
        Encoding::Zstd => zstd::bulk::compress(data, level).unwrap(),
        Encoding::Identity => data.to_vec(),
    }
}

fn raw_decompress(encoding: Encoding, data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    match encoding {
        Encoding::Gzip => {
            flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Encoding::Deflate => {
            flate2::read::ZlibDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap();
        }
        Encoding::Brotli => brotli::BrotliDecompress(&mut &data[..], &mut out).unwrap(),
        Encoding::Zstd => out = zstd::bulk::decompress(data, size).unwrap(),
        Encoding::Identity => out.extend_from_slice(data),
    }
    out
}

/// Bytes per second of `work` over one sample.
fn throughput(bytes: usize, mut work: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u32;
    while calls == 0 || start.elapsed() < SAMPLE {
        work();
        calls += 1;
    }
    bytes as f64 * f64::from(calls) / start.elapsed().as_secs_f64()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Runs both sides in alternation and returns the medians (brisk, raw).
fn compare(bytes: usize, mut brisk: impl FnMut(), mut raw: impl FnMut()) -> (f64, f64) {
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first so neither always gets the warmer cache.
        if round % 2 == 0 {
            ours.push(throughput(bytes, &mut brisk));
            theirs.push(throughput(bytes, &mut raw));
        } else {
            theirs.push(throughput(bytes, &mut raw));
            ours.push(throughput(bytes, &mut brisk));
        }
    }
    (median(ours), median(theirs))
}

fn mb(rate: f64) -> String {
    format!("{:.1}", rate / 1e6)
}

fn main() {
    let cases: &[(Encoding, &[i32])] = &[
        (Encoding::Gzip, &[1, 6, 9]),
        (Encoding::Deflate, &[6]),
        (Encoding::Brotli, &[1, 4, 11]),
        (Encoding::Zstd, &[1, 3, 19]),
    ];
    let sizes = [("1 KB", 1_000), ("64 KB", 64_000), ("1 MB", 1_000_000)];
    println!(
        "Generated order-list JSON; throughput in MB/s of uncompressed bytes; ratio = compressed / original size. `vs raw` is brisk ÷ the codec crate called directly (target ≥ 0.95×).\n"
    );
    println!(
        "| codec | level | input | size ratio | compress brisk | compress raw | **vs raw** | decompress brisk | decompress raw | **vs raw** |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (mut worst_compress, mut worst_decompress) = (f64::MAX, f64::MAX);
    for &(encoding, levels) in cases {
        for &level in levels {
            for (label, size) in sizes {
                let data = api_json(size);
                let ours = compress(encoding, Level::Precise(level), &data).unwrap();
                let theirs = raw_compress(encoding, level, &data);
                assert_eq!(decompress(encoding, &theirs, size as u64).unwrap(), data);
                assert_eq!(raw_decompress(encoding, &ours, size), data);
                let (c_brisk, c_raw) = compare(
                    size,
                    || {
                        drop(black_box(
                            compress(encoding, Level::Precise(level), black_box(&data)).unwrap(),
                        ))
                    },
                    || drop(black_box(raw_compress(encoding, level, black_box(&data)))),
                );
                let (d_brisk, d_raw) = compare(
                    size,
                    || {
                        drop(black_box(
                            decompress(encoding, black_box(&ours), size as u64).unwrap(),
                        ))
                    },
                    || {
                        drop(black_box(raw_decompress(
                            encoding,
                            black_box(&theirs),
                            size,
                        )))
                    },
                );
                worst_compress = worst_compress.min(c_brisk / c_raw);
                worst_decompress = worst_decompress.min(d_brisk / d_raw);
                println!(
                    "| {encoding} | {level} | {label} | {:.3} | {} | {} | **{:.2}×** | {} | {} | **{:.2}×** |",
                    ours.len() as f64 / size as f64,
                    mb(c_brisk),
                    mb(c_raw),
                    c_brisk / c_raw,
                    mb(d_brisk),
                    mb(d_raw),
                    d_brisk / d_raw,
                );
            }
        }
    }
    println!(
        "\nLowest ratio in this run: compress {worst_compress:.2}×, decompress {worst_decompress:.2}×."
    );
}
