//! [`CacheControl`]: a `Cache-Control` response policy (RFC 9111 §5.2.2, RFC 5861).

use std::{fmt::Write, time::Duration};

use http::HeaderValue;

use crate::Error;

/// Who may store a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Shared caches too (CDNs, proxies).
    Public,
    /// The user's own cache only.
    Private,
    /// Nobody (`no-store`).
    Nobody,
}

/// A `Cache-Control` policy for a kind of response:
/// `CacheControl::public().max_age(Duration::from_secs(3600)).immutable()` for fingerprinted
/// assets, `CacheControl::private().max_age(Duration::from_secs(60)).must_revalidate()` for a
/// user's data, `CacheControl::no_store()` for secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheControl {
    audience: Audience,
    max_age: Option<Duration>,
    s_maxage: Option<Duration>,
    no_cache: bool,
    must_revalidate: bool,
    immutable: bool,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
}

impl CacheControl {
    fn new(audience: Audience) -> Self {
        Self {
            audience,
            max_age: None,
            s_maxage: None,
            no_cache: false,
            must_revalidate: false,
            immutable: false,
            stale_while_revalidate: None,
            stale_if_error: None,
        }
    }

    /// `public`: any cache may store it.
    pub fn public() -> Self {
        Self::new(Audience::Public)
    }

    /// `private`: only the user's own cache may store it.
    pub fn private() -> Self {
        Self::new(Audience::Private)
    }

    /// `no-store`: no cache may store it (the other settings are refused with it).
    pub fn no_store() -> Self {
        Self::new(Audience::Nobody)
    }

    /// `max-age`: fresh this long (whole seconds).
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// `s-maxage`: fresh this long in shared caches (public responses only).
    #[must_use]
    pub fn s_maxage(mut self, age: Duration) -> Self {
        self.s_maxage = Some(age);
        self
    }

    /// `no-cache`: stored, but revalidated before every use.
    #[must_use]
    pub fn no_cache(mut self) -> Self {
        self.no_cache = true;
        self
    }

    /// `must-revalidate`: never used stale without revalidating.
    #[must_use]
    pub fn must_revalidate(mut self) -> Self {
        self.must_revalidate = true;
        self
    }

    /// `immutable`: never changes while fresh, so not revalidated on reload.
    #[must_use]
    pub fn immutable(mut self) -> Self {
        self.immutable = true;
        self
    }

    /// `stale-while-revalidate` (RFC 5861): usable this long past freshness while revalidated
    /// in the background.
    #[must_use]
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = Some(window);
        self
    }

    /// `stale-if-error` (RFC 5861): usable this long past freshness when revalidation fails.
    #[must_use]
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window);
        self
    }

    /// This policy as it may go on the answer to a request with credentials
    /// (`Authorization`, `Cookie`): a `public` one made `private`, without `s-maxage`, so no
    /// shared cache keeps one user's answer for the next; a private or `no-store` one as it is.
    pub(crate) fn for_credentials(&self) -> Self {
        let mut policy = self.clone();
        if policy.audience == Audience::Public {
            policy.audience = Audience::Private;
            policy.s_maxage = None;
        }
        policy
    }

    /// The header value.
    ///
    /// # Errors
    /// [`Error::Config`] for a policy that contradicts itself: `no-store` with anything else,
    /// `s-maxage` on a private response, `immutable` without `max-age`, or stale windows with
    /// `must-revalidate`.
    pub fn header_value(&self) -> Result<HeaderValue, Error> {
        let refuse = |reason| {
            Err(Error::Config {
                setting: "cache_control",
                value: format!("{self:?}"),
                reason,
            })
        };
        let stale = self.stale_while_revalidate.is_some() || self.stale_if_error.is_some();
        if self.audience == Audience::Nobody && *self != Self::no_store() {
            return refuse("no-store stands alone: a response nobody stores has no lifetime");
        }
        if self.audience == Audience::Private && self.s_maxage.is_some() {
            return refuse("s-maxage is for shared caches, which may not store a private response");
        }
        if self.immutable && self.max_age.is_none() {
            return refuse(
                "immutable needs max-age: it says the response will not change while fresh",
            );
        }
        if self.must_revalidate && stale {
            return refuse("must-revalidate forbids serving stale: drop the stale windows");
        }
        let mut text = String::new();
        let mut put = |directive: &str| {
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.push_str(directive);
        };
        match self.audience {
            Audience::Public => put("public"),
            Audience::Private => put("private"),
            Audience::Nobody => put("no-store"),
        }
        let seconds = |duration: Duration| duration.as_secs();
        for (name, value) in [
            ("max-age", self.max_age),
            ("s-maxage", self.s_maxage),
            ("stale-while-revalidate", self.stale_while_revalidate),
            ("stale-if-error", self.stale_if_error),
        ] {
            if let Some(value) = value {
                let mut directive = String::new();
                let _ = write!(directive, "{name}={}", seconds(value));
                put(&directive);
            }
        }
        for (name, on) in [
            ("no-cache", self.no_cache),
            ("must-revalidate", self.must_revalidate),
            ("immutable", self.immutable),
        ] {
            if on {
                put(name);
            }
        }
        HeaderValue::from_str(&text).or_else(|_| refuse("not a header value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_print_as_the_rfcs_spell_them() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            CacheControl::public()
                .max_age(hour)
                .immutable()
                .header_value()
                .unwrap(),
            "public, max-age=3600, immutable"
        );
        assert_eq!(
            CacheControl::private()
                .max_age(Duration::from_secs(60))
                .must_revalidate()
                .header_value()
                .unwrap(),
            "private, max-age=60, must-revalidate"
        );
        assert_eq!(
            CacheControl::public()
                .max_age(Duration::from_secs(60))
                .s_maxage(hour)
                .stale_while_revalidate(Duration::from_secs(30))
                .stale_if_error(Duration::from_secs(86_400))
                .header_value()
                .unwrap(),
            "public, max-age=60, s-maxage=3600, stale-while-revalidate=30, stale-if-error=86400"
        );
        assert_eq!(CacheControl::no_store().header_value().unwrap(), "no-store");
        assert_eq!(
            CacheControl::private().no_cache().header_value().unwrap(),
            "private, no-cache"
        );
    }

    #[test]
    fn contradictions_are_refused() {
        let minute = Duration::from_secs(60);
        for policy in [
            CacheControl::no_store().max_age(minute),
            CacheControl::private().s_maxage(minute),
            CacheControl::public().immutable(),
            CacheControl::public()
                .max_age(minute)
                .must_revalidate()
                .stale_if_error(minute),
        ] {
            assert!(
                matches!(
                    policy.header_value(),
                    Err(Error::Config {
                        setting: "cache_control",
                        ..
                    })
                ),
                "{policy:?}"
            );
        }
    }
}
