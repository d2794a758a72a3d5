//! The process' own figures, under the names Prometheus' client libraries give them:
//! CPU seconds, resident and virtual memory, open and maximum file descriptors, threads and
//! start time. Read from `/proc` (Linux) when a snapshot is taken.
//!
//! ```
//! # #[cfg(target_os = "linux")]
//! # {
//! use brisk_metrics::{Registry, process::ProcessCollector};
//!
//! let registry = Registry::new();
//! registry.register_collector(ProcessCollector::new());
//! let snapshot = registry.snapshot();
//! assert!(snapshot.sample("process_resident_memory_bytes", &[]).unwrap() > 0.0);
//! # }
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    collect::Collector,
    error::{Error, Result},
    recorder::{Description, MetricKind},
    snapshot::{SampleKind, SampleSnapshot},
};

/// The metrics [`ProcessCollector`] reports.
pub const PROCESS_METRICS: &[Description] = &[
    Description {
        name: "process_cpu_seconds_total",
        kind: MetricKind::Counter,
        help: "Total user and system CPU time spent in seconds.",
    },
    Description {
        name: "process_resident_memory_bytes",
        kind: MetricKind::Gauge,
        help: "Resident memory size in bytes.",
    },
    Description {
        name: "process_virtual_memory_bytes",
        kind: MetricKind::Gauge,
        help: "Virtual memory size in bytes.",
    },
    Description {
        name: "process_open_fds",
        kind: MetricKind::Gauge,
        help: "Number of open file descriptors.",
    },
    Description {
        name: "process_max_fds",
        kind: MetricKind::Gauge,
        help: "Maximum number of open file descriptors.",
    },
    Description {
        name: "process_threads",
        kind: MetricKind::Gauge,
        help: "Number of OS threads in the process.",
    },
    Description {
        name: "process_start_time_seconds",
        kind: MetricKind::Gauge,
        help: "Start time of the process since unix epoch in seconds.",
    },
    Description {
        name: "brisk_metrics_process_read_failures_total",
        kind: MetricKind::Counter,
        help: "Snapshots in which the process figures could not be read (they are left out of that snapshot).",
    },
];

/// The process' figures at one moment ([`ProcessStats::read`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProcessStats {
    /// User and system CPU time since the process started, in seconds (10 ms resolution).
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub resident_memory_bytes: u64,
    /// Virtual memory size in bytes.
    pub virtual_memory_bytes: u64,
    /// Open file descriptors (counting the one used to count them, as other collectors do).
    pub open_fds: u64,
    /// The soft limit on open file descriptors; `None` when unlimited.
    pub max_fds: Option<u64>,
    /// OS threads.
    pub threads: u64,
    /// When the process started, in seconds since the Unix epoch (10 ms resolution).
    pub start_time_seconds: f64,
}

/// Clock ticks per second in `/proc`'s times: `USER_HZ`, which Linux fixes at 100 for user
/// space on every architecture Rust's tier 1 and 2 Linux targets use.
const USER_HZ: f64 = 100.0;

impl ProcessStats {
    /// Reads this process' figures from `/proc/self`.
    ///
    /// # Errors
    /// [`Error::ProcessStats`] naming the file that could not be read or parsed; on systems
    /// without `/proc` (not Linux), its source is of kind `Unsupported`.
    pub fn read() -> Result<Self> {
        #[cfg(target_os = "linux")]
        {
            read_linux()
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(Error::ProcessStats {
                file: "/proc/self",
                source: std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "process figures are read from /proc, which only Linux has",
                ),
            })
        }
    }
}

#[cfg(target_os = "linux")]
fn read_linux() -> Result<ProcessStats> {
    let read = |file: &'static str| {
        std::fs::read_to_string(file).map_err(|source| Error::ProcessStats { file, source })
    };
    let invalid = |file: &'static str| Error::ProcessStats {
        file,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unexpected format"),
    };
    let stat = parse_stat(&read("/proc/self/stat")?).ok_or_else(|| invalid("/proc/self/stat"))?;
    let status = read("/proc/self/status")?;
    let kib = |field| parse_kib(&status, field).ok_or_else(|| invalid("/proc/self/status"));
    let (resident_kib, virtual_kib) = (kib("VmRSS:")?, kib("VmSize:")?);
    let boot_time = parse_boot_time(&read("/proc/stat")?).ok_or_else(|| invalid("/proc/stat"))?;
    let max_fds = parse_max_open_files(&read("/proc/self/limits")?)
        .ok_or_else(|| invalid("/proc/self/limits"))?;
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map_err(|source| Error::ProcessStats {
            file: "/proc/self/fd",
            source,
        })?
        .count() as u64;
    Ok(ProcessStats {
        cpu_seconds: (stat.utime + stat.stime) as f64 / USER_HZ,
        resident_memory_bytes: resident_kib.saturating_mul(1024),
        virtual_memory_bytes: virtual_kib.saturating_mul(1024),
        open_fds,
        max_fds,
        threads: stat.threads,
        start_time_seconds: boot_time as f64 + stat.start_ticks as f64 / USER_HZ,
    })
}

