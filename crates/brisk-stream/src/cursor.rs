//! Opaque, signed pagination cursors bound to the query that issued them.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use brisk_metrics::Recorder;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use crate::{
    error::{CursorRejection, Error, Result},
    metrics::CursorMetrics,
};

type HmacSha256 = Hmac<Sha256>;

/// The only cursor format so far; a new one gets the next number, and old cursors keep
/// decoding until they expire.
const VERSION: u8 = 1;
/// Version, key id, flags, issue time (8 bytes), scope fingerprint (4 bytes).
const HEADER: usize = 1 + 1 + 1 + 8 + 4;
/// The signature: HMAC-SHA-256 truncated to 128 bits.
const TAG: usize = 16;
/// The shortest secret a key may have: the HMAC's own output size.
const MIN_SECRET: usize = 32;
/// The default bound on a cursor's text; enough for a sort key of a few columns with text.
const DEFAULT_MAX_LEN: usize = 1024;

/// Which way a cursor pages from its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The rows after the key in the sort order (a "next" link).
    After,
    /// The rows before the key in the sort order (a "previous" link).
    Before,
}

/// A position in a sorted result: the sort-key tuple of a row (for example `(created_at, id)`)
/// and which way to page from it. [`Cursors`] turns it into opaque text and back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor<K> {
    /// The sort key of the row the page starts from (that row is not on the page).
    pub key: K,
    /// Which way to page from `key`.
    pub direction: Direction,
}

impl<K> Cursor<K> {
    /// The rows after `key`.
    pub fn after(key: K) -> Self {
        Self {
            key,
            direction: Direction::After,
        }
    }

    /// The rows before `key`.
    pub fn before(key: K) -> Self {
        Self {
            key,
            direction: Direction::Before,
        }
    }
}

/// What a cursor is bound to: the query's sort order and its filter. A cursor issued in one
/// scope is refused in any other ([`CursorRejection::WrongQuery`]), so a client cannot carry a
/// position from one listing or filter into another.
///
/// ```
/// use brisk_stream::Scope;
///
/// #[derive(serde::Serialize)]
/// struct Filter<'a> { category: &'a str, in_stock: bool }
///
/// let books = Scope::new("products by price desc, id").filter(&Filter { category: "books", in_stock: true })?;
/// let games = Scope::new("products by price desc, id").filter(&Filter { category: "games", in_stock: true })?;
/// assert_ne!(books, games);
/// # Ok::<(), brisk_stream::Error>(())
/// ```
///
/// Filters are serialized (postcard) into the scope's hash, so they must serialize the same way
/// each time: use structs, sequences and `BTreeMap`, not `HashMap`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    hash: [u8; 32],
}

impl Scope {
    /// The scope of a query named by its sort order, `sort` (any text that changes when the
    /// order changes, such as `"orders by created_at desc, id desc"`).
    pub fn new(sort: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"brisk-stream scope\0");
        hasher.update((sort.len() as u64).to_be_bytes());
        hasher.update(sort.as_bytes());
        Self {
            hash: hasher.finalize().into(),
        }
    }

    /// This scope narrowed to `filter`. Each call binds one more value; the order counts.
    pub fn filter<F: Serialize + ?Sized>(self, filter: &F) -> Result<Self> {
        let bytes = postcard::to_allocvec(filter).map_err(|source| Error::CursorKey { source })?;
        let mut hasher = Sha256::new();
        hasher.update(self.hash);
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(&bytes);
        Ok(Self {
            hash: hasher.finalize().into(),
        })
    }

    fn fingerprint(&self) -> [u8; 4] {
        [self.hash[0], self.hash[1], self.hash[2], self.hash[3]]
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scope({:02x?})", self.fingerprint())
    }
}

/// Encodes [`Cursor`]s as opaque, URL-safe text and decodes them back, refusing any it did not
/// issue for the same [`Scope`].
///
/// A cursor is `base64url(version, key id, direction, issue time, scope fingerprint, key,
/// signature)`. The signature is HMAC-SHA-256 (truncated to 128 bits) over all of it and the
/// scope's full hash, under a server key: a client can neither forge a position, nor alter one,
/// nor replay one against another query. The sort key inside is not encrypted: do not put
/// secrets in it.
///
/// **Key rotation**: sign with the new key ([`key`](CursorsBuilder::key)) and keep accepting the
/// old one ([`retired_key`](CursorsBuilder::retired_key)) until the cursors it signed have
/// expired or no longer matter; then drop it.
///
/// ```
/// use brisk_stream::{Cursor, Cursors, Scope};
///
/// let cursors = Cursors::builder().key(1, [7u8; 32]).build()?;
/// let scope = Scope::new("orders by created_at desc, id desc");
/// let next = cursors.encode(&scope, &Cursor::after((1_700_000_000_i64, 42_i64)))?;
/// let back: Cursor<(i64, i64)> = cursors.decode(&scope, &next)?;
/// assert_eq!(back, Cursor::after((1_700_000_000, 42)));
///
/// let other = Scope::new("orders by total desc, id desc");
/// assert!(cursors.decode::<(i64, i64)>(&other, &next).is_err());
/// # Ok::<(), brisk_stream::Error>(())
/// ```
#[derive(Clone)]
pub struct Cursors {
    inner: Arc<Inner>,
}

