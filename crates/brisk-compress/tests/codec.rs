//! The buffer and push APIs: round trips, damaged input, limits and bombs.

use std::io::Write as _;

use brisk_compress::{Decoder, Encoder, Encoding, Error, Level, compress, decompress};
use proptest::prelude::*;

const CODECS: [Encoding; 4] = [
    Encoding::Gzip,
    Encoding::Deflate,
    Encoding::Brotli,
    Encoding::Zstd,
];

fn encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(Encoding::ALL.to_vec())
}

fn level() -> impl Strategy<Value = Level> {
    prop_oneof![
        Just(Level::Fastest),
        Just(Level::Default),
        Just(Level::Best),
        (-10..30i32).prop_map(Level::Precise),
    ]
}

/// Random bytes, or text-like runs that compress well.
fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        prop::collection::vec(
            prop::sample::select(b"{}\"id:name,0123 ".to_vec()),
            0..20_000
        ),
    ]
}

/// Independent decoders, straight from the codec crates, so a bug in our framing cannot hide.
fn reference_decode(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        Encoding::Identity => out.extend_from_slice(data),
        Encoding::Gzip => {
            std::io::copy(&mut flate2::read::MultiGzDecoder::new(data), &mut out).unwrap();
        }
        Encoding::Deflate => {
            std::io::copy(&mut flate2::read::ZlibDecoder::new(data), &mut out).unwrap();
        }
        Encoding::Brotli => {
            brotli::BrotliDecompress(&mut &data[..], &mut out).unwrap();
        }
        Encoding::Zstd => out = zstd::decode_all(data).unwrap(),
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn buffers_round_trip(encoding in encoding(), level in level(), data in data()) {
        let compressed = compress(encoding, level, &data).unwrap();
        prop_assert_eq!(&reference_decode(encoding, &compressed), &data);
        prop_assert_eq!(&decompress(encoding, &compressed, data.len() as u64).unwrap(), &data);
    }

    /// Any chunking of the input, with flushes anywhere, decodes to the same bytes; and every
    /// flush makes all input so far decodable.
    #[test]
    fn chunked_and_flushed_encoding_round_trips(
        encoding in encoding(),
        data in data(),
        cuts in prop::collection::vec((0..20_000usize, any::<bool>()), 0..12),
    ) {
        let mut encoder = Encoder::new(encoding, Level::Fastest);
        let mut wire = Vec::new();
        let mut cuts: Vec<_> = cuts.into_iter().map(|(at, flush)| (at.min(data.len()), flush)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for (at, flush) in cuts {
            encoder.write(&data[start..at]).unwrap();
            start = at;
            if flush {
                encoder.flush().unwrap();
                wire.extend_from_slice(&encoder.take());
                let mut decoder = Decoder::new(encoding, u64::MAX);
                decoder.write(&wire).unwrap();
                prop_assert_eq!(&decoder.take()[..], &data[..at]);
            }
        }
        encoder.write(&data[start..]).unwrap();
        encoder.finish().unwrap();
        wire.extend_from_slice(&encoder.take());
        prop_assert_eq!(encoder.bytes_in(), data.len() as u64);
        prop_assert_eq!(encoder.bytes_out(), wire.len() as u64);
        prop_assert_eq!(reference_decode(encoding, &wire), data);
    }

    /// The decoder gives the same output however the compressed input is split.
    #[test]
    fn split_decoding_round_trips(encoding in encoding(), data in data(), pieces in 1..40usize) {
        let wire = compress(encoding, Level::Default, &data).unwrap();
        let mut decoder = Decoder::new(encoding, u64::MAX);
        let mut out = Vec::new();
        for piece in wire.chunks(wire.len().div_ceil(pieces).max(1)) {
            decoder.write(piece).unwrap();
            out.extend_from_slice(&decoder.take());
        }
        decoder.finish().unwrap();
        out.extend_from_slice(&decoder.take());
        prop_assert_eq!(out, data);
    }

    /// Damaged input is an error or (for the few bytes a codec cannot check) other bytes, never a
    /// panic or a hang; truncation is always detected.
    #[test]
    fn damaged_input_is_a_typed_error(
        encoding in prop::sample::select(CODECS.to_vec()),
        data in data(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1..=255u8), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let wire = compress(encoding, Level::Default, &data).unwrap();
        let mut damaged = wire.clone();
        for (at, mask) in flips {
            let at = at.index(damaged.len());
            damaged[at] ^= mask;
        }
        let _ = decompress(encoding, &damaged, 1 << 24);
        let truncated = &wire[..cut.index(wire.len())];
        let outcome = decompress(encoding, truncated, 1 << 24);
        let detected = matches!(outcome, Err(Error::Truncated { .. } | Error::Corrupt { .. }));
        prop_assert!(detected, "a cut at {} of {} was not detected", truncated.len(), wire.len());
    }
}

#[test]
fn the_limit_is_exact() {
    let data = vec![7u8; 100_000];
    for encoding in Encoding::ALL {
        let wire = compress(encoding, Level::Default, &data).unwrap();
        assert_eq!(
            decompress(encoding, &wire, 100_000).unwrap(),
            data,
            "{encoding}"
        );
        let error = decompress(encoding, &wire, 99_999).unwrap_err();
        assert!(
            matches!(error, Error::TooLarge { limit: 99_999 }),
            "{encoding}: {error}"
        );
    }
}

#[test]
fn an_empty_input_is_truncated_and_an_empty_stream_is_not() {
    for encoding in CODECS {
        let outcome = decompress(encoding, b"", 10);
        assert!(
            matches!(outcome, Err(Error::Truncated { .. })),
            "{encoding}: {outcome:?}"
        );
        let empty = compress(encoding, Level::Default, b"").unwrap();
        assert_eq!(decompress(encoding, &empty, 0).unwrap(), b"");
    }
    assert_eq!(decompress(Encoding::Identity, b"", 0).unwrap(), b"");
}

#[test]
fn concatenated_gzip_members_and_zstd_frames_decode_as_one() {
    for encoding in [Encoding::Gzip, Encoding::Zstd] {
        let mut wire = compress(encoding, Level::Default, b"hello, ").unwrap();
        wire.extend(compress(encoding, Level::Default, b"world").unwrap());
        assert_eq!(decompress(encoding, &wire, 100).unwrap(), b"hello, world");
    }
}

#[test]
fn bytes_after_a_brotli_or_deflate_stream_are_refused() {
    for encoding in [Encoding::Deflate, Encoding::Brotli] {
        let mut wire = compress(encoding, Level::Default, b"hello").unwrap();
        wire.extend_from_slice(b"junk");
        assert!(matches!(
            decompress(encoding, &wire, 100),
            Err(Error::TrailingData { encoding: e }) if e == encoding
        ));
    }
}

#[test]
fn garbage_is_corrupt_not_a_panic() {
    for encoding in CODECS {
        let error = decompress(encoding, b"this is not compressed at all", 1000).unwrap_err();
        assert!(
            matches!(error, Error::Corrupt { .. } | Error::Truncated { .. }),
            "{encoding}: {error}"
        );
    }
}

#[test]
fn writing_after_finish_is_an_error() {
    let mut encoder = Encoder::new(Encoding::Gzip, Level::Default);
    encoder.finish().unwrap();
    assert!(encoder.write(b"late").is_err());
    assert!(encoder.finish().is_err());
}

#[test]
fn output_matches_the_raw_codecs_at_the_same_level() {
    let data = br#"{"id":12345,"name":"Ada Lovelace","email":"ada@example.com","tags":["math","engines"]}"#
        .repeat(200);
    let ours = compress(Encoding::Zstd, Level::Precise(3), &data).unwrap();
    // With the size pledged, byte for byte what zstd's one-shot API writes.
    assert_eq!(ours, zstd::bulk::compress(&data, 3).unwrap());
    let ours = compress(Encoding::Deflate, Level::Precise(6), &data).unwrap();
    let mut raw = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    raw.write_all(&data).unwrap();
    assert_eq!(ours, raw.finish().unwrap());
}

#[test]
fn a_pledged_size_must_be_kept() {
    let mut encoder = Encoder::with_size(Encoding::Zstd, Level::Default, 10);
    encoder.write(b"only five").unwrap();
    assert!(matches!(
        encoder.finish(),
        Err(Error::Compress {
            encoding: Encoding::Zstd,
            ..
        })
    ));
    // Other codecs take the size as a hint only.
    let mut encoder = Encoder::with_size(Encoding::Gzip, Level::Default, 10);
    encoder.write(b"only five").unwrap();
    encoder.finish().unwrap();
}

#[test]
fn zstd_windows_over_8_mib_are_refused() {
    // RFC 9659 caps HTTP zstd at an 8 MiB window; a frame asking for 128 MiB must not make the
    // decoder allocate it.
    let mut encoder = zstd::stream::raw::Encoder::new(3).unwrap();
    zstd::stream::raw::Operation::reinit(&mut encoder).unwrap();
    encoder
        .set_parameter(zstd::stream::raw::CParameter::WindowLog(27))
        .unwrap();
    let mut wire = vec![0u8; 1 << 16];
    let mut out = zstd::stream::raw::OutBuffer::around(&mut wire[..]);
    let mut input = zstd::stream::raw::InBuffer::around(&[1u8; 1000][..]);
    zstd::stream::raw::Operation::run(&mut encoder, &mut input, &mut out).unwrap();
    zstd::stream::raw::Operation::finish(&mut encoder, &mut out, true).unwrap();
    let len = out.pos();
    let outcome = decompress(Encoding::Zstd, &wire[..len], 1 << 20);
    assert!(
        matches!(
            outcome,
            Err(Error::Corrupt {
                encoding: Encoding::Zstd,
                ..
            })
        ),
        "{outcome:?}"
    );
    // Level 22 is capped to the window when we write.
    let big = compress(Encoding::Zstd, Level::Precise(22), &vec![5u8; 100_000]).unwrap();
    assert_eq!(
        decompress(Encoding::Zstd, &big, 100_000).unwrap().len(),
        100_000
    );
}
