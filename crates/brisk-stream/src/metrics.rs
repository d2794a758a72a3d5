//! The handles brisk-stream records into, registered once per instance.

use brisk_metrics::{Counter, Key, Recorder};

use crate::error::CursorRejection;

/// A counter `metric{name="<name>"}` (plus one more label), or a no-op when the key is refused.
pub(crate) fn counter(
    recorder: &dyn Recorder,
    metric: &'static str,
    name: &str,
    label: Option<(&'static str, &'static str)>,
) -> Counter {
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
