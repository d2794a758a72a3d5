//! The bridge to bb8: connections wrapped with their coarse timestamps, and the policy that
//! decides on checkout and return whether a connection is reused, validated or closed.

use std::{
    fmt,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant as StdInstant},
};

use tokio::{sync::Notify, time::Instant};

use crate::{
    breaker::Breaker,
    config::{Config, Validation},
    connect::{Connect, Hook},
    error::{BoxError, ConnectPanicked, ConnectTimedOut},
    leak::Leaks,
    metrics::{CloseReason, Metrics},
};

/// The longest wait between connect retries (or half the acquire timeout, if less: a
/// checkout waiting for a connect should see at least two attempts).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A clock that the housekeeper advances once per period, so that checkouts and returns read
/// the time with one relaxed load instead of a clock call each.
///
/// It is read to judge idle time and lifetime, which need a resolution of a fraction of the
/// validation window, not nanoseconds.
#[derive(Debug)]
pub(crate) struct Clock {
    start: Instant,
    pub(crate) period: Duration,
    ticks: AtomicU64,
}

impl Clock {
    fn new(period: Duration) -> Self {
        Self {
            start: Instant::now(),
            period,
            ticks: AtomicU64::new(0),
        }
    }

    /// Periods since the pool was built, as of the housekeeper's last update.
    pub(crate) fn now(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Sets the clock from the real time.
    pub(crate) fn update(&self) {
        let ticks = self.start.elapsed().as_nanos() / self.period.as_nanos();
        self.ticks
            .fetch_max(u64::try_from(ticks).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Whole periods in `duration`, rounded down: a connection counts as idle for a window
    /// after at most the window and one period.
    fn ticks_in(&self, duration: Duration) -> u64 {
        u64::try_from(duration.as_nanos() / self.period.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The housekeeping period for a configuration: an eighth of the validation window (so
    /// idle time is judged to within 1/8 of it), a quarter of the leak threshold, at most
    /// 100 ms, at least 1 ms.
    pub(crate) fn period_for(config: &Config) -> Duration {
        let mut period = Duration::from_millis(100);
        if let Validation::IdleFor(window) = config.validation {
            period = period.min(window / 8);
        }
        if let Some(threshold) = config.leak_threshold {
            period = period.min(threshold / 4);
        }
        period.max(Duration::from_millis(1))
    }
}

/// When a checkout validates, in clock ticks.
#[derive(Debug, Clone, Copy)]
enum Policy {
    Always,
    IdleTicks(u64),
    Never,
}

/// What the pool and its connections share: the settings, the clock, the closed flag, the
/// last connect error and the metrics.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) target: Arc<str>,
    pub(crate) clock: Clock,
    pub(crate) metrics: Metrics,
    pub(crate) leaks: Option<Leaks>,
    pub(crate) closed: AtomicBool,
    /// Wakes checkouts and `close()` when the pool closes and as its connections go.
    pub(crate) close_notify: Notify,
    /// Checkouts that found no idle connection and are waiting.
    pub(crate) waiting: AtomicUsize,
    /// While the pool is built, a failed connect is not retried: the build fails at once.
    pub(crate) warming: AtomicBool,
    /// The last connect attempt failed (cleared by the next success).
    failing: AtomicBool,
    /// The most recent connect error and when it happened; kept after a success, so that a
    /// checkout timing out can name an error from its own wait.
    last_connect_error: Mutex<Option<(StdInstant, Arc<BoxError>)>>,
    /// Wakes the refill task: a connect failed, or a checkout began waiting while connects
    /// fail.
    pub(crate) refill_wanted: Notify,
    /// The first wait before a connect retry, and the most a refill probe waits.
    pub(crate) retry_backoff: Duration,
    /// The circuit breaker, if configured.
    pub(crate) breaker: Option<Breaker>,
    policy: Policy,
    lifetime_ticks: Option<u64>,
    jitter_ticks: u64,
    connect_timeout: Duration,
    connect_retries: u32,
    max_backoff: Duration,
    random: RandomState,
    /// Numbers the random draws, so that connections opened together differ.
    draws: AtomicU64,
}

impl Shared {
    pub(crate) fn new(config: &Config, target: Arc<str>, metrics: Metrics) -> Self {
        let clock = Clock::new(Clock::period_for(config));
        let policy = match config.validation {
            Validation::Always => Policy::Always,
            Validation::Never => Policy::Never,
            Validation::IdleFor(window) => Policy::IdleTicks(clock.ticks_in(window).max(1)),
        };
        Self {
            target,
            leaks: config
                .leak_threshold
                .map(|threshold| Leaks::new(threshold, clock.period)),
            policy,
            lifetime_ticks: config
                .max_lifetime
                .map(|lifetime| clock.ticks_in(lifetime).max(1)),
            jitter_ticks: clock.ticks_in(config.effective_jitter()),
            clock,
            metrics,
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            waiting: AtomicUsize::new(0),
            warming: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            last_connect_error: Mutex::new(None),
            refill_wanted: Notify::new(),
            connect_timeout: config.connect_timeout,
            connect_retries: config.connect_retries,
            retry_backoff: config.retry_backoff,
            breaker: config.circuit_breaker.map(Breaker::new),
            max_backoff: MAX_BACKOFF.min(config.acquire_timeout / 2),
            random: RandomState::new(),
            draws: AtomicU64::new(0),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether the last connect attempt failed.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// The connect error a checkout that began waiting at `since` should name: the most recent
    /// one, if it happened during that wait or connects are still failing.
    pub(crate) fn connect_error_since(&self, since: StdInstant) -> Option<Arc<BoxError>> {
        let last = self
            .last_connect_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (at, error) = last.as_ref()?;
        (*at >= since || self.is_failing()).then(|| Arc::clone(error))
    }

    fn connect_succeeded(&self) {
        self.failing.store(false, Ordering::Relaxed);
        if let Some(breaker) = &self.breaker
            && breaker.succeeded()
        {
            self.metrics.circuit_state.set(0);
            tracing::info!(
                target: "brisk_pool::connect",
                pool = %self.target,
                "a connect succeeded: circuit breaker closed, checkouts resume",
            );
        }
    }

    fn connect_failed(&self, error: &Arc<BoxError>) {
        *self
            .last_connect_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((StdInstant::now(), Arc::clone(error)));
        self.failing.store(true, Ordering::Relaxed);
        if self.waiting.load(Ordering::Relaxed) > 0 {
            self.refill_wanted.notify_one();
        }
        if let Some(breaker) = &self.breaker
            && breaker.failed()
        {
            self.metrics.circuit_opened.increment();
            self.metrics.circuit_state.set(1);
            breaker.wake();
            tracing::warn!(
                target: "brisk_pool::connect",
                pool = %self.target,
                error = %error,
                "connects keep failing: circuit breaker open, checkouts fail at once until a probe connects",
            );
        }
    }

    /// [`Error::Unavailable`](crate::Error::Unavailable) if the circuit breaker is open.
    pub(crate) fn unavailable(&self) -> Option<crate::Error> {
        self.breaker
            .as_ref()
            .filter(|breaker| breaker.is_open())
            .map(|_| self.unavailable_error())
    }

    /// [`crate::Error::Unavailable`], whatever the breaker's state now (a checkout that saw it
    /// open); `retry_after` is zero without a breaker or once the probe is due.
    pub(crate) fn unavailable_error(&self) -> crate::Error {
        let last_connect_error = self
            .last_connect_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, error)| Arc::clone(error))
            .unwrap_or_else(|| Arc::new("connects keep failing".into()));
        crate::Error::Unavailable {
            target: Arc::clone(&self.target),
            last_connect_error,
            retry_after: self
                .breaker
                .as_ref()
                .map_or(Duration::ZERO, |breaker| breaker.retry_after()),
        }
    }

    /// A random wait of at most `bound` (full jitter), at least a nanosecond.
    pub(crate) fn jitter(&self, bound: Duration) -> Duration {
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.random_below(nanos) + 1)
    }

    /// A random number below `bound` (0 when `bound` is 0), for jitter.
    fn random_below(&self, bound: u64) -> u64 {
        match bound {
            0 => 0,
            _ => {
                self.random
                    .hash_one(self.draws.fetch_add(1, Ordering::Relaxed))
                    % bound
            }
        }
    }
}

/// Where a pooled connection stands with the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Usable,
    /// A validation round trip is running; if the checkout is dropped now, the connection is
    /// in an unknown state and must be closed.
    Validating,
    /// Rejected on checkout and already counted; bb8 drops it on return.
    Rejected,
}

/// A pooled connection with its coarse timestamps.
pub(crate) struct Tracked<T> {
    pub(crate) connection: T,
    /// Clock tick of its last return (or of its creation).
    returned: u64,
    /// Clock tick from which it is past its jittered lifetime.
    expires: u64,
    mark: Mark,
    shared: Arc<Shared>,
}

impl<T> Drop for Tracked<T> {
    fn drop(&mut self) {
        // `close()` waits for the last connection to go.
        if self.shared.is_closed() {
            self.shared.close_notify.notify_waiters();
        }
    }
}

/// Why bb8 could not use a connection; internal, mapped to [`crate::Error`] by the pool.
pub(crate) enum Failure {
    /// The pool is closed.
    Closed,
    /// Connecting failed, after the retries.
    Connect(Arc<BoxError>),
    /// A checkout rejected the connection (broken, expired or failed validation).
    Rejected,
}

impl Failure {
    /// The caller's error for a failure in the pool for `target`.
    pub(crate) fn into_error(self, target: Arc<str>) -> crate::Error {
        match self {
            Self::Connect(source) => crate::Error::Connect { target, source },
            Self::Closed | Self::Rejected => crate::Error::Closed { target },
        }
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("Closed"),
            Self::Connect(error) => write!(f, "Connect({error})"),
            Self::Rejected => f.write_str("Rejected"),
        }
    }
}

/// What opening a connection takes: the connector, its hook and the pool's shared state.
/// Shared by bb8's [`Manager`] and the pool's refill task.
pub(crate) struct Dial<C: Connect> {
    connector: C,
    hook: Option<Hook<C::Connection>>,
    pub(crate) shared: Arc<Shared>,
}

impl<C: Connect> Dial<C> {
    pub(crate) fn new(
        connector: C,
        hook: Option<Hook<C::Connection>>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            connector,
            hook,
            shared,
        }
    }

    /// One attempt: connect and run the hook, within the connect timeout. A panic in the
    /// connector or the hook is a failed attempt ([`ConnectPanicked`]): unwinding through the
    /// task that connects would kill it (bb8's, the refill or the probe task) with its
    /// bookkeeping undone.
    async fn connect_once(&self) -> Result<C::Connection, Arc<BoxError>> {
        const CONNECT: u8 = 0;
        const HOOK: u8 = 1;
        const READY: u8 = 2;
        let stage = AtomicU8::new(CONNECT);
        let attempt = async {
            let mut connection = self.connector.connect().await.map_err(Into::into)?;
            if let Some(hook) = &self.hook {
                stage.store(HOOK, Ordering::Relaxed);
                hook(&mut connection).await?;
            }
            stage.store(READY, Ordering::Relaxed);
            self.connector.ready(&mut connection);
            Ok::<_, BoxError>(connection)
        };
        let mut attempt = std::pin::pin!(attempt);
        // Once it has panicked, the attempt is not polled again.
        let caught = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                attempt.as_mut().poll(cx)
            })) {
                Ok(poll) => poll,
                Err(_) => {
                    std::task::Poll::Ready(Err(Box::new(match stage.load(Ordering::Relaxed) {
                        CONNECT => ConnectPanicked::Connect,
                        HOOK => ConnectPanicked::Hook,
                        _ => ConnectPanicked::Ready,
                    }) as BoxError))
                }
            }
        });
        match tokio::time::timeout(self.shared.connect_timeout, caught).await {
            Ok(result) => result.map_err(Arc::new),
            Err(_) => Err(Arc::new(Box::new(ConnectTimedOut(
                self.shared.connect_timeout,
            )))),
        }
    }

    /// One attempt with its bookkeeping: the connect metrics, the failing flag and the last
    /// error (which wakes the refill task while checkouts wait).
    pub(crate) async fn attempt(&self) -> Result<Tracked<C::Connection>, Arc<BoxError>> {
        let shared = &self.shared;
        match self.connect_once().await {
            Ok(connection) => {
                shared.connect_succeeded();
                shared.metrics.connects.increment();
                Ok(self.track(connection))
            }
            Err(error) => {
                shared.metrics.connect_failures.increment();
                shared.connect_failed(&error);
                Err(error)
            }
        }
    }

    fn track(&self, connection: C::Connection) -> Tracked<C::Connection> {
        let shared = &self.shared;
        let now = shared.clock.now();
        let expires = match shared.lifetime_ticks {
            Some(lifetime) => {
                let jitter = shared.random_below(shared.jitter_ticks.min(lifetime - 1) + 1);
                now.saturating_add(lifetime - jitter)
            }
            None => u64::MAX,
        };
        Tracked {
            connection,
            returned: now,
            expires,
            mark: Mark::Usable,
            shared: Arc::clone(shared),
        }
    }
}

