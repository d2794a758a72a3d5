use brisk_metrics::{Counter, Description, Key, MetricKind, Recorder};

/// Every metric this crate exports, each labelled `name="<name>"`.
pub const METRICS: &[Description] = &[
    Description {
        name: "brisk_dedup_executions_total",
        kind: MetricKind::Counter,
        help: "Times the work of a key ran: first runs and takeovers.",
    },
    Description {
        name: "brisk_dedup_coalesced_total",
        kind: MetricKind::Counter,
        help: "Callers that joined an execution already running instead of running one.",
    },
    Description {
        name: "brisk_dedup_handovers_total",
        kind: MetricKind::Counter,
        help: "Waiters that took over after the running caller was dropped or its lease expired.",
    },
    Description {
        name: "brisk_dedup_panics_total",
        kind: MetricKind::Counter,
        help: "Executions that panicked.",
    },
    Description {
        name: "brisk_dedup_wait_timeouts_total",
        kind: MetricKind::Counter,
        help: "Waiters that gave up waiting for another caller's execution.",
    },
    Description {
        name: "brisk_dedup_remote_results_total",
        kind: MetricKind::Counter,
        help: "Results read from another instance's execution through Redis.",
    },
    Description {
        name: "brisk_dedup_lease_lost_total",
        kind: MetricKind::Counter,
        help: "Executions that found their Redis lease taken over by another instance.",
    },
    Description {
        name: "brisk_dedup_release_failures_total",
        kind: MetricKind::Counter,
        help: "Leases whose release (and result announcement) failed; followers take over when the lease expires.",
    },
    Description {
        name: "brisk_dedup_local_fallbacks_total",
        kind: MetricKind::Counter,
        help: "Executions run with in-process single-flight only, because Redis could not be reached (local_fallback).",
    },
];

/// The counters a group reports, each labelled `name="<name>"`.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// `brisk_dedup_executions_total`: times the work ran (first runs and takeovers).
    pub(crate) executions: Counter,
    /// `brisk_dedup_coalesced_total`: callers that joined an execution instead of running one.
    pub(crate) coalesced: Counter,
    /// `brisk_dedup_handovers_total`: a waiter took over after the running caller was dropped
    /// (locally) or its lease expired (across instances).
    pub(crate) handovers: Counter,
    /// `brisk_dedup_panics_total`: executions that panicked.
    pub(crate) panics: Counter,
    /// `brisk_dedup_wait_timeouts_total`: waiters that gave up.
    pub(crate) wait_timeouts: Counter,
    /// `brisk_dedup_remote_results_total`: results read from another instance's execution.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) remote_results: Counter,
    /// `brisk_dedup_lease_lost_total`: a running execution found its Redis lease taken over.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) lease_lost: Counter,
    /// `brisk_dedup_release_failures_total`: a finished execution could not release its Redis
    /// lease (and announce its outcome); followers wait for the lease to expire.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) release_failures: Counter,
    /// `brisk_dedup_local_fallbacks_total`: executions run without Redis because it could not
    /// be reached.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) local_fallbacks: Counter,
}

impl Metrics {
    pub(crate) fn noop() -> Self {
        Self {
            executions: Counter::noop(),
            coalesced: Counter::noop(),
            handovers: Counter::noop(),
            panics: Counter::noop(),
            wait_timeouts: Counter::noop(),
            remote_results: Counter::noop(),
            lease_lost: Counter::noop(),
            release_failures: Counter::noop(),
            local_fallbacks: Counter::noop(),
        }
    }

    /// Registers the counters; the group name becomes the `name` label.
    pub(crate) fn new(recorder: &dyn Recorder, group: &str) -> Self {
        brisk_metrics::describe(recorder, METRICS);
        let counter = |name: &'static str| {
            // Label values may be any text, and the names here are valid constants, so the key
            // cannot be rejected.
            let key = Key::new(name)
                .and_then(|key| key.with_label("name", group.to_owned()))
                .expect("constant metric names with a `name` label are valid");
            recorder.counter(&key)
        };
        Self {
            executions: counter("brisk_dedup_executions_total"),
            coalesced: counter("brisk_dedup_coalesced_total"),
            handovers: counter("brisk_dedup_handovers_total"),
            panics: counter("brisk_dedup_panics_total"),
            wait_timeouts: counter("brisk_dedup_wait_timeouts_total"),
            remote_results: counter("brisk_dedup_remote_results_total"),
            lease_lost: counter("brisk_dedup_lease_lost_total"),
            release_failures: counter("brisk_dedup_release_failures_total"),
            local_fallbacks: counter("brisk_dedup_local_fallbacks_total"),
        }
    }
}
