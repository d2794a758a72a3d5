//! The contract between a [`Loader`](crate::Loader) and the code that fetches: [`BatchLoad`],
//! what it returns ([`Loaded`]), and the optional per-request [`Cache`].

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    hash::{BuildHasher, Hash},
};

/// Fetches many keys at once: the batch function behind a [`Loader`](crate::Loader).
///
/// # Contract
/// - `keys` holds no duplicates and at most the loader's max batch size.
/// - Return one entry per key found. A key left out is *missing*: its callers get `Ok(None)`.
///   Keys that were not asked for are ignored.
/// - `Err` fails the whole batch: every caller of it gets [`Error::Batch`](crate::Error::Batch)
///   with this error. To fail single keys and serve the others, use [`Loaded::fail`].
/// - Several batches of one loader may run at the same time (up to its concurrency limit), so
///   `load` takes `&self`.
/// - Each batch runs in its own task: callers that give up do not cancel it, and a panic in it
///   reaches its callers as [`Error::Panicked`](crate::Error::Panicked).
///
/// ```
/// use std::collections::HashMap;
/// use brisk_batch::{BatchLoad, Loaded};
///
/// struct Squares;
///
/// impl BatchLoad for Squares {
///     type Key = u64;
///     type Value = u64;
///     type Error = std::convert::Infallible;
///
///     async fn load(&self, keys: &[u64]) -> Result<Loaded<u64, u64>, Self::Error> {
///         Ok(keys.iter().map(|&k| (k, k * k)).collect())
///     }
/// }
/// ```
pub trait BatchLoad: Send + Sync + 'static {
    /// What a value is looked up by. Two keys equal by `Eq` are loaded once; for a custom
    /// notion of "the same key" (case-insensitive names, say), use a newtype with its own
    /// `Eq` and `Hash`.
    type Key: Eq + Hash + Clone + fmt::Debug + Send + Sync + 'static;
    /// What is loaded; cloned for every caller of a key.
    type Value: Clone + Send + Sync + 'static;
    /// What a batch, or one key of it, can fail with. It is shared between callers in an `Arc`,
    /// so it need not be `Clone`.
    type Error: Send + Sync + 'static;

    /// Loads `keys` (see the trait docs for the contract).
    fn load(&self, keys: &[Self::Key]) -> impl Future<Output = LoadOutput<Self>> + Send;
}

/// What a [`BatchLoad`] returns (spelled out in the trait docs' example).
type LoadOutput<L> = Result<
    Loaded<<L as BatchLoad>::Key, <L as BatchLoad>::Value, <L as BatchLoad>::Error>,
    <L as BatchLoad>::Error,
>;

/// What a [`BatchLoad`] returns: a value or an error per key; keys left out are missing.
///
/// Build it by collecting `(key, value)` pairs, from a `HashMap<K, V>`, or with
/// [`insert`](Self::insert) and [`fail`](Self::fail) when some keys fail on their own.
pub struct Loaded<K, V, E = std::convert::Infallible> {
    entries: HashMap<K, Result<V, E>>,
}

impl<K: Eq + Hash, V, E> Loaded<K, V, E> {
    /// An empty result: every key missing.
    pub fn new() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }

    /// An empty result with room for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: HashMap::with_capacity(capacity),
        }
    }

    /// Sets the value for `key`, replacing an earlier value or error.
    pub fn insert(&mut self, key: K, value: V) {
        self.entries.insert(key, Ok(value));
    }

    /// Fails `key` alone: its callers get [`Error::Key`](crate::Error::Key) with `error`,
    /// the other keys are served.
    pub fn fail(&mut self, key: K, error: E) {
        self.entries.insert(key, Err(error));
    }

    /// How many keys have a value or an error.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has a value or an error.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes out what was loaded for `key`: `None` when it is missing.
    pub(crate) fn take(&mut self, key: &K) -> Option<Result<V, E>> {
        self.entries.remove(key)
    }
}

impl<K: Eq + Hash, V, E> Default for Loaded<K, V, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: fmt::Debug, V: fmt::Debug, E: fmt::Debug> fmt::Debug for Loaded<K, V, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries.iter()).finish()
    }
}

impl<K: Eq + Hash, V, E> FromIterator<(K, V)> for Loaded<K, V, E> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().map(|(k, v)| (k, Ok(v))).collect(),
        }
    }
}

impl<K: Eq + Hash, V, E> Extend<(K, V)> for Loaded<K, V, E> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        self.entries
            .extend(iter.into_iter().map(|(k, v)| (k, Ok(v))));
    }
}

impl<K: Eq + Hash, V, E, S: BuildHasher> From<HashMap<K, V, S>> for Loaded<K, V, E> {
    fn from(map: HashMap<K, V, S>) -> Self {
        map.into_iter().collect()
    }
}

/// A loader's memo of loaded values, consulted before a key is batched.
///
/// Off by default. A cache is meant to live as long as one request, as in facebook's DataLoader:
/// build a loader per request, and the same entity is loaded once per request, however many
/// resolvers ask for it. For a cache shared between requests, with expiry, put brisk-cache (or
/// another cache) in front of the loader instead.
///
/// The loader caches absences too (`None`: the batch function returned no entry), never errors.
/// Implemented for `HashMap` (unbounded); implement it for a bounded or instrumented store.
pub trait Cache<K, V>: Send + 'static {
    /// The value stored for `key`, if any.
    fn get(&mut self, key: &K) -> Option<V>;
    /// Stores `value` for `key`, replacing what was there.
    fn insert(&mut self, key: K, value: V);
    /// Forgets `key`.
    fn remove(&mut self, key: &K);
    /// Forgets every key.
    fn clear(&mut self);
    /// Whether `key` is stored, without counting as a use (for [`prime`](crate::Loader::prime),
    /// which must not overwrite).
    fn contains(&mut self, key: &K) -> bool {
        self.get(key).is_some()
    }
}

impl<K, V, S> Cache<K, V> for HashMap<K, V, S>
where
    K: Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
    S: BuildHasher + Send + 'static,
{
    fn get(&mut self, key: &K) -> Option<V> {
        HashMap::get(self, key).cloned()
    }

    fn insert(&mut self, key: K, value: V) {
        HashMap::insert(self, key, value);
    }

    fn remove(&mut self, key: &K) {
        HashMap::remove(self, key);
    }

    fn clear(&mut self) {
        HashMap::clear(self);
    }

    fn contains(&mut self, key: &K) -> bool {
        self.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loaded_is_built_from_pairs_maps_values_and_errors() {
        let mut loaded: Loaded<u32, &str, &str> = [(1, "one")].into_iter().collect();
        loaded.extend([(2, "two")]);
        loaded.fail(3, "forbidden");
        loaded.insert(3, "three after all");
        assert_eq!((loaded.len(), loaded.is_empty()), (3, false));
        assert_eq!(loaded.take(&2), Some(Ok("two")));
        assert_eq!(
            loaded.take(&3),
            Some(Ok("three after all")),
            "insert replaces fail"
        );
        loaded.fail(1, "gone");
        assert_eq!(loaded.take(&1), Some(Err("gone")));
        assert_eq!(loaded.take(&4), None, "missing");
        assert!(loaded.is_empty());
        let from_map: Loaded<u32, u32> = HashMap::from([(7, 49)]).into();
        assert_eq!(format!("{from_map:?}"), "{7: Ok(49)}");
    }
}