/// The bb8 manager: a [`Dial`] plus the pool's policy.
pub(crate) struct Manager<C: Connect> {
    dial: Arc<Dial<C>>,
    pub(crate) shared: Arc<Shared>,
}

impl<C: Connect> Manager<C> {
    pub(crate) fn new(dial: Arc<Dial<C>>) -> Self {
        let shared = Arc::clone(&dial.shared);
        Self { dial, shared }
    }

    fn reject(&self, tracked: &mut Tracked<C::Connection>, reason: CloseReason) -> Failure {
        tracked.mark = Mark::Rejected;
        self.shared.metrics.closed(reason, 1);
        Failure::Rejected
    }
}

impl<C: Connect> bb8::ManageConnection for Manager<C> {
    type Connection = Tracked<C::Connection>;
    type Error = Failure;

    async fn connect(&self) -> Result<Self::Connection, Failure> {
        let shared = &self.shared;
        let retries = if shared.warming.load(Ordering::Relaxed) {
            0
        } else {
            shared.connect_retries
        };
        let mut backoff = shared.retry_backoff;
        let mut attempt = 0;
        loop {
            if shared.is_closed() {
                return Err(Failure::Closed);
            }
            match self.dial.attempt().await {
                Ok(connection) => {
                    if shared.is_closed() {
                        return Err(Failure::Closed);
                    }
                    return Ok(connection);
                }
                Err(error) => {
                    let gave_up = attempt >= retries;
                    // One warning per failed connect, not per attempt: an outage is loud enough.
                    if gave_up {
                        tracing::warn!(
                            target: "brisk_pool::connect",
                            pool = %shared.target,
                            attempts = attempt + 1,
                            error = %error,
                            "connect failed",
                        );
                        return Err(Failure::Connect(error));
                    }
                    tracing::debug!(
                        target: "brisk_pool::connect",
                        pool = %shared.target,
                        attempt = attempt + 1,
                        error = %error,
                        "connect attempt failed; retrying",
                    );
                }
            }
            attempt += 1;
            // Full jitter: instances that lost their connections together do not come back
            // together.
            tokio::time::sleep(shared.jitter(backoff)).await;
            // Saturating: a huge `retry_backoff` (`Duration::MAX`) must not overflow.
            backoff = backoff.saturating_mul(2).min(shared.max_backoff);
        }
    }

