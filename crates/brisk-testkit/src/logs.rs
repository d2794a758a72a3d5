//! A tracing subscriber that keeps events as text, for tests that check what was logged.

use std::sync::{Arc, Mutex, PoisonError};

use tracing::subscriber::DefaultGuard;

/// Captures the `tracing` events of the current thread (a test on tokio's current-thread
/// runtime sees all of its tasks' events) until it is dropped. Each event is one line:
/// `<target> <field>=<value> ...`, the message under `message`.
#[derive(Debug)]
pub struct LogCapture {
    lines: Arc<Mutex<Vec<String>>>,
    _guard: DefaultGuard,
}

impl LogCapture {
    /// Starts capturing this thread's events.
    pub fn this_thread() -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let guard = tracing::subscriber::set_default(Subscriber(Arc::clone(&lines)));
        Self {
            lines,
            _guard: guard,
        }
    }

    /// The events captured so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct Subscriber(Arc<Mutex<Vec<String>>>);

impl tracing::Subscriber for Subscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={:?}", field.name(), value));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push_str(&format!(" {}={}", field.name(), value));
            }
        }
        let mut line = Line(event.metadata().target().to_owned());
        event.record(&mut line);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_of_this_thread_are_kept_as_lines() {
        let capture = LogCapture::this_thread();
        tracing::warn!(target: "app::db", statement = "SELECT ?", elapsed_ms = 12.5, "slow");
        std::thread::spawn(|| tracing::warn!("another thread"))
            .join()
            .unwrap();
        assert_eq!(
            capture.lines(),
            ["app::db message=slow statement=SELECT ? elapsed_ms=12.5"]
        );
    }
}