/// The fields of `/proc/self/stat` the collector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
}

/// Parses `/proc/<pid>/stat`: `pid (comm) state ppid ...`, where `comm` may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // Field 3 (state) is index 0 here, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
    })
}

/// A `Name:   1234 kB` line of `/proc/<pid>/status`, in KiB.
fn parse_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(name))?;
    let mut words = line[name.len()..].split_ascii_whitespace();
    let value = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(value)
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of the `Max open files` line of `/proc/<pid>/limits`; `Some(None)` when
/// unlimited.
fn parse_max_open_files(limits: &str) -> Option<Option<u64>> {
    let line = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    match line.split_ascii_whitespace().next()? {
        "unlimited" => Some(None),
        soft => soft.parse().ok().map(Some),
    }
}

/// A [`Collector`] of the process' figures ([`PROCESS_METRICS`]), read at each snapshot.
///
/// A read costs a few `/proc` files and a directory listing (tens of microseconds); a
/// snapshot in which it fails leaves these metrics out and counts
/// `brisk_metrics_process_read_failures_total`.
#[derive(Debug, Default)]
pub struct ProcessCollector {
    failures: AtomicU64,
}

impl ProcessCollector {
    /// A collector for this process.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut Vec<SampleSnapshot>) {
        if let Ok(stats) = ProcessStats::read() {
            let gauge =
                |name: &str, value: f64| SampleSnapshot::new(name, SampleKind::Gauge, value);
            out.extend([
                SampleSnapshot::new(
                    "process_cpu_seconds_total",
                    SampleKind::Counter,
                    stats.cpu_seconds,
                ),
                gauge(
                    "process_resident_memory_bytes",
                    stats.resident_memory_bytes as f64,
                ),
                gauge(
                    "process_virtual_memory_bytes",
                    stats.virtual_memory_bytes as f64,
                ),
                gauge("process_open_fds", stats.open_fds as f64),
                gauge("process_threads", stats.threads as f64),
                gauge("process_start_time_seconds", stats.start_time_seconds),
            ]);
            if let Some(max) = stats.max_fds {
                out.push(gauge("process_max_fds", max as f64));
            }
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        out.push(SampleSnapshot::new(
            "brisk_metrics_process_read_failures_total",
            SampleKind::Counter,
            self.failures.load(Ordering::Relaxed) as f64,
        ));
    }

    fn describe(&self) -> &[Description] {
        PROCESS_METRICS
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The fields after `comm`, numbered from 3 (state), with utime=14, stime=15,
    /// threads=20 and starttime=22 set.
    fn stat_line(comm: &str, utime: u64, stime: u64, threads: u64, start: u64) -> String {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[0] = "S".to_owned();
        fields[14 - 3] = utime.to_string();
        fields[15 - 3] = stime.to_string();
        fields[20 - 3] = threads.to_string();
        fields[22 - 3] = start.to_string();
        format!("4242 ({comm}) {}\n", fields.join(" "))
    }

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = stat_line("my (odd) name) x", 250, 50, 7, 123_456);
        assert_eq!(
            parse_stat(&line),
            Some(Stat {
                utime: 250,
                stime: 50,
                threads: 7,
                start_ticks: 123_456
            })
        );
        assert_eq!(parse_stat("4242 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis at all"), None);
    }

    #[test]
    fn status_limits_and_boot_time_lines() {
        let status = "Name:\tx\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(parse_kib(status, "VmSize:"), Some(123_456));
        assert_eq!(parse_kib(status, "VmSwap:"), None);
        assert_eq!(parse_kib("VmRSS:\t12 MB\n", "VmRSS:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(Some(1024)));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), Some(None));
        assert_eq!(parse_max_open_files("Max processes 10 10\n"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu  1 2 3\n"), None);
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_a_panic(text in ".{0,400}") {
            let _ = parse_stat(&text);
            let _ = parse_kib(&text, "VmRSS:");
            let _ = parse_boot_time(&text);
            let _ = parse_max_open_files(&text);
        }

        #[test]
        fn any_comm_keeps_the_numbers(
            comm in "[ -~]{0,32}",
            utime in any::<u64>(),
            stime in any::<u64>(),
            threads in 1..10_000_u64,
            start in any::<u64>(),
        ) {
            let line = stat_line(&comm, utime, stime, threads, start);
            prop_assert_eq!(
                parse_stat(&line),
                Some(Stat { utime, stime, threads, start_ticks: start })
            );
        }
    }
}
