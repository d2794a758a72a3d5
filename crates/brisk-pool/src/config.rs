//! Pool settings: defaults, validation, and parsing from URL query parameters and environment
//! variables.

use std::time::Duration;

// The one duration grammar of the brisk crates.
use brisk_metrics::{DURATION_GRAMMAR, parse_duration};

use crate::error::{Error, Result};

/// When a connection is checked with a round trip (`SELECT 1`, `PING`) before it is handed out.
///
/// Whatever the policy, a connection that is already known to be broken (closed socket, open
/// or failed transaction, past its lifetime) is never handed out: that check costs no I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Validation {
    /// Before every checkout. Safe and slow: it halves throughput on short queries.
    Always,
    /// Only connections that sat idle for at least this long, measured to within 1/8 of it
    /// (HikariCP's approach). A connection that has just been used is known to work; one that
    /// sat idle may have been cut by a restart, a failover or a firewall. The default is 500 ms.
    IdleFor(Duration),
    /// Never. A connection cut while idle fails its first query after checkout, and is then
    /// dropped when it comes back.
    Never,
}

impl Default for Validation {
    fn default() -> Self {
        Self::IdleFor(Duration::from_millis(500))
    }
}

/// Which idle connection a checkout takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Order {
    /// The one idle longest: use spreads over all connections (the default, as in bb8).
    #[default]
    Fifo,
    /// The one returned last: a hot subset stays warm and the rest reach the idle timeout, so
    /// the pool shrinks after a burst.
    Lifo,
}

/// The pool's circuit breaker, off by default: after `failures` connect attempts in a row
/// fail, checkouts fail at once with [`Error::Unavailable`](crate::Error::Unavailable) instead
/// of waiting out the acquire timeout, and a probe connects every `probe_interval` until one
/// succeeds. See [`PoolBuilder::circuit_breaker`](crate::PoolBuilder::circuit_breaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CircuitBreaker {
    /// Connect attempts that must fail in a row (with no success between) to open it; at
    /// least 1.
    pub failures: u32,
    /// How long after opening, and after each failed probe, the next probe connects; longer
    /// than zero.
    pub probe_interval: Duration,
}

impl CircuitBreaker {
    /// A breaker that opens after `failures` connect failures in a row and probes every
    /// `probe_interval`.
    pub fn new(failures: u32, probe_interval: Duration) -> Self {
        Self {
            failures,
            probe_interval,
        }
    }
}

/// The settings of a pool. Build one with [`Config::default`] and assignments, from a URL
/// ([`Config::apply_url`]) or from the environment ([`Config::from_env`]), and hand it to
/// [`Builder::config`](crate::PoolBuilder::config); or set each value on the builder.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Most connections open at once, in use or idle. Default 10.
    pub max_size: u32,
    /// Idle connections kept ready. The pool opens this many while it is built and fails
    /// with the first connect error. Default 1, so a wrong URL fails at start-up.
    pub min_idle: u32,
    /// Longest a checkout waits for a connection. Default 5 s.
    pub acquire_timeout: Duration,
    /// Longest one connect attempt (with its connect hook) or one validation may take.
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// Connections older than this are closed when they are next returned or checked out.
    /// Default 30 min; `None` keeps them forever.
    pub max_lifetime: Option<Duration>,
    /// Each connection's lifetime is shortened by a random amount up to this, so that
    /// connections opened together are not all replaced at once. Default: a tenth of
    /// `max_lifetime`.
    pub lifetime_jitter: Option<Duration>,
    /// Idle connections unused for this long are closed (down to `min_idle`). Default 10 min.
    pub idle_timeout: Option<Duration>,
    /// Which idle connection a checkout takes. Default [`Order::Fifo`].
    pub order: Order,
    /// When connections are checked with a round trip. Default idle for 500 ms.
    pub validation: Validation,
    /// Further connect attempts after a failed one, in the background. Default 2.
    pub connect_retries: u32,
    /// The first wait before a retry; it doubles per attempt, up to 2 s, with jitter.
    /// Default 100 ms.
    pub retry_backoff: Duration,
    /// A connection held longer than this is reported as a possible leak, with the code
    /// location that checked it out. Default off.
    pub leak_threshold: Option<Duration>,
    /// Fail checkouts at once while connects keep failing. Default off (`None`).
    pub circuit_breaker: Option<CircuitBreaker>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_size: 10,
            min_idle: 1,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            lifetime_jitter: None,
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            order: Order::Fifo,
            validation: Validation::default(),
            connect_retries: 2,
            retry_backoff: Duration::from_millis(100),
            leak_threshold: None,
            circuit_breaker: None,
        }
    }
}