struct Inner {
    signing: u8,
    /// The signing key first, then the retired ones; a handful at most.
    keys: Vec<(u8, HmacSha256)>,
    ttl: Option<Duration>,
    max_len: usize,
    metrics: CursorMetrics,
}

impl fmt::Debug for Cursors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cursors")
            .field("signing_key", &self.inner.signing)
            .field(
                "keys",
                &self.inner.keys.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("ttl", &self.inner.ttl)
            .field("max_len", &self.inner.max_len)
            .finish_non_exhaustive()
    }
}

impl Cursors {
    /// Configures a cursor codec; a signing [`key`](CursorsBuilder::key) is required.
    pub fn builder() -> CursorsBuilder {
        CursorsBuilder {
            key: None,
            retired: Vec::new(),
            ttl: None,
            max_len: DEFAULT_MAX_LEN,
            metrics: CursorMetrics::noop(),
        }
    }

    /// `cursor` as opaque text, bound to `scope` and signed with the signing key.
    ///
    /// Fails when the cursor's key cannot be serialized, or when the text would be longer than
    /// [`max_len`](CursorsBuilder::max_len) (so a cursor it issues always decodes).
    pub fn encode<K: Serialize>(&self, scope: &Scope, cursor: &Cursor<K>) -> Result<String> {
        self.encode_at(scope, cursor, SystemTime::now())
    }

    /// [`encode`](Self::encode) as if the time were `now` (for tests and replays).
    pub fn encode_at<K: Serialize>(
        &self,
        scope: &Scope,
        cursor: &Cursor<K>,
        now: SystemTime,
    ) -> Result<String> {
        let issued = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut bytes = Vec::with_capacity(HEADER + 32 + TAG);
        bytes.push(VERSION);
        bytes.push(self.inner.signing);
        bytes.push(match cursor.direction {
            Direction::After => 0,
            Direction::Before => 1,
        });
        bytes.extend_from_slice(&issued.to_be_bytes());
        bytes.extend_from_slice(&scope.fingerprint());
        let mut bytes = postcard::to_extend(&cursor.key, bytes)
            .map_err(|source| Error::CursorKey { source })?;
        let mut mac = self.inner.keys[0].1.clone();
        mac.update(&bytes);
        mac.update(&scope.hash);
        bytes.extend_from_slice(&mac.finalize().into_bytes()[..TAG]);
        let text = URL_SAFE_NO_PAD.encode(bytes);
        if text.len() > self.inner.max_len {
            // It would be refused when it comes back.
            return Err(Error::CursorTooLong {
                len: text.len(),
                max_len: self.inner.max_len,
            });
        }
        self.inner.metrics.issued.increment();
        Ok(text)
    }

    /// The cursor `text` stands for, if this codec issued it for `scope` and it has not
    /// expired. Every refusal is [`Error::InvalidCursor`] with its
    /// [reason](CursorRejection), counted in `brisk_stream_cursor_rejections_total`.
    pub fn decode<K: DeserializeOwned>(&self, scope: &Scope, text: &str) -> Result<Cursor<K>> {
        self.decode_at(scope, text, SystemTime::now())
    }

    /// [`decode`](Self::decode) as if the time were `now` (for tests and replays).
    pub fn decode_at<K: DeserializeOwned>(
        &self,
        scope: &Scope,
        text: &str,
        now: SystemTime,
    ) -> Result<Cursor<K>> {
        self.verify(scope, text, now).map_err(|reason| {
            self.inner.metrics.rejected(reason);
            Error::InvalidCursor { reason }
        })
    }

