use brisk_metrics::{Counter, Description, Gauge, Histogram, Key, MetricKind, Recorder, Unit};

/// Every metric this crate exports, each labelled `name="<name>"`.
pub const METRICS: &[Description] = &[
    Description {
        name: "brisk_pool_acquire_seconds",
        kind: MetricKind::Histogram(Unit::Seconds),
        help: "Time from asking the pool for a connection to getting one (0 when one was idle).",
    },
    Description {
        name: "brisk_pool_acquire_timeouts_total",
        kind: MetricKind::Counter,
        help: "Checkouts that gave up waiting for a connection.",
    },
    Description {
        name: "brisk_pool_connects_total",
        kind: MetricKind::Counter,
        help: "Connections opened.",
    },
    Description {
        name: "brisk_pool_connect_failures_total",
        kind: MetricKind::Counter,
        help: "Connection attempts that failed or timed out.",
    },
    Description {
        name: "brisk_pool_closes_total",
        kind: MetricKind::Counter,
        help: "Connections closed, by reason (broken, invalid, lifetime, idle).",
    },
    Description {
        name: "brisk_pool_leaks_total",
        kind: MetricKind::Counter,
        help: "Checkouts held past the leak threshold.",
    },
    Description {
        name: "brisk_pool_connections",
        kind: MetricKind::Gauge,
        help: "Open connections by state (in_use, idle), sampled by the pool's housekeeper.",
    },
    Description {
        name: "brisk_pool_waiting",
        kind: MetricKind::Gauge,
        help: "Checkouts waiting for a connection, sampled by the pool's housekeeper.",
    },
    Description {
        name: "brisk_pool_circuit_state",
        kind: MetricKind::Gauge,
        help: "The pool's circuit breaker: 0 closed, 1 open (checkouts fail at once until a probe connects).",
    },
    Description {
        name: "brisk_pool_circuit_opened_total",
        kind: MetricKind::Counter,
        help: "Times the pool's circuit breaker opened after a run of connect failures.",
    },
    Description {
        name: "brisk_pool_rejected_total",
        kind: MetricKind::Counter,
        help: "Checkouts the open circuit breaker failed at once (Error::Unavailable).",
    },
    Description {
        name: "brisk_pool_redis_command_seconds",
        kind: MetricKind::Histogram(Unit::Seconds),
        help: "Time from sending a command or pipeline on a SharedRedis to its reply or failure.",
    },
    Description {
        name: "brisk_pool_redis_command_failures_total",
        kind: MetricKind::Counter,
        help: "Commands or pipelines on a SharedRedis that failed, by kind (timeout, io, server, other).",
    },
    Description {
        name: "brisk_pool_query_seconds",
        kind: MetricKind::Histogram(Unit::Seconds),
        help: "Time each statement took on a tracked diesel connection, by normalised statement (QueryTracking).",
    },
    Description {
        name: "brisk_pool_query_errors_total",
        kind: MetricKind::Counter,
        help: "Statements that failed on a tracked diesel connection, by normalised statement.",
    },
    Description {
        name: "brisk_pool_slow_queries_total",
        kind: MetricKind::Counter,
        help: "Statements that took at least the slow threshold on a tracked diesel connection (each is logged).",
    },
];

/// Why a connection was closed, the `reason` label of `brisk_pool_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Found broken without I/O, on checkout or return.
    Broken,
    /// Failed its validation round trip.
    Invalid,
    /// Reached its (jittered) lifetime.
    Lifetime,
    /// Sat idle past the idle timeout.
    Idle,
}

/// The series a pool reports, each labelled `name="<name>"`.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    /// `brisk_pool_acquire_seconds`: time from `get()` to a connection (0 when one was idle).
    pub(crate) acquire: Histogram,
    /// `brisk_pool_acquire_timeouts_total`.
    pub(crate) timeouts: Counter,
    /// `brisk_pool_connects_total`: connections opened.
    pub(crate) connects: Counter,
    /// `brisk_pool_connect_failures_total`: connect attempts that failed (or timed out).
    pub(crate) connect_failures: Counter,
    /// `brisk_pool_closes_total{reason}`.
    closes: [Counter; 4],
    /// `brisk_pool_leaks_total`: checkouts held past the leak threshold.
    pub(crate) leaks: Counter,
    /// `brisk_pool_connections{state="in_use"}`, sampled by the housekeeper.
    pub(crate) in_use: Gauge,
    /// `brisk_pool_connections{state="idle"}`, sampled by the housekeeper.
    pub(crate) idle: Gauge,
    /// `brisk_pool_waiting`: checkouts waiting for a connection, sampled by the housekeeper.
    pub(crate) waiting: Gauge,
    /// `brisk_pool_circuit_state`: 0 closed, 1 open; set as it changes.
    pub(crate) circuit_state: Gauge,
    /// `brisk_pool_circuit_opened_total`.
    pub(crate) circuit_opened: Counter,
    /// `brisk_pool_rejected_total`: checkouts the open breaker failed.
    pub(crate) rejected: Counter,
}

