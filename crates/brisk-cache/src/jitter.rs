//! TTL jitter: entries written together should not all expire together (a synchronized wave
//! of misses is a stampede of its own).

use std::{
    cell::Cell,
    hash::{BuildHasher, Hasher, RandomState},
    time::Duration,
};

use crate::Error;

thread_local! {
    /// xorshift64 state, seeded per thread from the process's random hasher keys.
    static STATE: Cell<u64> = Cell::new(RandomState::new().build_hasher().finish() | 1);
}

/// A uniform random `u64` (xorshift64: fast, not cryptographic).
pub(crate) fn random() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

/// A uniform value in `[0, 1)`.
pub(crate) fn unit() -> f64 {
    (random() >> 11) as f64 / (1u64 << 53) as f64
}

/// `ttl` shortened by a random part of up to `fraction` of it.
pub(crate) fn apply(ttl: Duration, fraction: f64) -> Duration {
    if fraction <= 0.0 {
        return ttl;
    }
    ttl.mul_f64(1.0 - fraction * unit())
}

/// Checks a `ttl_jitter` setting: a fraction in `[0, 1)`.
pub(crate) fn check<E>(fraction: f64) -> Result<f64, Error<E>> {
    if (0.0..1.0).contains(&fraction) {
        Ok(fraction)
    } else {
        Err(Error::Config {
            setting: "ttl_jitter",
            value: fraction.to_string(),
            reason: "must be a fraction of the TTL, at least 0 and below 1",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jittered_ttls_spread_below_the_ttl() {
        let ttl = Duration::from_secs(100);
        let ttls: Vec<Duration> = (0..1000).map(|_| apply(ttl, 0.2)).collect();
        assert!(
            ttls.iter()
                .all(|t| *t > Duration::from_secs(80) && *t <= ttl)
        );
        let below_90 = ttls
            .iter()
            .filter(|t| **t < Duration::from_secs(90))
            .count();
        assert!(
            (350..650).contains(&below_90),
            "{below_90} of 1000 below 90 s"
        );
        assert_eq!(apply(ttl, 0.0), ttl);
    }

    #[test]
    fn the_fraction_is_checked() {
        assert!(check::<()>(0.1).is_ok());
        assert!(check::<()>(0.0).is_ok());
        for bad in [1.0, -0.1, f64::NAN, 2.0] {
            assert!(check::<()>(bad).is_err(), "{bad}");
        }
    }
}