    fn verify<K: DeserializeOwned>(
        &self,
        scope: &Scope,
        text: &str,
        now: SystemTime,
    ) -> Result<Cursor<K>, CursorRejection> {
        // Outside input: its size is checked before anything is allocated for it.
        if text.len() > self.inner.max_len {
            return Err(CursorRejection::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorRejection::Malformed)?;
        if bytes.len() < HEADER + TAG || bytes[0] != VERSION || bytes[2] > 1 {
            return Err(CursorRejection::Malformed);
        }
        if bytes[11..15] != scope.fingerprint() {
            return Err(CursorRejection::WrongQuery);
        }
        let (signed, tag) = bytes.split_at(bytes.len() - TAG);
        let mut mac = self
            .inner
            .keys
            .iter()
            .find(|(id, _)| *id == bytes[1])
            .ok_or(CursorRejection::BadSignature)?
            .1
            .clone();
        mac.update(signed);
        mac.update(&scope.hash);
        mac.verify_truncated_left(tag)
            .map_err(|_| CursorRejection::BadSignature)?;
        if let Some(ttl) = self.inner.ttl {
            let issued = u64::from_be_bytes(signed[3..11].try_into().unwrap_or_default());
            let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if now.saturating_sub(issued) > ttl.as_secs() {
                return Err(CursorRejection::Expired);
            }
        }
        let key = match postcard::take_from_bytes::<K>(&signed[HEADER..]) {
            Ok((key, [])) => key,
            // Signed by this server, yet not this query's key type: the sort key changed shape.
            _ => return Err(CursorRejection::Malformed),
        };
        Ok(Cursor {
            key,
            direction: if signed[2] == 0 {
                Direction::After
            } else {
                Direction::Before
            },
        })
    }
}

/// Configures [`Cursors`]; from [`Cursors::builder`].
#[must_use = "a builder does nothing until `build` is called"]
pub struct CursorsBuilder {
    key: Option<(u8, Vec<u8>)>,
    retired: Vec<(u8, Vec<u8>)>,
    ttl: Option<Duration>,
    max_len: usize,
    metrics: CursorMetrics,
}

impl fmt::Debug for CursorsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CursorsBuilder")
            .field("key", &self.key.as_ref().map(|(id, _)| id))
            .field(
                "retired",
                &self.retired.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            )
            .field("ttl", &self.ttl)
            .field("max_len", &self.max_len)
            .finish_non_exhaustive()
    }
}

impl CursorsBuilder {
    /// The key new cursors are signed with, named `id` (carried in each cursor so that a
    /// rotated key can still be found). Required; `secret` must be at least 32 bytes of
    /// randomness, the same on every instance.
    pub fn key(mut self, id: u8, secret: impl AsRef<[u8]>) -> Self {
        self.key = Some((id, secret.as_ref().to_vec()));
        self
    }

    /// A key cursors are still accepted with but no longer signed with (after a rotation).
    pub fn retired_key(mut self, id: u8, secret: impl AsRef<[u8]>) -> Self {
        self.retired.push((id, secret.as_ref().to_vec()));
        self
    }

    /// How long a cursor stays valid after it was issued (whole seconds). Default: forever.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The longest cursor text accepted; longer text is refused as malformed before it is
    /// decoded. Default 1024 bytes.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// Counts cursors issued (`brisk_stream_cursors_issued_total`) and refused
    /// (`brisk_stream_cursor_rejections_total{reason}`), labelled `name="<name>"`.
    pub fn metrics(mut self, recorder: &dyn Recorder, name: &str) -> Self {
        self.metrics = CursorMetrics::new(recorder, name);
        self
    }