impl Metrics {
    pub(crate) fn noop() -> Self {
        Self {
            acquire: Histogram::noop(Unit::Seconds),
            timeouts: Counter::noop(),
            connects: Counter::noop(),
            connect_failures: Counter::noop(),
            closes: [
                Counter::noop(),
                Counter::noop(),
                Counter::noop(),
                Counter::noop(),
            ],
            leaks: Counter::noop(),
            in_use: Gauge::noop(),
            idle: Gauge::noop(),
            waiting: Gauge::noop(),
            circuit_state: Gauge::noop(),
            circuit_opened: Counter::noop(),
            rejected: Counter::noop(),
        }
    }

    /// Registers the series; `pool` becomes the `name` label.
    pub(crate) fn new(recorder: &dyn Recorder, pool: &str) -> Self {
        brisk_metrics::describe(recorder, METRICS);
        let key = |name: &'static str, extra: Option<(&'static str, &'static str)>| {
            // The names are valid constants and label values may be any text, so the key
            // cannot be rejected.
            let key = Key::new(name)
                .and_then(|key| key.with_label("name", pool.to_owned()))
                .and_then(|key| match extra {
                    Some((label, value)) => key.with_label(label, value),
                    None => Ok(key),
                });
            key.expect("constant metric names and labels are valid")
        };
        let closes =
            |reason| recorder.counter(&key("brisk_pool_closes_total", Some(("reason", reason))));
        let connections =
            |state| recorder.gauge(&key("brisk_pool_connections", Some(("state", state))));
        Self {
            acquire: recorder.histogram(&key("brisk_pool_acquire_seconds", None), Unit::Seconds),
            timeouts: recorder.counter(&key("brisk_pool_acquire_timeouts_total", None)),
            connects: recorder.counter(&key("brisk_pool_connects_total", None)),
            connect_failures: recorder.counter(&key("brisk_pool_connect_failures_total", None)),
            closes: [
                closes("broken"),
                closes("invalid"),
                closes("lifetime"),
                closes("idle"),
            ],
            leaks: recorder.counter(&key("brisk_pool_leaks_total", None)),
            in_use: connections("in_use"),
            idle: connections("idle"),
            waiting: recorder.gauge(&key("brisk_pool_waiting", None)),
            circuit_state: recorder.gauge(&key("brisk_pool_circuit_state", None)),
            circuit_opened: recorder.counter(&key("brisk_pool_circuit_opened_total", None)),
            rejected: recorder.counter(&key("brisk_pool_rejected_total", None)),
        }
    }

    pub(crate) fn closed(&self, reason: CloseReason, count: u64) {
        let index = match reason {
            CloseReason::Broken => 0,
            CloseReason::Invalid => 1,
            CloseReason::Lifetime => 2,
            CloseReason::Idle => 3,
        };
        self.closes[index].add(count);
    }
}

/// The series a [`SharedRedis`](crate::redis::SharedRedis) reports, labelled `name="<name>"`.
#[cfg(feature = "redis")]
#[derive(Debug)]
pub(crate) struct RedisMetrics {
    /// `brisk_pool_redis_command_seconds`.
    pub(crate) command: Histogram,
    /// `brisk_pool_redis_command_failures_total{kind}`: timeout, io, server, other.
    failures: [Counter; 4],
}

#[cfg(feature = "redis")]
impl RedisMetrics {
    pub(crate) fn new(recorder: &dyn Recorder, name: &str) -> Self {
        brisk_metrics::describe(recorder, METRICS);
        let key = |metric: &'static str| {
            Key::new(metric).and_then(|key| key.with_label("name", name.to_owned()))
        };
        let failures = |kind: &'static str| {
            let key = key("brisk_pool_redis_command_failures_total")
                .and_then(|key| key.with_label("kind", kind));
            recorder.counter(&key.expect("constant metric names and labels are valid"))
        };
        let command = key("brisk_pool_redis_command_seconds")
            .expect("constant metric names and labels are valid");
        Self {
            command: recorder.histogram(&command, Unit::Seconds),
            failures: [
                failures("timeout"),
                failures("io"),
                failures("server"),
                failures("other"),
            ],
        }
    }

    /// Counts a failed command: no reply in time, the connection failing, an error reply
    /// redis-rs raised itself (e.g. a transaction's `EXECABORT`), or anything else.
    pub(crate) fn failed(&self, error: &redis::RedisError) {
        let index = if error.is_timeout() {
            0
        } else if error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
        {
            1
        } else if error.code().is_some() {
            2
        } else {
            3
        };
        self.failures[index].increment();
    }

    /// Counts a command the server answered with an error reply.
    pub(crate) fn refused(&self) {
        self.failures[2].increment();
    }
}
