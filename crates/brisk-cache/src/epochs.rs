//! Write epochs: how a load, or a copy from L2 into L1, tells that a write of its key
//! completed while it ran, so that it does not put the old value back.
//!
//! Every write of a key (insert, remove, a backplane message) bumps its stripe's counter
//! before it changes a level and again after L2 and before L1; a storer reads the counter
//! before it reads its source, stores, then reads it again and undoes what it stored if it
//! moved. Stripes are shared by keys (a false alarm only costs a fill), and a count covering
//! every key moves for whole-cache events (a gap, a prefix removed, `invalidate_all`).
//! All orderings are `SeqCst`: the argument below needs one order of bumps and reads.
//!
//! Why it holds (one process): a writer runs bump₁, L2 write, bump₂, L1 write. A load read
//! its source before the write, so its first read of the counter precedes bump₁. If its
//! second read (after storing both levels) sees no bump, it preceded bump₁, so the load's
//! L2 and L1 stores precede the writer's: the writer's win. A copy from L2 that read the old
//! value read it before the writer's L2 write, hence before bump₂: if its second read sees
//! no bump, its L1 store precedes the writer's L1 write.

use std::{
    hash::Hash,
    sync::atomic::{AtomicU64, Ordering::SeqCst},
};

/// Stripes per cache: 8 KiB of counters.
const STRIPES: usize = 1024;

/// The write counters of one tiered cache.
pub(crate) struct Epochs {
    stripes: Box<[AtomicU64]>,
    /// Moves with every whole-cache event.
    all: AtomicU64,
    hasher: ahash::RandomState,
}

/// The counters as a storer read them for one key, before reading its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch {
    stripe: usize,
    seen: u64,
    all: u64,
}

impl Epochs {
    pub(crate) fn new() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            all: AtomicU64::new(0),
            hasher: ahash::RandomState::new(),
        }
    }

    fn stripe<K: Hash>(&self, key: &K) -> usize {
        self.stripe_of(self.hasher.hash_one(key))
    }

    fn stripe_of(&self, hash: u64) -> usize {
        (hash as usize) % self.stripes.len()
    }

    /// The counters for `key` now.
    pub(crate) fn read<K: Hash>(&self, key: &K) -> Epoch {
        self.read_at(self.stripe(key))
    }

    /// The counters for the key whose hash (by the caller's own hasher) is `hash`.
    pub(crate) fn read_hashed(&self, hash: u64) -> Epoch {
        self.read_at(self.stripe_of(hash))
    }

    fn read_at(&self, stripe: usize) -> Epoch {
        Epoch {
            stripe,
            seen: self.stripes[stripe].load(SeqCst),
            all: self.all.load(SeqCst),
        }
    }

    /// Marks a write of `key`.
    pub(crate) fn bump<K: Hash>(&self, key: &K) {
        self.stripes[self.stripe(key)].fetch_add(1, SeqCst);
    }

    /// Marks a write of the key whose hash (by the caller's own hasher) is `hash`.
    pub(crate) fn bump_hashed(&self, hash: u64) {
        self.stripes[self.stripe_of(hash)].fetch_add(1, SeqCst);
    }

    /// Marks a write of every key.
    pub(crate) fn bump_all(&self) {
        self.all.fetch_add(1, SeqCst);
    }

    /// Whether a write of the key `epoch` was read for may have happened since.
    pub(crate) fn moved(&self, epoch: Epoch) -> bool {
        self.moved_besides(epoch, 0)
    }

    /// [`moved`](Self::moved), not counting the caller's own `bumps` of the key since.
    pub(crate) fn moved_besides(&self, epoch: Epoch, bumps: u64) -> bool {
        self.stripes[epoch.stripe].load(SeqCst) != epoch.seen.wrapping_add(bumps)
            || self.all.load(SeqCst) != epoch.all
    }
}

/// How many of `epochs` (one per key of one write, read together) share each one's stripe:
/// the bumps the write itself makes to that stripe per round.
pub(crate) fn shared_stripes(epochs: &[Epoch]) -> Vec<u64> {
    // Counted once per stripe (a batch of thousands of keys is not compared pair by pair).
    let mut per_stripe = std::collections::HashMap::<usize, u64>::with_capacity(epochs.len());
    for epoch in epochs {
        *per_stripe.entry(epoch.stripe).or_default() += 1;
    }
    epochs
        .iter()
        .map(|epoch| per_stripe[&epoch.stripe])
        .collect()
}

impl Epoch {
    /// Whether this was read before a write of the key that `later` (read for the same key
    /// afterwards) came after.
    pub(crate) fn before(self, later: Epoch) -> bool {
        self.seen < later.seen || self.all < later.all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_moves_its_key_and_only_a_whole_cache_event_moves_every_key() {
        let epochs = Epochs::new();
        let seven = epochs.read(&7_u64);
        // A key in another stripe.
        let other = (0_u64..)
            .find(|key| epochs.stripe(key) != seven.stripe)
            .expect("1024 stripes");
        let before_other = epochs.read(&other);
        assert!(!epochs.moved(seven));
        epochs.bump(&7_u64);
        assert!(epochs.moved(seven));
        assert!(!epochs.moved(before_other));
        let now = epochs.read(&7_u64);
        epochs.bump_all();
        assert!(epochs.moved(now));
        assert!(epochs.moved(before_other));
    }
}