    /// The codec, or [`Error::Config`] for a missing or short key, a key id used twice, a zero
    /// `ttl` or a `max_len` too short for any cursor.
    pub fn build(self) -> Result<Cursors> {
        let Some(signing) = self.key else {
            return Err(Error::config("key", "none", "a signing key is required"));
        };
        let mut keys = Vec::with_capacity(1 + self.retired.len());
        for (setting, (id, secret)) in std::iter::once(("key", signing.clone()))
            .chain(self.retired.into_iter().map(|k| ("retired_key", k)))
        {
            if secret.len() < MIN_SECRET {
                return Err(Error::Config {
                    setting,
                    value: format!("key {id} of {} bytes", secret.len()),
                    reason: "a secret must be at least 32 bytes",
                });
            }
            if keys.iter().any(|(known, _)| *known == id) {
                return Err(Error::config(setting, id, "this key id is already in use"));
            }
            let mac = HmacSha256::new_from_slice(&secret)
                .map_err(|_| Error::config(setting, id, "not a usable HMAC key"))?;
            keys.push((id, mac));
        }
        if self.ttl.is_some_and(|ttl| ttl.as_secs() == 0) {
            return Err(Error::config(
                "ttl",
                self.ttl,
                "must be at least one second",
            ));
        }
        let shortest = (HEADER + TAG).div_ceil(3) * 4;
        if self.max_len < shortest {
            return Err(Error::config(
                "max_len",
                self.max_len,
                "shorter than any cursor (32 bytes)",
            ));
        }
        Ok(Cursors {
            inner: Arc::new(Inner {
                signing: signing.0,
                keys,
                ttl: self.ttl,
                max_len: self.max_len,
                metrics: self.metrics,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cursors() -> Cursors {
        Cursors::builder().key(1, [1u8; 32]).build().unwrap()
    }

    fn scope() -> Scope {
        Scope::new("orders by created_at desc, id desc")
    }

    fn reason<K: std::fmt::Debug>(result: Result<Cursor<K>>) -> CursorRejection {
        match result {
            Err(Error::InvalidCursor { reason }) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn a_cursor_round_trips_with_its_direction() {
        let cursors = cursors();
        for cursor in [
            Cursor::after((Some("2024-01-01".to_owned()), 7_i64)),
            Cursor::before((None, -3)),
        ] {
            let text = cursors.encode(&scope(), &cursor).unwrap();
            assert!(
                text.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "URL-safe: {text}"
            );
            assert_eq!(cursors.decode(&scope(), &text).unwrap(), cursor);
        }
    }

    #[test]
    fn another_scope_or_filter_is_the_wrong_query() {
        let cursors = cursors();
        let books = scope().filter("books").unwrap();
        let text = cursors.encode(&books, &Cursor::after(5_i64)).unwrap();
        assert_eq!(
            reason(cursors.decode::<i64>(&scope().filter("games").unwrap(), &text)),
            CursorRejection::WrongQuery
        );
        assert_eq!(
            reason(cursors.decode::<i64>(&Scope::new("orders by id"), &text)),
            CursorRejection::WrongQuery
        );
        assert!(cursors.decode::<i64>(&books, &text).is_ok());
    }

    #[test]
    fn an_altered_or_foreign_cursor_has_a_bad_signature() {
        let cursors = cursors();
        let text = cursors.encode(&scope(), &Cursor::after(5_i64)).unwrap();
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        // Point the key at 6: the position changed, the signature did not.
        bytes[HEADER] = 12;
        let altered = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            reason(cursors.decode::<i64>(&scope(), &altered)),
            CursorRejection::BadSignature
        );
        let foreign = Cursors::builder().key(1, [2u8; 32]).build().unwrap();
        let text = foreign.encode(&scope(), &Cursor::after(5_i64)).unwrap();
        assert_eq!(
            reason(cursors.decode::<i64>(&scope(), &text)),
            CursorRejection::BadSignature
        );
    }

    #[test]
    fn a_rotated_key_keeps_old_cursors_until_it_is_dropped() {
        let old = Cursors::builder().key(1, [1u8; 32]).build().unwrap();
        let text = old.encode(&scope(), &Cursor::after(9_i64)).unwrap();
        let rotated = Cursors::builder()
            .key(2, [2u8; 32])
            .retired_key(1, [1u8; 32])
            .build()
            .unwrap();
        assert_eq!(
            rotated.decode::<i64>(&scope(), &text).unwrap(),
            Cursor::after(9)
        );
        let fresh = rotated.encode(&scope(), &Cursor::after(9_i64)).unwrap();
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&fresh).unwrap()[1],
            2,
            "signed with the new key"
        );
        assert_eq!(
            reason(old.decode::<i64>(&scope(), &fresh)),
            CursorRejection::BadSignature
        );
        let dropped = Cursors::builder().key(2, [2u8; 32]).build().unwrap();
        assert_eq!(
            reason(dropped.decode::<i64>(&scope(), &text)),
            CursorRejection::BadSignature
        );
    }

    #[test]
    fn a_cursor_expires_after_its_ttl() {
        let cursors = Cursors::builder()
            .key(1, [1u8; 32])
            .ttl(Duration::from_secs(600))
            .build()
            .unwrap();
        let issued = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let text = cursors
            .encode_at(&scope(), &Cursor::after(1_i64), issued)
            .unwrap();
        let later = |secs| issued + Duration::from_secs(secs);
        assert!(
            cursors
                .decode_at::<i64>(&scope(), &text, later(600))
                .is_ok()
        );
        assert_eq!(
            reason(cursors.decode_at::<i64>(&scope(), &text, later(601))),
            CursorRejection::Expired
        );
        // Without a ttl, the same cursor is good years later.
        let forever = Cursors::builder().key(1, [1u8; 32]).build().unwrap();
        assert!(
            forever
                .decode_at::<i64>(&scope(), &text, later(10 * 365 * 86_400))
                .is_ok()
        );
    }

    #[test]
    fn malformed_text_is_refused_before_it_is_decoded() {
        let cursors = Cursors::builder()
            .key(1, [1u8; 32])
            .max_len(64)
            .build()
            .unwrap();
        for text in ["", "not a cursor!", "AAAA", &"A".repeat(65), "é"] {
            assert_eq!(
                reason(cursors.decode::<i64>(&scope(), text)),
                CursorRejection::Malformed,
                "{text:?}"
            );
        }
        // Signed for this query, but its key is not the type this query sorts by.
        let text = cursors
            .encode(&scope(), &Cursor::after("text".to_owned()))
            .unwrap();
        assert_eq!(
            reason(cursors.decode::<(i64, i64, i64, i64)>(&scope(), &text)),
            CursorRejection::Malformed
        );
        // A key too large to come back within `max_len` is refused when encoding.
        assert!(matches!(
            cursors.encode(&scope(), &Cursor::after("x".repeat(40))),
            Err(Error::CursorTooLong { max_len: 64, .. })
        ));
        // An unknown version.
        let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        bytes[0] = 2;
        assert_eq!(
            reason(cursors.decode::<String>(&scope(), &URL_SAFE_NO_PAD.encode(&bytes))),
            CursorRejection::Malformed
        );
    }

    #[test]
    fn rejections_are_counted_by_reason() {
        let registry = brisk_metrics::Registry::new();
        let cursors = Cursors::builder()
            .key(1, [1u8; 32])
            .metrics(&registry, "orders")
            .build()
            .unwrap();
        let text = cursors.encode(&scope(), &Cursor::after(1_i64)).unwrap();
        let _ = cursors.decode::<i64>(&Scope::new("other"), &text);
        let _ = cursors.decode::<i64>(&scope(), "garbage");
        let _ = cursors.decode::<i64>(&scope(), "garbage!");
        let text = registry.snapshot().to_prometheus();
        for line in [
            "brisk_stream_cursors_issued_total{name=\"orders\"} 1",
            "brisk_stream_cursor_rejections_total{name=\"orders\",reason=\"wrong_query\"} 1",
            "brisk_stream_cursor_rejections_total{name=\"orders\",reason=\"malformed\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn invalid_settings_are_refused() {
        let setting = |builder: CursorsBuilder| match builder.build() {
            Err(Error::Config { setting, .. }) => setting,
            other => panic!("expected a config error, got {other:?}"),
        };
        assert_eq!(setting(Cursors::builder()), "key");
        assert_eq!(setting(Cursors::builder().key(1, [0u8; 31])), "key");
        assert_eq!(
            setting(
                Cursors::builder()
                    .key(1, [0u8; 32])
                    .retired_key(1, [1u8; 32])
            ),
            "retired_key"
        );
        assert_eq!(
            setting(
                Cursors::builder()
                    .key(1, [0u8; 32])
                    .ttl(Duration::from_millis(500))
            ),
            "ttl"
        );
        assert_eq!(
            setting(Cursors::builder().key(1, [0u8; 32]).max_len(20)),
            "max_len"
        );
        let error = Cursors::builder().key(1, [9u8; 8]).build().unwrap_err();
        assert!(
            !error.to_string().contains("9, 9"),
            "secrets are never printed: {error}"
        );
    }

    proptest! {
        #[test]
        fn any_key_round_trips(
            a in any::<i64>(),
            b in proptest::option::of(".{0,40}"),
            c in any::<u32>(),
            before in any::<bool>(),
        ) {
            let cursors = cursors();
            let key = (a, b, c);
            let cursor = if before { Cursor::before(key) } else { Cursor::after(key) };
            let text = cursors.encode(&scope(), &cursor).unwrap();
            prop_assert_eq!(cursors.decode(&scope(), &text).unwrap(), cursor);
        }

        #[test]
        fn any_change_to_a_cursor_is_refused(
            key in any::<(i64, u64)>(),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let cursors = cursors();
            let text = cursors.encode(&scope(), &Cursor::after(key)).unwrap();
            let mut bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
            let at = position.index(bytes.len());
            bytes[at] ^= flip;
            let altered = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(cursors.decode::<(i64, u64)>(&scope(), &altered).is_err());
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}", bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let cursors = cursors();
            prop_assert!(cursors.decode::<(i64, String)>(&scope(), &text).is_err());
            let encoded = URL_SAFE_NO_PAD.encode(&bytes);
            prop_assert!(cursors.decode::<(i64, String)>(&scope(), &encoded).is_err());
        }
    }
}