    async fn is_valid(&self, tracked: &mut Self::Connection) -> Result<(), Failure> {
        let shared = &self.shared;
        if shared.is_closed() {
            tracked.mark = Mark::Rejected;
            return Err(Failure::Closed);
        }
        let now = shared.clock.now();
        if now >= tracked.expires {
            return Err(self.reject(tracked, CloseReason::Lifetime));
        }
        if self.dial.connector.is_broken(&mut tracked.connection) {
            return Err(self.reject(tracked, CloseReason::Broken));
        }
        let due = match shared.policy {
            Policy::Always => true,
            Policy::IdleTicks(window) => now.saturating_sub(tracked.returned) >= window,
            Policy::Never => false,
        };
        if !due {
            return Ok(());
        }
        tracked.mark = Mark::Validating;
        let checked = tokio::time::timeout(
            shared.connect_timeout,
            self.dial.connector.validate(&mut tracked.connection),
        )
        .await;
        tracked.mark = Mark::Usable;
        match checked {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                let error: BoxError = error.into();
                tracing::debug!(target: "brisk_pool::validate", pool = %shared.target, %error, "validation failed");
                Err(self.reject(tracked, CloseReason::Invalid))
            }
            Err(_) => {
                tracing::debug!(target: "brisk_pool::validate", pool = %shared.target, "validation timed out");
                Err(self.reject(tracked, CloseReason::Invalid))
            }
        }
    }

    fn has_broken(&self, tracked: &mut Self::Connection) -> bool {
        let shared = &self.shared;
        match tracked.mark {
            Mark::Rejected => return true,
            Mark::Validating => {
                shared.metrics.closed(CloseReason::Invalid, 1);
                return true;
            }
            Mark::Usable => {}
        }
        if shared.is_closed() {
            return true;
        }
        // A connection returned while its user panics may be mid-transaction.
        if std::thread::panicking() || self.dial.connector.is_broken(&mut tracked.connection) {
            shared.metrics.closed(CloseReason::Broken, 1);
            return true;
        }
        let now = shared.clock.now();
        if now >= tracked.expires {
            shared.metrics.closed(CloseReason::Lifetime, 1);
            return true;
        }
        tracked.returned = now;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn housekeeping_period_follows_the_validation_window_and_leak_threshold() {
        let mut config = Config::default();
        assert_eq!(Clock::period_for(&config), Duration::from_micros(62_500));
        config.validation = Validation::Never;
        assert_eq!(Clock::period_for(&config), Duration::from_millis(100));
        config.leak_threshold = Some(Duration::from_millis(40));
        assert_eq!(Clock::period_for(&config), Duration::from_millis(10));
        config.validation = Validation::IdleFor(Duration::from_micros(10));
        assert_eq!(Clock::period_for(&config), Duration::from_millis(1));
    }

    #[test]
    fn an_idle_window_is_at_least_one_tick() {
        let config = Config {
            validation: Validation::IdleFor(Duration::from_micros(1)),
            ..Config::default()
        };
        let shared = Shared::new(&config, "t".into(), Metrics::noop());
        assert!(matches!(shared.policy, Policy::IdleTicks(1)));
    }

    /// Refuses every connect.
    struct Refusing(AtomicUsize);

    impl Connect for Refusing {
        type Connection = ();
        type Error = std::io::Error;

        async fn connect(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(std::io::Error::other("refused"))
        }

        async fn validate(&self, (): &mut ()) -> std::io::Result<()> {
            Ok(())
        }

        fn is_broken(&self, (): &mut ()) -> bool {
            false
        }

        fn target(&self) -> String {
            "refusing://".to_owned()
        }
    }

    /// `retry_backoff(Duration::MAX)`: the doubling after the first retry overflowed (a panic
    /// in the connect task). Paused time runs the waits at once.
    #[tokio::test(start_paused = true)]
    async fn a_retry_backoff_of_duration_max_does_not_overflow() {
        let config = Config {
            retry_backoff: Duration::MAX,
            connect_retries: 2,
            ..Config::default()
        };
        let shared = Arc::new(Shared::new(&config, "t".into(), Metrics::noop()));
        shared.warming.store(false, Ordering::Relaxed);
        let dial = Arc::new(Dial::new(
            Refusing(AtomicUsize::new(0)),
            None,
            Arc::clone(&shared),
        ));
        let manager = Manager::new(Arc::clone(&dial));
        let outcome = bb8::ManageConnection::connect(&manager).await;
        assert!(matches!(outcome, Err(Failure::Connect(_))));
        assert_eq!(
            dial.connector.0.load(Ordering::SeqCst),
            3,
            "one try, two retries"
        );
    }
}
