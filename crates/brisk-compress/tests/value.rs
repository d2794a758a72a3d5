//! Framed cache values: round trips, raw small values, damaged frames and metrics.

use brisk_compress::{Encoding, Error, Level, ValueCodec};
use brisk_metrics::Registry;
use proptest::prelude::*;

fn json(rows: usize) -> Vec<u8> {
    (0..rows)
        .map(|id| {
            format!(
                r#"{{"id":{id},"name":"user {id}","email":"user{id}@example.com","active":true}}"#
            )
        })
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn values_round_trip_across_codecs(
        writer in prop::sample::select(Encoding::ALL.to_vec()),
        reader in prop::sample::select(Encoding::ALL.to_vec()),
        min_size in 0..2048usize,
        value in prop_oneof![prop::collection::vec(any::<u8>(), 0..3000), (0..200usize).prop_map(json)],
    ) {
        let writer = ValueCodec::builder().encoding(writer).min_size(min_size).build().unwrap();
        let reader = ValueCodec::builder().encoding(reader).build().unwrap();
        let framed = writer.encode(&value).unwrap();
        prop_assert_eq!(reader.decode(&framed).unwrap(), value);
    }

    /// Whatever bytes a cache hands back, decoding answers with a value or a typed error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = ValueCodec::default().decode(&bytes);
        let mut framed = vec![0xBC, 1];
        framed.extend_from_slice(&bytes);
        let _ = ValueCodec::default().decode(&framed);
    }
}

#[test]
fn small_and_incompressible_values_are_stored_raw() {
    let codec = ValueCodec::builder()
        .encoding(Encoding::Brotli)
        .min_size(100)
        .build()
        .unwrap();
    let small = codec.encode(&[b'a'; 99]).unwrap();
    assert_eq!(
        ValueCodec::peek_encoding(&small).unwrap(),
        Encoding::Identity
    );
    assert_eq!(&small[4..], &[b'a'; 99]);

    let big = codec.encode(&[b'a'; 100]).unwrap();
    assert_eq!(ValueCodec::peek_encoding(&big).unwrap(), Encoding::Brotli);
    assert!(big.len() < 30);

    // Pseudo-random bytes do not shrink: stored raw rather than larger.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    let framed = codec.encode(&noise).unwrap();
    assert_eq!(
        ValueCodec::peek_encoding(&framed).unwrap(),
        Encoding::Identity
    );
    assert_eq!(framed.len(), noise.len() + 5);
}

#[test]
fn damaged_frames_are_typed_errors() {
    let codec = ValueCodec::builder()
        .encoding(Encoding::Gzip)
        .build()
        .unwrap();
    let framed = codec.encode(&json(100)).unwrap();
    let with = |at: usize, byte: u8| {
        let mut copy = framed.clone();
        copy[at] = byte;
        codec.decode(&copy)
    };
    assert!(matches!(codec.decode(b""), Err(Error::Frame { .. })));
    assert!(
        matches!(codec.decode(&json(1)), Err(Error::Frame { .. })),
        "an unframed value"
    );
    assert!(matches!(with(1, 2), Err(Error::FrameVersion(2))));
    assert!(matches!(
        with(2, 9),
        Err(Error::Frame {
            reason: "unknown coding byte"
        })
    ));
    assert!(matches!(
        ValueCodec::peek_encoding(&framed),
        Ok(Encoding::Gzip)
    ));

    // The length in the header must match the payload.
    let value = b"0123456789".repeat(200);
    let framed = codec.encode(&value).unwrap();
    assert_eq!(&framed[3..5], &[0xD0, 0x0F], "2000 as LEB128");
    let mut longer = framed.clone();
    longer[3] = 0xD1;
    assert!(matches!(
        codec.decode(&longer),
        Err(Error::Frame {
            reason: "payload shorter than its header says"
        })
    ));
    let mut shorter = framed.clone();
    shorter[3] = 0xCF;
    assert!(matches!(
        codec.decode(&shorter),
        Err(Error::Frame {
            reason: "payload longer than its header says"
        })
    ));
    let truncated = &framed[..framed.len() - 3];
    assert!(matches!(
        codec.decode(truncated),
        Err(Error::Truncated { .. } | Error::Corrupt { .. })
    ));
}

#[test]
fn the_decode_limit_is_checked_before_decoding() {
    let writer = ValueCodec::builder()
        .encoding(Encoding::Zstd)
        .build()
        .unwrap();
    let framed = writer.encode(&vec![0; 10 << 20]).unwrap();
    let reader = ValueCodec::builder()
        .max_decoded_size(1 << 20)
        .build()
        .unwrap();
    assert!(matches!(
        reader.decode(&framed),
        Err(Error::TooLarge { limit: 1_048_576 })
    ));
}

#[test]
fn metrics_report_bytes_and_ratio_per_coding() {
    let registry = Registry::new();
    let codec = ValueCodec::builder()
        .encoding(Encoding::Zstd)
        .level(Level::Fastest)
        .metrics(&registry, "users")
        .build()
        .unwrap();
    let value = json(500);
    let framed = codec.encode(&value).unwrap();
    codec.decode(&framed).unwrap();
    codec.encode(b"small").unwrap();

    let snapshot = registry.snapshot();
    let labels = [
        ("name", "users"),
        ("encoding", "zstd"),
        ("direction", "compress"),
    ];
    assert_eq!(
        snapshot.counter("brisk_compress_bytes_in_total", &labels),
        Some(value.len() as u64)
    );
    let out = snapshot
        .counter("brisk_compress_bytes_out_total", &labels)
        .unwrap();
    // The frame adds magic, version, coding and a 3-byte length (the value is under 2 MiB).
    assert!(value.len() < 1 << 21);
    assert_eq!(out as usize, framed.len() - 6);
    let ratio = snapshot
        .histogram("brisk_compress_ratio_percent", &labels)
        .unwrap();
    assert_eq!(ratio.count, 1);
    assert_eq!(ratio.max, (out * 100 / value.len() as u64) as f64);
    let labels = [
        ("name", "users"),
        ("encoding", "zstd"),
        ("direction", "decompress"),
    ];
    assert_eq!(
        snapshot.counter("brisk_compress_bytes_out_total", &labels),
        Some(value.len() as u64)
    );
}

/// A limit that would refuse every value is a configuration error, not a codec that fails.
#[test]
fn a_zero_decode_limit_is_refused_by_build() {
    match ValueCodec::builder().max_decoded_size(0).build() {
        Err(brisk_compress::Error::Config { setting, .. }) => {
            assert_eq!(setting, "max_decoded_size");
        }
        other => panic!("{other:?}"),
    }
    assert!(ValueCodec::builder().max_decoded_size(1).build().is_ok());
}
