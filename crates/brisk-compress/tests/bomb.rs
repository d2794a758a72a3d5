//! Decompression bombs: gigabytes of zeros compressed to kilobytes must fail at the limit, after
//! reading only the start of the bomb, without the memory the bomb asks for.
//!
//! This binary holds one test, so the process's peak resident size measures it alone under
//! any harness.

use brisk_compress::{Decoder, Encoder, Encoding, Error, Level};

const GIB: u64 = 1 << 30;
const LIMIT: u64 = 8 << 20;

/// `size` zeros, compressed by `encoding` without holding them in memory, at the level that
/// makes a small bomb quickly (zstd's fastest level already reaches ~30000:1 on zeros).
fn bomb(encoding: Encoding, size: u64) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let level = if encoding == Encoding::Zstd {
        Level::Fastest
    } else {
        Level::Default
    };
    let mut encoder = Encoder::new(encoding, level);
    let mut bomb = Vec::new();
    for _ in 0..size / zeros.len() as u64 {
        encoder.write(&zeros).unwrap();
        bomb.extend_from_slice(&encoder.take());
    }
    encoder.finish().unwrap();
    bomb.extend_from_slice(&encoder.take());
    bomb
}

/// Peak resident memory of this process, from `/proc/self/status`.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn rejects_at_the_limit(encoding: Encoding, size: u64, max_bomb: usize) {
    let bomb = bomb(encoding, size);
    assert!(
        bomb.len() <= max_bomb,
        "{encoding}: {size} zeros became {} bytes",
        bomb.len()
    );

    let mut decoder = Decoder::new(encoding, LIMIT);
    let mut outcome = Ok(());
    for piece in bomb.chunks(4096) {
        outcome = decoder.write(piece);
        if outcome.is_err() {
            break;
        }
        // A consumer would pass the output on; drop it, as a server streaming a body does.
        drop(decoder.take());
    }
    assert!(
        matches!(outcome, Err(Error::TooLarge { limit: LIMIT })),
        "{encoding}: {outcome:?}"
    );
    // Stopped at the limit, not after it: at most one byte past it was produced, and only the
    // start of the bomb was read.
    assert_eq!(decoder.bytes_out(), LIMIT + 1, "{encoding}");
    assert!(
        decoder.bytes_in() < bomb.len() as u64 / 4 + 4096,
        "{encoding}: read {}",
        decoder.bytes_in()
    );
    let peak = peak_rss();
    assert!(
        peak < 128 << 20,
        "{encoding}: peak resident memory {} MiB",
        peak >> 20
    );
}

/// One test for every coding, run one after the other: the process's peak resident size is
/// then this test's own whether the harness gives each test a process (nextest) or runs tests
/// on threads of one (`cargo test`).
#[test]
fn a_bomb_of_each_coding_is_rejected_at_the_limit() {
    // Deflate tops out near 1032:1, so a gigabyte is a megabyte.
    rejects_at_the_limit(Encoding::Gzip, GIB, 1100 << 10);
    rejects_at_the_limit(Encoding::Deflate, GIB, 1100 << 10);
    rejects_at_the_limit(Encoding::Brotli, 2 * GIB, 16 << 10);
    rejects_at_the_limit(Encoding::Zstd, 4 * GIB, 256 << 10);
}