/// The settings that can be given by name, in URL parameters (`pool_max_size=16`) and
/// environment variables (`DATABASE_POOL_MAX_SIZE=16`).
const KEYS: &[&str] = &[
    "max_size",
    "min_idle",
    "acquire_timeout",
    "connect_timeout",
    "max_lifetime",
    "lifetime_jitter",
    "idle_timeout",
    "order",
    "validation",
    "connect_retries",
    "retry_backoff",
    "leak_threshold",
    "circuit_breaker",
];

impl Config {
    /// Reads settings from the environment: `{prefix}_POOL_MAX_SIZE`, `{prefix}_POOL_MIN_IDLE`,
    /// `{prefix}_POOL_ACQUIRE_TIMEOUT`, ... (every [`Config`] field in upper case). Unset
    /// variables keep their defaults; a set but invalid one (or one whose value is not UTF-8,
    /// which the error does not echo) is an [`Error::Config`].
    ///
    /// Values are as in [`Config::set`].
    pub fn from_env(prefix: &str) -> Result<Self> {
        Self::from_vars(prefix, |name| std::env::var(name))
    }

    fn from_vars(
        prefix: &str,
        var: impl Fn(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Self> {
        let mut config = Self::default();
        for key in KEYS {
            let name = format!("{prefix}_POOL_{}", key.to_ascii_uppercase());
            match var(&name) {
                Ok(value) => config.set_named(key, &name, &value)?,
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Error::Config {
                        setting: name,
                        value: "<not UTF-8>".to_owned(),
                        reason: "the variable is set but its value is not UTF-8",
                    });
                }
            }
        }
        Ok(config)
    }

