//! The handles brisk-stream records into, registered once per instance.

use brisk_metrics::{Counter, Description, Key, MetricKind, Recorder};

use crate::error::CursorRejection;

/// Every metric this crate exports, each labelled `name="<name>"` of the encoder, cursor
/// codec or keyset.
pub const METRICS: &[Description] = &[
    Description {
        name: "brisk_stream_rows_total",
        kind: MetricKind::Counter,
        help: "Rows an encoder wrote into response bodies.",
    },
    Description {
        name: "brisk_stream_bytes_total",
        kind: MetricKind::Counter,
        help: "Bytes an encoder produced.",
    },
    Description {
        name: "brisk_stream_aborted_total",
        kind: MetricKind::Counter,
        help: "Bodies an encoder ended with an error, their row stream or a row's encoding having failed.",
    },
    Description {
        name: "brisk_stream_cursors_issued_total",
        kind: MetricKind::Counter,
        help: "Pagination cursors issued.",
    },
    Description {
        name: "brisk_stream_cursor_rejections_total",
        kind: MetricKind::Counter,
        help: "Cursors refused, by reason (malformed, bad_signature, wrong_query, expired).",
    },
    Description {
        name: "brisk_stream_pages_total",
        kind: MetricKind::Counter,
        help: "Keyset pages served.",
    },
];

/// A counter `metric{name="<name>"}` (plus one more label), or a no-op when the key is refused.
pub(crate) fn counter(
    recorder: &dyn Recorder,
    metric: &'static str,
    name: &str,
    label: Option<(&'static str, &'static str)>,
) -> Counter {
    brisk_metrics::describe(recorder, METRICS);
    let key = Key::new(metric).and_then(|key| key.with_label("name", name.to_owned()));
    let key = match label {
        Some((label, value)) => key.and_then(|key| key.with_label(label, value)),
        None => key,
    };
    key.map_or_else(|_| Counter::noop(), |key| recorder.counter(&key))
}

/// An encoder's counters: rows and bytes streamed, bodies aborted.
#[derive(Debug, Clone)]
pub(crate) struct EncodeMetrics {
    pub(crate) rows: Counter,
    pub(crate) bytes: Counter,
    pub(crate) aborted: Counter,
}

impl EncodeMetrics {
    pub(crate) fn noop() -> Self {
        Self {
            rows: Counter::noop(),
            bytes: Counter::noop(),
            aborted: Counter::noop(),
        }
    }

    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        Self {
            rows: counter(recorder, "brisk_stream_rows_total", name, None),
            bytes: counter(recorder, "brisk_stream_bytes_total", name, None),
            aborted: counter(recorder, "brisk_stream_aborted_total", name, None),
        }
    }
}

/// A cursor codec's counters: cursors issued and rejections by reason.
#[derive(Debug, Clone)]
pub(crate) struct CursorMetrics {
    pub(crate) issued: Counter,
    rejected: [Counter; 4],
}

impl CursorMetrics {
    pub(crate) fn noop() -> Self {
        Self {
            issued: Counter::noop(),
            rejected: std::array::from_fn(|_| Counter::noop()),
        }
    }

    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        Self {
            issued: counter(recorder, "brisk_stream_cursors_issued_total", name, None),
            rejected: CursorRejection::ALL.map(|reason| {
                counter(
                    recorder,
                    "brisk_stream_cursor_rejections_total",
                    name,
                    Some(("reason", reason.as_str())),
                )
            }),
        }
    }

    pub(crate) fn rejected(&self, reason: CursorRejection) {
        // `ALL` lists the reasons in declaration order, so a reason is its own index.
        self.rejected[reason as usize].increment();
    }
}
