//! Bytes in and out per coding and direction, and the ratio of each operation.

use std::sync::Arc;

use brisk_metrics::{Counter, Description, Histogram, Key, MetricKind, Recorder, Unit};

/// Every metric this crate exports, each labelled `name="<name>"` of the layer or codec.
pub const METRICS: &[Description] = &[
    Description {
        name: "brisk_compress_bytes_in_total",
        kind: MetricKind::Counter,
        help: "Bytes into a coding, by encoding and direction (compress or decompress).",
    },
    Description {
        name: "brisk_compress_bytes_out_total",
        kind: MetricKind::Counter,
        help: "Bytes out of a coding, by encoding and direction (compress or decompress).",
    },
    Description {
        name: "brisk_compress_ratio_percent",
        kind: MetricKind::Histogram(Unit::Count),
        help: "Output size as a percentage of input size, per body or value, by encoding and direction.",
    },
    Description {
        name: "brisk_compress_skipped_total",
        kind: MetricKind::Counter,
        help: "Bodies sent uncompressed, by reason (small, content_type, not_accepted, encoded).",
    },
];

use crate::Encoding;

/// Which way the bytes went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Compress,
    Decompress,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Compress => "compress",
            Self::Decompress => "decompress",
        }
    }
}

/// Why a body was sent as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) enum Skip {
    /// Smaller than the policy's minimum size.
    Small,
    /// A content type the policy does not compress.
    ContentType,
    /// The client accepts no offered coding.
    NotAccepted,
    /// Already has a `Content-Encoding`, or must not be transformed.
    Encoded,
}

#[derive(Debug, Clone)]
struct Side {
    bytes_in: Counter,
    bytes_out: Counter,
    /// Output size as a percentage of input size, one sample per body or value.
    ratio: Histogram,
}

/// The instruments of one layer or value codec, each labelled `name="<name>"`:
///
/// - `brisk_compress_bytes_in_total{encoding, direction}` and `…_bytes_out_total`: bytes
///   before and after the codec; their quotient is the aggregate ratio;
/// - `brisk_compress_ratio_percent{encoding, direction}`: output as a percentage of input, per
///   body or value;
/// - `brisk_compress_skipped_total{reason}`: bodies sent uncompressed (`small`,
///   `content_type`, `not_accepted`, `encoded`).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    sides: Arc<[[Side; 2]; 5]>,
    skipped: Arc<[Counter; 4]>,
}

impl Metrics {
    pub(crate) fn noop() -> Self {
        let side = || Side {
            bytes_in: Counter::noop(),
            bytes_out: Counter::noop(),
            ratio: Histogram::noop(Unit::Count),
        };
        Self {
            sides: Arc::new(std::array::from_fn(|_| [side(), side()])),
            skipped: Arc::new(std::array::from_fn(|_| Counter::noop())),
        }
    }

    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        brisk_metrics::describe(recorder, METRICS);
        // Names, label names and label values here are constants or free text, which keys
        // accept, so building them cannot fail.
        let key = |metric: &'static str, labels: &[(&'static str, &str)]| {
            let start = Key::new(metric).and_then(|key| key.with_label("name", name.to_owned()));
            labels
                .iter()
                .fold(start, |key, (k, v)| {
                    key.and_then(|key| key.with_label(*k, (*v).to_owned()))
                })
                .expect("constant metric names and label names are valid")
        };
        let side = |encoding: Encoding, direction: Direction| {
            let labels = [
                ("encoding", encoding.as_str()),
                ("direction", direction.as_str()),
            ];
            Side {
                bytes_in: recorder.counter(&key("brisk_compress_bytes_in_total", &labels)),
                bytes_out: recorder.counter(&key("brisk_compress_bytes_out_total", &labels)),
                ratio: recorder
                    .histogram(&key("brisk_compress_ratio_percent", &labels), Unit::Count),
            }
        };
        let sides = std::array::from_fn(|index| {
            let encoding = Encoding::ALL[index];
            [
                side(encoding, Direction::Compress),
                side(encoding, Direction::Decompress),
            ]
        });
        let skipped = ["small", "content_type", "not_accepted", "encoded"].map(|reason| {
            recorder.counter(&key("brisk_compress_skipped_total", &[("reason", reason)]))
        });
        Self {
            sides: Arc::new(sides),
            skipped: Arc::new(skipped),
        }
    }

    /// Records one finished body or value.
    pub(crate) fn record(
        &self,
        direction: Direction,
        encoding: Encoding,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let side = &self.sides[encoding.index()][direction as usize];
        side.bytes_in.add(bytes_in);
        side.bytes_out.add(bytes_out);
        if let Some(percent) = bytes_out.saturating_mul(100).checked_div(bytes_in) {
            side.ratio.record(percent);
        }
    }

    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn skipped(&self, reason: Skip) {
        self.skipped[reason as usize].increment();
    }
}