    /// Takes the `pool_*` query parameters out of a connection URL, applies them, and returns
    /// the URL without them, ready for the driver:
    ///
    /// ```
    /// # fn main() -> Result<(), brisk_pool::Error> {
    /// let mut config = brisk_pool::Config::default();
    /// let url = config.apply_url("postgres://app@db/app?sslmode=disable&pool_max_size=32&pool_validation=1s")?;
    /// assert_eq!(url, "postgres://app@db/app?sslmode=disable");
    /// assert_eq!(config.max_size, 32);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// An unknown `pool_*` parameter is an error, so a misspelt setting is not silently
    /// ignored; other parameters are left for the driver in their order. As for the
    /// PostgreSQL driver, the query starts at the first `?` after the first `@`, so an
    /// unencoded `?`, `#` or `&` in a password is left alone. A URL whose query starts before
    /// its first `@` (`postgres://db/app?pool_max_size=3&user=app@corp`: an `@` left
    /// unencoded in a query value) is an [`Error::Config`] for the setting `url`, since the
    /// driver would read the host, path and query up to that `@` as the credentials; the
    /// URL is not echoed.
    pub fn apply_url(&mut self, url: &str) -> Result<String> {
        // The query and fragment are looked for after the credentials (the first `@`), as the
        // PostgreSQL driver reads them: a password may hold `?`, `#` or `pool_`.
        if crate::target::query_read_as_credentials(url) {
            return Err(Error::Config {
                setting: "url".to_owned(),
                value: crate::target::UNPARSEABLE.to_owned(),
                reason: "an unencoded `@` comes after the start of the query: the driver reads \
                         everything before it as the user and password, so its `pool_*` and \
                         other parameters would be lost (percent-encode the `@` as %40)",
            });
        }
        let start = crate::target::after_credentials(url);
        let (url, fragment) = match url[start..].find('#') {
            Some(hash) => (&url[..start + hash], Some(&url[start + hash + 1..])),
            None => (url, None),
        };
        let Some(question) = url[start..].find('?') else {
            return Ok(rejoin(url, &[], fragment));
        };
        let (base, query) = (&url[..start + question], &url[start + question + 1..]);
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name.strip_prefix("pool_") {
                Some(key) => self.set_named(key, name, value)?,
                None => kept.push(pair),
            }
        }
        Ok(rejoin(base, &kept, fragment))
    }

    /// Sets one setting by its field name (`max_size`, `acquire_timeout`, ...).
    ///
    /// - Counts are decimal integers.
    /// - Durations have a unit: `250ms`, `5s`, `30m`, `1h`. Optional ones also accept `off`.
    /// - `order` is `fifo` or `lifo`.
    /// - `validation` is `always`, `never`, or a duration: validate connections idle that long.
    /// - `circuit_breaker` is `off`, or failures and a probe interval: `3,50ms`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        self.set_named(key, key, value)
    }

    /// [`Config::set`], reporting errors under `name` (the URL parameter or variable name).
    fn set_named(&mut self, key: &str, name: &str, value: &str) -> Result<()> {
        let invalid = |reason| Error::Config {
            setting: name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let trimmed = value.trim();
        let count = || {
            trimmed
                .parse::<u32>()
                .map_err(|_| invalid("expected a whole number"))
        };
        let duration = || parse_duration(trimmed).ok_or_else(|| invalid(DURATION_GRAMMAR));
        let optional = || match trimmed {
            "off" | "none" => Ok(None),
            _ => parse_duration(trimmed)
                .map(Some)
                .ok_or_else(|| invalid(OPTIONAL_DURATION)),
        };
        match key {
            "max_size" => self.max_size = count()?,
            "min_idle" => self.min_idle = count()?,
            "acquire_timeout" => self.acquire_timeout = duration()?,
            "connect_timeout" => self.connect_timeout = duration()?,
            "max_lifetime" => self.max_lifetime = optional()?,
            "lifetime_jitter" => self.lifetime_jitter = Some(duration()?),
            "idle_timeout" => self.idle_timeout = optional()?,
            "order" => {
                self.order = match trimmed.to_ascii_lowercase().as_str() {
                    "fifo" => Order::Fifo,
                    "lifo" => Order::Lifo,
                    _ => return Err(invalid("expected fifo or lifo")),
                }
            }
            "validation" => {
                self.validation = match trimmed.to_ascii_lowercase().as_str() {
                    "always" => Validation::Always,
                    "never" => Validation::Never,
                    other => Validation::IdleFor(parse_duration(other).ok_or_else(|| {
                        invalid("expected always, never or an idle time such as 500ms")
                    })?),
                }
            }
            "connect_retries" => self.connect_retries = count()?,
            "retry_backoff" => self.retry_backoff = duration()?,
            "leak_threshold" => self.leak_threshold = optional()?,
            "circuit_breaker" => {
                self.circuit_breaker = match trimmed {
                    "off" | "none" => None,
                    _ => {
                        let reason = "off, or failures and a probe interval such as 3,50ms";
                        let (failures, interval) =
                            trimmed.split_once(',').ok_or_else(|| invalid(reason))?;
                        Some(CircuitBreaker {
                            failures: failures.trim().parse().map_err(|_| invalid(reason))?,
                            probe_interval: parse_duration(interval.trim())
                                .ok_or_else(|| invalid(reason))?,
                        })
                    }
                }
            }
            _ => {
                return Err(Error::Config {
                    setting: name.to_owned(),
                    value: value.to_owned(),
                    reason: "unknown pool setting; known: max_size, min_idle, acquire_timeout, \
                             connect_timeout, max_lifetime, lifetime_jitter, idle_timeout, order, \
                             validation, connect_retries, retry_backoff, leak_threshold, \
                             circuit_breaker",
                });
            }
        }
        Ok(())
    }

    /// Checks the settings against each other; called when a pool is built.
    pub(crate) fn check(&self) -> Result<()> {
        let invalid = |setting: &str, value: String, reason| {
            Err(Error::Config {
                setting: setting.to_owned(),
                value,
                reason,
            })
        };
        if self.max_size == 0 {
            return invalid(
                "max_size",
                "0".into(),
                "a pool needs at least one connection",
            );
        }
        if self.min_idle > self.max_size {
            return invalid(
                "min_idle",
                self.min_idle.to_string(),
                "must not exceed max_size",
            );
        }
        for (key, value) in [
            ("acquire_timeout", self.acquire_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                return invalid(key, "0s".into(), "must be longer than zero");
            }
        }
        // bb8 asserts on a zero idle timeout: a panic at build.
        if self.idle_timeout.is_some_and(|timeout| timeout.is_zero()) {
            return invalid(
                "idle_timeout",
                "0s".into(),
                "must be longer than zero (no_idle_timeout() or `off` keeps idle connections)",
            );
        }
        if let Validation::IdleFor(window) = self.validation
            && window.is_zero()
        {
            return invalid(
                "validation",
                "0s".into(),
                "use `always` to validate every checkout",
            );
        }
        if let Some(breaker) = self.circuit_breaker {
            if breaker.failures == 0 {
                return invalid(
                    "circuit_breaker",
                    format!("{},{:?}", breaker.failures, breaker.probe_interval),
                    "failures must be at least 1",
                );
            }
            if breaker.probe_interval.is_zero() {
                return invalid(
                    "circuit_breaker",
                    format!("{},{:?}", breaker.failures, breaker.probe_interval),
                    "the probe interval must be longer than zero",
                );
            }
        }
        if let (Some(lifetime), Some(jitter)) = (self.max_lifetime, self.lifetime_jitter)
            && jitter >= lifetime
        {
            return invalid(
                "lifetime_jitter",
                format!("{jitter:?}"),
                "must be shorter than max_lifetime",
            );
        }
        Ok(())
    }

    /// The jitter actually applied: the configured one, or a tenth of the lifetime.
    pub(crate) fn effective_jitter(&self) -> Duration {
        match (self.max_lifetime, self.lifetime_jitter) {
            (None, _) => Duration::ZERO,
            (Some(_), Some(jitter)) => jitter,
            (Some(lifetime), None) => lifetime / 10,
        }
    }
}

const OPTIONAL_DURATION: &str = "a duration (a number and a unit: 250ms, 1.5s, 30m, 1h) or off";

fn rejoin(base: &str, params: &[&str], fragment: Option<&str>) -> String {
    let mut url = base.to_owned();
    if !params.is_empty() {
        url.push('?');
        url.push_str(&params.join("&"));
    }
    if let Some(fragment) = fragment {
        url.push('#');
        url.push_str(fragment);
    }
    url
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn url_parameters_are_applied_and_removed() {
        let mut config = Config::default();
        let url = config
            .apply_url(
                "postgres://app:secret@db:5432/app?pool_max_size=32&sslmode=disable\
                 &pool_acquire_timeout=250ms&pool_max_lifetime=off&pool_order=LIFO\
                 &application_name=api&pool_validation=never&pool_leak_threshold=30s\
                 &pool_circuit_breaker=3,50ms",
            )
            .unwrap();
        assert_eq!(
            url,
            "postgres://app:secret@db:5432/app?sslmode=disable&application_name=api"
        );
        assert_eq!(config.max_size, 32);
        assert_eq!(config.acquire_timeout, Duration::from_millis(250));
        assert_eq!(config.max_lifetime, None);
        assert_eq!(config.order, Order::Lifo);
        assert_eq!(config.validation, Validation::Never);
        assert_eq!(config.leak_threshold, Some(Duration::from_secs(30)));
        assert_eq!(
            config.circuit_breaker,
            Some(CircuitBreaker::new(3, Duration::from_millis(50)))
        );
    }

    #[test]
    fn a_password_holding_query_characters_is_left_alone() {
        let mut config = Config::default();
        let url = config
            .apply_url(
                "postgres://app:p?pool_max_size=x&&y#z@db/app?pool_max_size=3&sslmode=require",
            )
            .unwrap();
        assert_eq!(
            url,
            "postgres://app:p?pool_max_size=x&&y#z@db/app?sslmode=require"
        );
        assert_eq!(config.max_size, 3);
    }

    #[test]
    fn pool_parameters_before_an_at_in_the_query_are_refused() {
        // tokio-postgres reads everything before the first `@` as the credentials: these
        // `pool_*` parameters would go to the driver as part of a user name.
        for url in [
            "postgres://db/app?pool_max_size=3&user=app@corp",
            "postgres://db:5432/app?pool_max_size=3&password=p@ss",
            "postgres://db/app?user=app@corp&pool_max_size=3",
        ] {
            let mut config = Config::default();
            let error = config.apply_url(url).unwrap_err();
            assert!(
                matches!(&error, Error::Config { setting, value, .. }
                    if setting == "url" && !value.contains("ss") && !value.contains("corp")),
                "{url}: {error:?}"
            );
            assert_eq!(config.max_size, Config::default().max_size, "{url}");
        }
    }

    #[test]
    fn a_url_with_only_pool_parameters_loses_its_question_mark() {
        let mut config = Config::default();
        assert_eq!(
            config
                .apply_url("redis://127.0.0.1:6379/0?pool_min_idle=0")
                .unwrap(),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(config.min_idle, 0);
        assert_eq!(
            config.apply_url("sqlite://app.db").unwrap(),
            "sqlite://app.db"
        );
    }

    #[test]
    fn unknown_and_malformed_settings_are_typed_errors() {
        let mut config = Config::default();
        let error = config
            .apply_url("postgres://db/app?pool_max_sise=3")
            .unwrap_err();
        assert!(
            matches!(&error, Error::Config { setting, .. } if setting == "pool_max_sise"),
            "{error}"
        );
        for (key, value) in [
            ("max_size", "-1"),
            ("acquire_timeout", "5"),
            ("acquire_timeout", "5 parsecs"),
            ("max_lifetime", "forever"),
            ("order", "random"),
            ("validation", "sometimes"),
            ("connect_timeout", "99999999999999999h"),
            ("circuit_breaker", "3"),
            ("circuit_breaker", "x,50ms"),
            ("circuit_breaker", "3,soon"),
        ] {
            let error = config.set(key, value).unwrap_err();
            assert!(
                matches!(&error, Error::Config { setting: k, value: v, .. } if k == key && v == value),
                "{error}"
            );
        }
        assert_eq!(config, Config::default(), "failed settings change nothing");
    }

    #[test]
    fn environment_variables_use_the_prefix() {
        let vars: HashMap<&str, &str> = [
            ("DATABASE_POOL_MAX_SIZE", "24"),
            ("DATABASE_POOL_VALIDATION", "2s"),
            ("DATABASE_POOL_IDLE_TIMEOUT", "off"),
            ("OTHER_POOL_MAX_SIZE", "3"),
        ]
        .into();
        let config = Config::from_vars("DATABASE", |name| {
            vars.get(name)
                .map(|v| (*v).to_owned())
                .ok_or(std::env::VarError::NotPresent)
        })
        .unwrap();
        assert_eq!(config.max_size, 24);
        assert_eq!(
            config.validation,
            Validation::IdleFor(Duration::from_secs(2))
        );
        assert_eq!(config.idle_timeout, None);
        let error = Config::from_vars("DATABASE", |name| {
            (name == "DATABASE_POOL_MIN_IDLE")
                .then(|| "many".to_owned())
                .ok_or(std::env::VarError::NotPresent)
        })
        .unwrap_err();
        assert!(
            matches!(&error, Error::Config { setting, .. } if setting == "DATABASE_POOL_MIN_IDLE"),
            "{error}"
        );
    }

    /// Review H9: a set variable whose value is not UTF-8 is an error, not ignored (the value
    /// is not echoed).
    #[cfg(unix)]
    #[test]
    fn a_variable_that_is_not_utf8_is_a_config_error() {
        use std::os::unix::ffi::OsStringExt;
        let error = Config::from_vars("DATABASE", |name| {
            if name == "DATABASE_POOL_MAX_SIZE" {
                Err(std::env::VarError::NotUnicode(
                    std::ffi::OsString::from_vec(b"3\xff2".to_vec()),
                ))
            } else {
                Err(std::env::VarError::NotPresent)
            }
        })
        .unwrap_err();
        assert!(
            matches!(&error, Error::Config { setting, value, .. }
                if setting == "DATABASE_POOL_MAX_SIZE" && !value.contains('3')),
            "{error}"
        );
    }

    #[test]
    fn inconsistent_settings_are_rejected_at_build() {
        let check = |change: fn(&mut Config)| {
            let mut config = Config::default();
            change(&mut config);
            config.check()
        };
        assert!(check(|_| {}).is_ok());
        assert!(check(|c| c.max_size = 0).is_err());
        assert!(check(|c| c.min_idle = 11).is_err());
        assert!(check(|c| c.acquire_timeout = Duration::ZERO).is_err());
        assert!(check(|c| c.validation = Validation::IdleFor(Duration::ZERO)).is_err());
        assert!(check(|c| c.lifetime_jitter = Some(Duration::from_secs(3600))).is_err());
        assert!(
            check(|c| c.circuit_breaker = Some(CircuitBreaker::new(0, Duration::from_millis(50))))
                .is_err()
        );
        assert!(
            check(|c| c.circuit_breaker = Some(CircuitBreaker::new(3, Duration::ZERO))).is_err()
        );
        assert!(
            check(|c| c.circuit_breaker = Some(CircuitBreaker::new(1, Duration::from_millis(1))))
                .is_ok()
        );
    }

    #[test]
    fn jitter_defaults_to_a_tenth_of_the_lifetime() {
        let mut config = Config::default();
        assert_eq!(config.effective_jitter(), Duration::from_secs(180));
        config.max_lifetime = None;
        assert_eq!(config.effective_jitter(), Duration::ZERO);
    }

    proptest! {
        /// Whatever the URL, parsing never panics, and the parameters that are not the pool's
        /// reach the driver unchanged and in order.
        #[test]
        fn foreign_parameters_survive(
            base in "[a-z]{1,8}://[a-z0-9@:./]{0,20}",
            params in proptest::collection::vec(("[a-z_]{1,10}", "[a-zA-Z0-9._%-]{0,8}"), 0..6),
            fragment in proptest::option::of("[a-z]{0,5}"),
        ) {
            let foreign: Vec<String> = params
                .iter()
                .filter(|(name, _)| !name.starts_with("pool_"))
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            let mut url = base.clone();
            if !params.is_empty() {
                url.push('?');
                let all: Vec<String> = params.iter().map(|(n, v)| format!("{n}={v}")).collect();
                url.push_str(&all.join("&"));
            }
            if let Some(fragment) = &fragment {
                url.push('#');
                url.push_str(fragment);
            }
            let mut config = Config::default();
            let has_pool_params = params.iter().any(|(name, _)| name.starts_with("pool_"));
            match config.apply_url(&url) {
                Ok(cleaned) => {
                    let mut expected = base.clone();
                    if !foreign.is_empty() {
                        expected.push('?');
                        expected.push_str(&foreign.join("&"));
                    }
                    if let Some(fragment) = &fragment {
                        expected.push('#');
                        expected.push_str(fragment);
                    }
                    prop_assert_eq!(cleaned, expected);
                }
                Err(error) => {
                    prop_assert!(has_pool_params, "only pool parameters can be rejected");
                    prop_assert!(matches!(error, Error::Config { .. }), "an invalid pool setting is a config error");
                }
            }
        }

        #[test]
        fn durations_round_trip(millis in 0u64..10_000_000) {
            prop_assert_eq!(parse_duration(&format!("{millis}ms")), Some(Duration::from_millis(millis)));
            prop_assert_eq!(parse_duration(&format!("{millis}s")), Some(Duration::from_secs(millis)));
        }
    }
}
